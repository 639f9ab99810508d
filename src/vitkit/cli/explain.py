"""``vitkit explain SOURCE IMAGES...``: heat maps of what a model looked at, on the original images.

``vitkit explain --mechanism vit|swin|cvt SOURCE [IMAGE]`` draws the study note's mechanisms of that model instead.
Each run writes PNG figures, the numbers (``.npy`` heat maps, ``explanations.json`` / ``mechanism.json``) and one
self-contained HTML page (``index.html``) into ``--output-dir``. Without matplotlib the numbers are still written.
"""

import argparse
import re
import sys
import warnings
from pathlib import Path

from vitkit.cli._args import (
    add_device,
    add_model_name,
    add_threads,
    apply_threads,
    inference_model,
    positive_int,
    resolve_device,
)
from vitkit.errors import VitkitError


def add_arguments(p: argparse.ArgumentParser) -> None:
    from vitkit.explanations import DEFAULT_METHOD, METHODS

    p.add_argument("source", help="a training output_dir, a checkpoint directory, hf-hub:org/name or a model name")
    p.add_argument("inputs", nargs="*", help="image files, folders (searched recursively) or glob patterns")
    methods = "; ".join(f"{k}: {v}" for k, v in METHODS.items())
    p.add_argument(
        "--method",
        default=DEFAULT_METHOD,
        help=f"one method, several separated by commas, or 'all' (default: {DEFAULT_METHOD}, the most faithful "
        f"in every family). {methods}",
    )
    p.add_argument(
        "--class",
        dest="target",
        default=None,
        metavar="NAME|INDEX",
        help="the class to explain, by name or index (default: each image's predicted class)",
    )
    p.add_argument("--output-dir", "-o", default="explanations", help="where figures and numbers go")
    p.add_argument(
        "--mechanism",
        choices=("vit", "swin", "cvt"),
        default=None,
        help="draw the study note's mechanisms of SOURCE (a model of this family) instead, on IMAGE if given",
    )
    p.add_argument(
        "--size",
        default=None,
        metavar="H[xW]",
        help="with --mechanism: draw for this input size instead of the model's own (Swin pads odd sizes)",
    )
    p.add_argument("--batch-size", type=int, default=16, help="images per forward pass (default: 16)")
    p.add_argument(
        "--steps",
        type=positive_int,
        default=16,
        help="integrated-gradients: points on the path from the grey image to the input, each one forward and "
        "backward pass (default: 16)",
    )
    p.add_argument("--no-figures", action="store_true", help="write only the numbers (.npy, JSON)")
    p.add_argument("--progress", choices=("auto", "bar", "log", "none"), default="auto", help="progress display")
    add_device(p)
    add_model_name(p)
    add_threads(p)


def _methods(text: str) -> list[str]:
    from vitkit.explanations import METHODS

    names = list(METHODS) if text.strip() == "all" else [m.strip() for m in text.split(",") if m.strip()]
    if not names:
        raise VitkitError("--method: name at least one method")
    return list(dict.fromkeys(names))


