"""How faithful are vitkit's explanations? Deletion / insertion against a random order, and the pointing game.

Two parts, per family (ViT, Swin, CvT) and method (rollout, grad-rollout, gradcam, integrated-gradients):

* ``fashion``: the three 28 px models trained on Fashion-MNIST (``vitkit.train``; a run already in ``--runs`` is
  reused). On the first ``--images`` test images, each explanation orders 4x4-pixel squares (``--block``) from most
  to least relevant; deletion sets them to the normalisation mean one square per step, insertion puts them back on a
  blurred copy (Petsiuk et al., 2018). The predicted class's probability after every step gives two curves; their
  areas (AUC) are compared with the same curves for a random order of the squares (deletion: lower is better,
  insertion: higher). ``--pixel-level`` adds the same at single pixels.
* ``pointing``: a synthetic task whose answer is known (``vitkit.explanations.faithfulness``): noise, one of four
  5x5 patterns at a random place (the class) and a filled 4x4 distractor elsewhere. A small model of each family
  (``SMALL``) is trained on it here; a hit is a heat map whose peak falls on the pattern (1 px tolerance). Chance (a
  peak anywhere) and the brightest 5x5 spot of the image are the baselines. Deletion / insertion AUCs on the same
  images are reported too.

Results: ``explain_faithfulness.json`` (machine, settings, every number) and ``.md`` (tables) in ``--out``.

    python benchmarks/explain_faithfulness.py --data fashion-mnist:../shared/data/fashion-mnist --threads 2
    python benchmarks/explain_faithfulness.py --tiny --families vit --out /tmp/x     # seconds: the test's version
"""

import argparse
import datetime
import json
import math
import platform
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

FAMILIES = {"vit": "vit_nano_patch4_28", "swin": "swin_nano_patch2_window7_28", "cvt": "cvt_nano_28"}
SMALL = {  # the pointing task: small models of each family (the task needs less than Fashion-MNIST)
    "vit": dict(embed_dim=64, depth=4, num_heads=4),
    "swin": dict(embed_dim=32, depths=(2, 2), num_heads=(2, 4)),
    "cvt": dict(embed_dims=(16, 32, 64), depths=(1, 1, 2), num_heads=(1, 2, 4)),
}
TINY = {  # --tiny: models a CPU trains on the pointing task in seconds
    "vit": dict(embed_dim=32, depth=2, num_heads=2),
    "swin": dict(embed_dim=16, depths=(2, 2), num_heads=(2, 2)),
    "cvt": dict(embed_dims=(16, 32, 32), depths=(1, 1, 1), num_heads=(1, 2, 2)),
}


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--parts", default="fashion,pointing", help="fashion, pointing or both (comma-separated)")
    p.add_argument("--families", default="vit,swin,cvt")
    p.add_argument("--methods", default="rollout,grad-rollout,gradcam,integrated-gradients")
    p.add_argument("--data", default="fashion-mnist:../shared/data/fashion-mnist", help="Fashion-MNIST source")
    p.add_argument("--runs", default="runs/explain", help="trained models: <runs>/<model name> (trained if absent)")
    p.add_argument("--train-epochs", type=int, default=3, help="Fashion-MNIST epochs for a model trained here")
    p.add_argument("--images", type=int, default=500, help="Fashion-MNIST test images for deletion / insertion")
    p.add_argument("--block", type=int, default=4, help="side of the squares deleted / inserted per step (px)")
    p.add_argument("--pixel-level", action="store_true", help="also deletion / insertion one pixel at a time")
    p.add_argument("--pointing-train", type=int, default=12000, help="synthetic training images")
    p.add_argument("--pointing-test", type=int, default=500, help="synthetic test images")
    p.add_argument("--pointing-epochs", type=int, default=6)
    p.add_argument("--pointing-classes", type=int, default=4, choices=(2, 3, 4), help="patterns that are classes")
    p.add_argument("--lr", type=float, default=2e-3, help="AdamW learning rate on the pointing task")
    p.add_argument("--batch-size", type=int, default=128, help="batch size on the pointing task")
    p.add_argument("--no-distractor", action="store_true", help="pointing task without the distractor")
    p.add_argument("--tiny", action="store_true", help="tiny models and data: the smoke test's seconds-long run")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    p.add_argument("--out", default="benchmarks/results")
    p.add_argument(
        "--merge",
        nargs="+",
        metavar="JSON",
        help="combine earlier runs' explain_faithfulness.json (e.g. one process per family) into --out instead",
    )
    args = p.parse_args(argv)
    if args.tiny:
        args.parts = "pointing"
        args.pointing_train, args.pointing_test, args.pointing_epochs, args.pointing_classes = 2000, 64, 5, 2
        args.no_distractor, args.lr, args.batch_size, args.block = True, 3e-3, 64, 7
    return args


def machine() -> dict:
    import os

    from vitkit.bench.machine import cpu_name, load_avg

    return {
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "load_avg": load_avg(),
    }


def summarise(curves_by_order: dict[str, dict[str, torch.Tensor]]) -> dict[str, dict]:
    """Mean AUC (and its standard error) per order, and how often an order beats the random one image by image."""
    from vitkit.explanations.faithfulness import auc

    out = {}
    rnd = {k: auc(v) for k, v in curves_by_order["random"].items()}
    for name, c in curves_by_order.items():
        row = {}
        for kind, curve in c.items():
            a = auc(curve)
            row[f"{kind}_auc"] = float(a.mean())
            row[f"{kind}_auc_se"] = float(a.std() / math.sqrt(len(a))) if len(a) > 1 else 0.0
            if name != "random":  # deletion: lower is better; insertion: higher
                better = a < rnd[kind] if kind == "deletion" else a > rnd[kind]
                row[f"{kind}_beats_random"] = float(better.float().mean())
        out[name] = row
    return out


def deletion_insertion(model, x, heatmaps: dict, targets, block: int, seed: int, steps: int | None = None) -> dict:
    from vitkit.explanations import faithfulness as fa

    g = torch.Generator().manual_seed(seed)
    units = fa.num_units(tuple(x.shape[-2:]), block)
    orders = {"random": fa.random_order(x.shape[0], units, g)}
    orders |= {m: fa.relevance_order(h, block, g) for m, h in heatmaps.items()}
    return summarise({n: fa.curves(model, x, o, targets, block=block, steps=steps) for n, o in orders.items()})


def explain_all(model, x, methods, targets=None) -> tuple[dict, dict]:
    """Heat maps per method and the seconds each took per image."""
    from vitkit.explanations import explain

    maps, seconds = {}, {}
    for m in methods:
        t = time.perf_counter()
        maps[m] = explain(model, x, method=m, target=targets, batch_size=64).heatmaps
        seconds[m] = (time.perf_counter() - t) / x.shape[0]
    return maps, seconds


# --- part 1: Fashion-MNIST ---------------------------------------------------------------------------------------
def fashion_model(family: str, args):
    from vitkit.hub import from_pretrained

    name = FAMILIES[family]
    run = Path(args.runs) / name
    if not any((run / sub).is_dir() for sub in ("final", "best")):
        from vitkit.train import TrainConfig, train

        print(f"training {name} on {args.data} for {args.train_epochs} epochs -> {run}", flush=True)
        cfg = TrainConfig(
            model=name,
            data=args.data,
            val_fraction=0.1,
            epochs=args.train_epochs,
            output_dir=str(run),
            resume="auto",
            progress="log",
            log_every=100,
            tensorboard=False,
            num_workers=0,
            seed=args.seed,
        )
        train(cfg)
    return from_pretrained(run).eval(), str(run)


def training_of(run: Path) -> dict:
    """How a run was trained: epochs asked for and done, warm-up, its last validation accuracy."""
    out = {}
    cfg = run / "train_config.json"
    if cfg.is_file():
        c = json.loads(cfg.read_text())
        out = {k: c.get(k) for k in ("epochs", "warmup_epochs", "lr", "batch_size", "val_fraction", "data")}
    metrics = run / "metrics.jsonl"
    if metrics.is_file():
        from vitkit.eval.plots import read_jsonl

        evals = [r for r in read_jsonl(metrics) if "val_acc" in r]
        if evals:
            out["epochs_done"] = evals[-1].get("epoch")
            out["val_acc"] = evals[-1]["val_acc"]
    return out


def fashion_part(args, families, methods) -> dict:
    from vitkit.data import build_dataset
    from vitkit.data.transforms import DataSpec, array_eval_batch

    test = build_dataset(args.data, "test")
    n = min(args.images, len(test))
    out = {"data": args.data, "images": n, "block": args.block, "families": {}}
    for family in families:
        model, run = fashion_model(family, args)
        x = array_eval_batch(test.images[:n], DataSpec.from_model(model))
        labels = torch.from_numpy(test.targets[:n])
        with torch.no_grad():
            pred = model(x).argmax(1)
        maps, seconds = explain_all(model, x, methods)
        t = time.perf_counter()
        row = {
            "model": FAMILIES[family],
            "run": run,
            "trained": training_of(Path(run)),
            "accuracy": float((pred == labels).float().mean()),
            "explain_seconds_per_image": seconds,
            "blocks": deletion_insertion(model, x, maps, pred, args.block, args.seed),
        }
        if args.pixel_level:
            row["pixels"] = deletion_insertion(model, x, maps, pred, 1, args.seed, steps=28)  # 28 pixels a step
        row["curves_seconds"] = time.perf_counter() - t
        out["families"][family] = row
        print(json.dumps({family: row["blocks"]}, indent=1), flush=True)
    return out