def _stem(index: int, path: str) -> str:
    """A file name for image ``index``: its position (names repeat across folders) and its own name."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(path).stem)[:60] or "image"
    return f"{index:03d}_{name}"


def _figures_available(no_figures: bool) -> str | None:
    """None when figures can be drawn, else why not."""
    if no_figures:
        return "--no-figures"
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        from vitkit.eval.plots import PLOTS_HINT

        return PLOTS_HINT
    return None


def run(args: argparse.Namespace) -> int:
    apply_threads(args.threads)
    if args.batch_size < 1:
        raise VitkitError(f"--batch-size must be >= 1 (got {args.batch_size})")
    if args.mechanism:
        return run_mechanism(args)
    if args.size is not None:
        raise VitkitError("--size applies to --mechanism figures; explanations use each model's own input size")
    if not args.inputs:
        raise VitkitError("give at least one image to explain (or --mechanism FAMILY to draw the model's mechanisms)")
    return run_explain(args)


def _load_model(args: argparse.Namespace, device: str):
    """The reference model (explanations need its gradients and attention maps), as predict reads SOURCE."""
    return inference_model(args.source, reference=True, model_name=args.model).to(device)


def run_explain(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from vitkit.data.images import open_image
    from vitkit.explanations import CLASS_SPECIFIC, check_model, class_index, explain
    from vitkit.explanations.figures import Panel, Section, explanation_figure, write_html
    from vitkit.predict import expand_inputs
    from vitkit.train.progress import Progress
    from vitkit.utils.io import atomic_write_json

    methods = _methods(args.method)
    device = resolve_device(args.device)
    model = _load_model(args, device)
    for m in methods:
        check_model(model, m)
    names = getattr(model, "class_names", None)
    if args.target is not None:
        class_index(args.target, model.config.num_classes, names)  # a bad class fails before any work
        if all(m not in CLASS_SPECIFIC for m in methods):
            warnings.warn(
                f"{', '.join(methods)} does not depend on the class: --class only names the class in the figures",
                stacklevel=1,
            )
    files, missing = expand_inputs(args.inputs)
    failed = [(p.path, p.error) for p in missing]
    images, paths = [], []
    for path in files:
        try:
            images.append(open_image(path))
            paths.append(path)
        except VitkitError as e:
            failed.append((path, str(e).removeprefix(f"{path}: ")))
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    skipped = _figures_available(args.no_figures)

    batches = -(-len(images) // args.batch_size) * len(methods)
    progress = Progress(batches, "explain", mode=args.progress, log_every=1)
    results = {}
    for m in methods:
        results[m] = (
            explain(
                model,
                images,
                method=m,
                target=args.target,
                batch_size=args.batch_size,
                steps=args.steps,
                progress=progress.update,
            )
            if images
            else None
        )
    progress.close()

    records, figures = [], []
    for i, (path, img) in enumerate(zip(paths, images, strict=True)):
        stem = _stem(i, path)
        first = results[methods[0]]
        probs = first.probabilities[i]
        pred = int(probs.argmax())
        top = probs.topk(min(5, probs.numel()))
        record = {
            "path": path,
            "size": [img.size[1], img.size[0]],
            "predicted": {"class": pred, "name": first.name(pred), "probability": float(probs[pred])},
            "top5": [
                {"class": int(c), "name": first.name(int(c)), "probability": float(v)}
                for v, c in zip(top.values, top.indices, strict=True)
            ],
            "explanations": [],
        }
        panels = []
        for m in methods:
            exp = results[m]
            target = int(exp.targets[i])
            heat = exp.on_original(i)
            npy = out / f"{stem}.{m}.npy"
            np.save(npy, heat.numpy().astype(np.float32))
            flat = torch.nan_to_num(heat, nan=0.0).flatten()
            empty = bool(flat.max() <= 0)  # no position has positive evidence for the class (Grad-CAM's ReLU)
            record["explanations"].append(
                {
                    "method": m,
                    "target": {"class": target, "name": exp.name(target), "probability": float(probs[target])},
                    "heatmap": npy.name,
                    "peak": None if empty else list(divmod(int(flat.argmax()), heat.shape[1])),
                }
            )
            subtitle = f"explains: {exp.name(target)} ({float(probs[target]):.1%})"
            if empty:
                subtitle += "\nno positive evidence: all 0"
            panels.append(Panel(m, heat, subtitle))
        if skipped is None:
            title = f"{Path(path).name}: predicted {first.name(pred)} ({float(probs[pred]):.1%})"
            png = explanation_figure(img, panels, first.spec, title, out / f"{stem}.png")
            record["figure"] = f"{stem}.png"
            figures.append((f"{path}: predicted {first.name(pred)} ({float(probs[pred]):.1%})", png))
        records.append(record)
        print(f"{path}: predicted {first.name(pred)} {float(probs[pred]):.1%}")

    summary = {
        "source": args.source,
        "methods": methods,
        "class": args.target,
        "images": records,
        "failed": [{"path": p, "error": e} for p, e in failed],
    }
    atomic_write_json(out / "explanations.json", summary)
    if skipped is None and records:
        text = "; ".join(f"{m}: {d}" for m, d in _method_docs(methods).items())
        rows = [["image", "predicted", "probability", *(f"{m} explains" for m in methods)]]
        for r in records:
            predicted = r["predicted"]
            explained = [e["target"]["name"] for e in r["explanations"]]
            rows.append([Path(r["path"]).name, predicted["name"], f"{predicted['probability']:.1%}", *explained])
        section = Section("heat maps on the original images", text, figures, [("predictions", rows)])
        write_html(out / "index.html", f"vitkit explain: {args.source}", [section])
        print(f"figures, heat maps (.npy) and index.html in {out}")
    else:
        if skipped is not None:
            print(f"vitkit explain: figures skipped ({skipped}); heat maps (.npy) and explanations.json in {out}")
    for path, error in failed:
        print(f"vitkit explain: error: {path}: {error}", file=sys.stderr)
    if failed:
        print(f"vitkit explain: {len(failed)} of {len(failed) + len(records)} inputs failed", file=sys.stderr)
    return 1 if failed else 0


def _method_docs(methods: list[str]) -> dict[str, str]:
    from vitkit.explanations import METHODS

    return {m: METHODS[m] for m in methods}


def _parse_size(text: str | None, default: tuple[int, int]) -> tuple[int, int]:
    if text is None:
        return default
    m = re.fullmatch(r"\s*(\d+)\s*(?:[xX*,]\s*(\d+))?\s*", text)
    if not m:
        raise VitkitError(f"--size: expected H or HxW in pixels, got {text!r}")
    h = int(m.group(1))
    w = int(m.group(2) or h)
    if not (1 <= h <= 4096 and 1 <= w <= 4096):
        raise VitkitError(f"--size: {h}x{w} is outside 1-4096 pixels")
    return h, w


def run_mechanism(args: argparse.Namespace) -> int:
    import torch

    from vitkit.data import SAMPLE_DIR, load_idx
    from vitkit.data.images import array_to_image, open_image
    from vitkit.data.transforms import DataSpec, eval_image
    from vitkit.explanations.figures import write_html
    from vitkit.explanations.mechanisms import mechanism_numbers, mechanism_sections
    from vitkit.models.config import to_2tuple
    from vitkit.utils.io import atomic_write_json

    model = _load_model(args, "cpu")
    family = getattr(model, "family", None)
    if family != args.mechanism:
        raise VitkitError(f"--mechanism {args.mechanism}: {args.source} is a {family} model")
    if len(args.inputs) > 1:
        raise VitkitError("--mechanism draws on one image; give one IMAGE or none (a Fashion-MNIST sample image)")
    size = _parse_size(args.size, to_2tuple(model.config.img_size))
    if family == "vit" and (size[0] % model.config.patch_size or size[1] % model.config.patch_size):
        raise VitkitError(f"--size: ViT needs sides that are multiples of its patch {model.config.patch_size}")
    spec = DataSpec.from_model(model)
    spec = DataSpec(size, spec.in_chans, spec.mean, spec.std, spec.interpolation, 1.0)
    img = (
        open_image(args.inputs[0])
        if args.inputs
        else array_to_image(load_idx("fashion-mnist", SAMPLE_DIR, "test").images[0])
    )
    image = eval_image(img, spec, normalize=False)  # (C, H, W) in [0, 1], as the model sees it
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        numbers = mechanism_numbers(model, size)
    atomic_write_json(out / "mechanism.json", numbers)
    skipped = _figures_available(args.no_figures)
    if skipped is not None:
        print(f"vitkit explain: figures skipped ({skipped}); the numbers are in {out / 'mechanism.json'}")
        return 0
    with torch.no_grad():
        sections = mechanism_sections(model, image, out)
    write_html(
        out / "index.html",
        f"vitkit: the {family} mechanisms of {args.source} at {size[0]}x{size[1]}",
        sections,
    )
    print(f"{len(sections)} sections of figures in {out / 'index.html'} (PNGs beside it, numbers in mechanism.json)")
    return 0


__all__ = ["add_arguments", "run"]