# --- part 2: the pointing game -----------------------------------------------------------------------------------
def synthetic_tensors(data):
    x = torch.from_numpy(data.images).float().div(255).unsqueeze(1)
    return (x - MEAN) / STD, torch.from_numpy(data.labels)


MEAN, STD = 0.25, 0.3  # of the synthetic images: noise in [0, 100] and strokes at 255


def train_pointing_model(family: str, train_x, train_y, args):
    """AdamW with a short warm-up (a tenth of the steps) then cosine: the same recipe for every family."""
    from vitkit.factory import create_model

    torch.manual_seed(args.seed)
    extra = TINY[family] if args.tiny else SMALL[family]
    classes = int(train_y.max()) + 1
    model = create_model(FAMILIES[family], num_classes=classes, mean=(MEAN,), std=(STD,), **extra)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.05)
    bs = args.batch_size
    steps = args.pointing_epochs * math.ceil(len(train_x) / bs)
    warmup = max(1, steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
    )
    g = torch.Generator().manual_seed(args.seed)
    model.train()
    for _ in range(args.pointing_epochs):
        order = torch.randperm(len(train_x), generator=g)
        for i in range(0, len(order), bs):
            b = order[i : i + bs]
            loss = F.cross_entropy(model(train_x[b]), train_y[b])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return model.eval()


def brightness_peaks(x: torch.Tensor) -> torch.Tensor:
    """A baseline that knows nothing of the model: the brightest 5x5 mean of the image."""
    return F.avg_pool2d(x, 5, stride=1, padding=2, count_include_pad=False)[:, 0]


def pointing_part(args, families, methods) -> dict:
    from vitkit.explanations import faithfulness as fa

    distractor = not args.no_distractor
    k = args.pointing_classes
    train = fa.synthetic_pointing_data(args.pointing_train, 28, seed=args.seed, distractor=distractor, num_classes=k)
    test = fa.synthetic_pointing_data(args.pointing_test, 28, seed=args.seed + 1, distractor=distractor, num_classes=k)
    train_x, train_y = synthetic_tensors(train)
    x, y = synthetic_tensors(test)
    out = {
        "train_images": len(train_y),
        "test_images": len(y),
        "epochs": args.pointing_epochs,
        "distractor": distractor,
        "classes": test.classes,
        "chance": fa.chance_hit_rate(test.boxes, (28, 28)),
        "brightness_baseline": float(fa.pointing_hits(brightness_peaks(x), test.boxes).float().mean()),
        "families": {},
    }
    for family in families:
        t = time.perf_counter()
        model = train_pointing_model(family, train_x, train_y, args)
        train_s = time.perf_counter() - t
        with torch.no_grad():
            pred = model(x).argmax(1)
        correct = pred == y
        maps, seconds = explain_all(model, x, methods, targets=y)
        hits = {m: fa.pointing_hits(h, test.boxes) for m, h in maps.items()}
        out["families"][family] = {
            "model": FAMILIES[family] + (" (tiny)" if args.tiny else " (small)"),
            "overrides": TINY[family] if args.tiny else SMALL[family],
            "train_seconds": train_s,
            "accuracy": float(correct.float().mean()),
            "hit_rate": {m: float(h.float().mean()) for m, h in hits.items()},
            "hit_rate_correct": {
                m: float(h[correct].float().mean()) if correct.any() else None for m, h in hits.items()
            },
            "explain_seconds_per_image": seconds,
            "blocks": deletion_insertion(model, x, maps, y, args.block, args.seed),
        }
        print(json.dumps({family: out["families"][family]["hit_rate"]}), flush=True)
    return out


# --- report --------------------------------------------------------------------------------------------------
def markdown(result: dict) -> str:
    lines = [f"### Explanation faithfulness ({result['date']})", ""]
    m = result["machine"]
    lines += [
        f"Machine: {m['cpu']}, {m['cpu_count']} cores, {m['threads']} threads per process, torch {m['torch']}.",
        "",
    ]
    for r in result.get("merged_from", [result]):
        lines.append(f"- `{r['command']}` (load {r['machine']['load_avg']} before, {r['load_after']} after)")
    lines.append("")
    if "fashion" in result:
        f = result["fashion"]
        lines += [
            f"Fashion-MNIST, first {f['images']} test images, {f['block']}x{f['block']} px squares per step; "
            "AUC of the predicted class's probability (deletion: lower is better; insertion: higher). "
            "'beats random' = share of images whose curve is better than the random order's.",
            "",
        ]
        lines += [
            "| family | model (test acc., ep.) | order | deletion AUC | beats random | insertion AUC | beats random |",
            "|---|---|---|---:|---:|---:|---:|",
        ]
        for fam, row in f["families"].items():
            for order, r in row["blocks"].items():
                deletion = f"{r['deletion_auc']:.3f} ± {r['deletion_auc_se']:.3f}"
                insertion = f"{r['insertion_auc']:.3f} ± {r['insertion_auc_se']:.3f}"
                epochs = row.get("trained", {}).get("epochs_done")
                trained = f", {epochs:.3g} ep." if isinstance(epochs, (int, float)) else ""
                lines.append(
                    f"| {fam} | {row['model']} ({row['accuracy']:.1%}{trained}) | {order} | {deletion} | "
                    f"{_pct(r.get('deletion_beats_random'))} | {insertion} | {_pct(r.get('insertion_beats_random'))} |"
                )
        if any("pixels" in row for row in f["families"].values()):
            lines += [
                "",
                "Single pixels in the map's order (28 steps of 28 pixels):",
                "",
                "| family | order | deletion AUC | insertion AUC |",
                "|---|---|---:|---:|",
            ]
            for fam, row in f["families"].items():
                for order, r in row.get("pixels", {}).items():
                    lines.append(f"| {fam} | {order} | {r['deletion_auc']:.3f} | {r['insertion_auc']:.3f} |")
        lines.append("")
    if "pointing" in result:
        p = result["pointing"]
        lines += [
            f"Pointing game: {p['test_images']} synthetic 28 px test images ({', '.join(p['classes'])} "
            f"pattern in noise{', plus a distractor' if p['distractor'] else ''}); models trained on "
            f"{p['train_images']} images for {p['epochs']} epochs. Hit = the map's peak on the pattern (1 px "
            f"tolerance). Chance {p['chance']:.1%}; brightest 5x5 spot of the image "
            f"{p['brightness_baseline']:.1%}.",
            "",
        ]
        methods = list(next(iter(p["families"].values()))["hit_rate"])
        lines += [
            "| family | model | test acc. | "
            + " | ".join(f"{m} hits (correct only)" for m in methods)
            + " | "
            + " | ".join(f"{m} del / ins AUC" for m in methods)
            + " | random del / ins AUC |",
            "|---|---|---:|" + "---:|" * (2 * len(methods) + 1),
        ]
        for fam, row in p["families"].items():
            hits = " | ".join(f"{row['hit_rate'][m]:.1%} ({_pct(row['hit_rate_correct'][m])})" for m in methods)
            b = row["blocks"]
            aucs = " | ".join(f"{b[m]['deletion_auc']:.3f} / {b[m]['insertion_auc']:.3f}" for m in methods)
            rnd = f"{b['random']['deletion_auc']:.3f} / {b['random']['insertion_auc']:.3f}"
            lines.append(f"| {fam} | {row['model']} | {row['accuracy']:.1%} | {hits} | {aucs} | {rnd} |")
        lines.append("")
    return "\n".join(lines)


def _pct(v) -> str:
    return "-" if v is None else f"{v:.1%}"


def merge(paths: list[str]) -> dict:
    """One result from several runs: the first run's header, every run's families (later runs win)."""
    runs = [json.loads(Path(p).read_text()) for p in paths]
    result = dict(runs[0])
    result["merged_from"] = [
        {"command": r["command"], "machine": r["machine"], "load_after": r["load_after"]} for r in runs
    ]
    for part in ("fashion", "pointing"):
        found = [r[part] for r in runs if part in r]
        if found:
            result[part] = dict(found[0])
            result[part]["families"] = {k: v for f in found for k, v in f["families"].items()}
    result["seconds"] = sum(r.get("seconds", 0.0) for r in runs)
    return result


def write(result: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "explain_faithfulness.json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    text = markdown(result)
    (out / "explain_faithfulness.md").write_text(text + "\n", encoding="utf-8")
    print(text)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.merge:
        write(merge(args.merge), Path(args.out))
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    families = [f.strip() for f in args.families.split(",") if f.strip()]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    parts = {p.strip() for p in args.parts.split(",")}
    bad = sorted(set(families) - set(FAMILIES)) + sorted(parts - {"fashion", "pointing"})
    if bad:
        print(f"explain_faithfulness: unknown family / part {', '.join(bad)}", file=sys.stderr)
        return 2
    result = {
        "date": datetime.date.today().isoformat(),
        "command": "python benchmarks/explain_faithfulness.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine(),
        "settings": {k: v for k, v in vars(args).items()},
    }
    t = time.perf_counter()
    if "pointing" in parts:
        result["pointing"] = pointing_part(args, families, methods)
    if "fashion" in parts:
        result["fashion"] = fashion_part(args, families, methods)
    result["seconds"] = time.perf_counter() - t
    from vitkit.bench.machine import load_avg

    result["load_after"] = load_avg()
    write(result, Path(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
