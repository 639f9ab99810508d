"""`vitkit train` against a plain PyTorch training loop over the same architecture in vitkit, transformers and timm.

    PYTHONPATH=src python benchmarks/train_loop.py --data fashion-mnist:../shared/data/fashion-mnist \
        --case fashion --threads 2 --rounds 3 --out benchmarks/results/train-loop

Cases (the settings are `vitkit train`'s recipes, see ``vitkit.train.recipe``):

* ``fashion``: the Fashion-MNIST recipe from scratch: ``cvt_nano_28``, batch 128, 28 px, one channel (no peer
  builds this model: transformers' CvT needs more than one block in a stage, timm has no CvT);
* ``fashion-vit``: the same recipe on ``vit_tiny_patch4_28``, which transformers and timm build;
* ``finetune``: a 224-px fine-tune: ``vit_small_patch16_224`` from a checkpoint, batch 32, the 28-px images resized to
  224 px (``--model`` picks another architecture, e.g. ``swin_tiny_patch4_window7_224``).

Every contender trains on the same images (the first ``batch x (warmup + steps)`` of the training split after the
recipe's 10 % hold-out) with the same batch, learning rate, weight decay, label smoothing, flips and gradient clipping.
`vitkit train` is timed from inside, by a callback on its optimizer steps, from the end of step ``--warmup`` to the
end of the last step: start-up, validation and checkpoints are out; everything a step does (batch assembly and
augmentation, forward, loss, backward, clipping, AdamW, lr schedule, logging) is in. The plain loop is what a short
script writes: index a batch of the in-memory uint8 images, scale, resize, normalise and flip it as tensors, forward,
``F.cross_entropy(label_smoothing=...)``, backward, ``clip_grad_norm_``, ``torch.optim.AdamW`` (PyTorch's default
implementation, weight decay off for biases and norms), a warm-up + cosine ``LambdaLR``; timed the same way. It runs
over vitkit's own reference model too, which separates the trainer's cost from the model's. Every run is a fresh
process, as each would be in use: `vitkit train` with the allocator setting the ``vitkit`` command gives itself
(``VITKIT_MALLOC``, default ``tuned``), the plain loops with glibc's defaults (``--plain-malloc`` changes that).
Contenders alternate, their order rotating every round; the ratio is vitkit train's median images/s over the fastest
plain loop's over a peer model (transformers or timm) in the same run.
"""

import argparse
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from vitkit.bench.machine import cpu_name, load_avg, machine_info
from vitkit.bench.timing import percentile
from vitkit.convert import HF_CONFIGS, to_timm
from vitkit.data import build_dataset
from vitkit.engine.malloc import PRESETS, set_malloc
from vitkit.errors import VitkitError
from vitkit.factory import create_model
from vitkit.hub import save_pretrained
from vitkit.settings import malloc_preset
from vitkit.train import TrainConfig, train
from vitkit.train.recipe import FINE_TUNE, SMALL_IMAGES
from vitkit.utils.io import atomic_write_json, atomic_write_text

CASES = {
    "fashion": {"model": "cvt_nano_28", "img_size": 28, "recipe": SMALL_IMAGES, "pretrained": False},
    "fashion-vit": {"model": "vit_tiny_patch4_28", "img_size": 28, "recipe": SMALL_IMAGES, "pretrained": False},
    "finetune": {"model": "vit_small_patch16_224", "img_size": 224, "recipe": FINE_TUNE, "pretrained": True},
}
RESULT = "train_loop result: "
VAL_FRACTION = 0.1  # the recipe's hold-out for data sets without a validation split of their own


class StepClock:
    """perf_counter at the end of every optimizer step (a `vitkit train` callback, or called by the plain loop)."""

    def __init__(self) -> None:
        self.ends: list[float] = []

    def __call__(self, event: str = "step", info: Any = None) -> None:
        if event == "step":
            self.ends.append(time.perf_counter())

    def images_per_s(self, batch: int, warmup: int) -> float:
        timed = self.ends[warmup - 1 :]
        return batch * (len(timed) - 1) / (timed[-1] - timed[0])


def recipe_settings(case: dict, batch: int) -> dict[str, Any]:
    r = case["recipe"]
    return {
        "batch": batch,
        "lr": r["lr"],
        "weight_decay": r.get("weight_decay", TrainConfig.__dataclass_fields__["weight_decay"].default),
        "label_smoothing": r["label_smoothing"],
        "drop_path_rate": r["drop_path_rate"],
        "clip_grad": 1.0,
        "warmup_fraction": r["warmup_fraction"],
    }


def run_vitkit_train(case: dict, data: str, pretrained: str, s: dict, steps: int, warmup: int, amp: str) -> float:
    clock = StepClock()
    with tempfile.TemporaryDirectory(prefix="vitkit-train-bench-") as out:
        skip = ("batch_size", "crop_padding", "crop_min_epochs")  # crops stay off in runs this short
        settings = {k: v for k, v in case["recipe"].items() if k in TrainConfig.__dataclass_fields__ and k not in skip}
        settings |= {"model": "" if pretrained else case["model"], "pretrained": pretrained}
        if not pretrained:
            settings["img_size"] = case["img_size"]
        cfg = TrainConfig(
            **settings,
            data=data,
            val_fraction=VAL_FRACTION,
            max_train_samples=s["batch"] * (steps + warmup),
            max_val_samples=s["batch"],
            batch_size=s["batch"],
            epochs=1,
            amp=amp,
            clip_grad=s["clip_grad"],
            output_dir=out,
            overwrite_output_dir=True,
            progress="none",
            tensorboard=False,
        )
        train(cfg, callbacks=[clock])
    return clock.images_per_s(s["batch"], warmup)


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    rest = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def run_plain_loop(model, forward, images, labels, case: dict, s: dict, steps: int, warmup: int, amp: str) -> float:
    """The plain loop: tensors in memory, one resize + normalise + flip per batch, AdamW as PyTorch ships it."""
    total = steps + warmup
    opt = torch.optim.AdamW(param_groups(model, s["weight_decay"]), lr=s["lr"])
    warm = max(1, round(s["warmup_fraction"] * total))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: (i + 1) / warm if i < warm else 0.5 * (1 + math.cos(math.pi * (i - warm) / (total - warm)))
    )
    size, batch = case["img_size"], s["batch"]
    perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    clock = StepClock()
    model.train()
    for i in range(total):
        idx = perm[i * batch : (i + 1) * batch]
        x = images[idx].float().div_(255).unsqueeze(1)  # (B, 1, 28, 28)
        if x.shape[-1] != size:
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        x = (x - 0.5) / 0.5
        flip = torch.rand(batch) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp == "bf16"):
            logits = forward(model, x)
        loss = F.cross_entropy(logits.float(), labels[idx], label_smoothing=s["label_smoothing"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), s["clip_grad"])
        opt.step()
        sched.step()
        loss.item()
        clock()
    return clock.images_per_s(batch, warmup)


class LeftOut(Exception):
    """This contender cannot run here (the library is missing or cannot build the architecture)."""


def plain_model(kind: str, name: str, classes: int, drop_path: float) -> tuple[torch.nn.Module, Any]:
    """(model, forward) for the plain loop: the architecture ``name`` (one input channel, ``classes`` classes) in
    vitkit, transformers or timm."""
    vk = create_model(name, num_classes=classes, in_chans=1, drop_path_rate=drop_path)
    if kind == "vitkit":
        return vk, lambda m, x: m(x)
    try:
        if kind == "transformers":
            import transformers

            fields = HF_CONFIGS[vk.config.family](vk.config)
            if vk.config.family == "cvt":
                fields["drop_path_rate"] = [0.0] * (len(fields["depth"]) - 1) + [drop_path]
            elif vk.config.family == "swin":
                fields["drop_path_rate"] = drop_path  # transformers' ViT has no stochastic depth
            hf_cfg = transformers.AutoConfig.for_model(fields.pop("model_type"), **fields)
            hf = transformers.AutoModelForImageClassification.from_config(hf_cfg)
            return hf, lambda m, x: m(pixel_values=x).logits
        import timm

        files, _ = to_timm(vk.config, {}, None, name)
        conf = files["config.json"]
        return timm.create_model(conf["architecture"], **conf["model_args"] | {"drop_path_rate": drop_path}), (
            lambda m, x: m(x)
        )
    except VitkitError as e:
        raise LeftOut(str(e)) from e
    except Exception as e:  # not installed, or timm without a matching torchvision
        raise LeftOut(f"{kind} is not importable ({type(e).__name__}: {e})") from e


CONTENDERS = {  # name -> the library whose model the plain loop trains (None: `vitkit train` itself)
    "vitkit train": None,
    "plain loop, vitkit model": "vitkit",
    "plain loop, transformers": "transformers",
    "plain loop, timm": "timm",
}


def run_worker(a: argparse.Namespace, case: dict, s: dict) -> float:
    """One contender, once, in this (fresh) process."""
    kind = CONTENDERS[a.worker]
    if kind is None:
        set_malloc(malloc_preset())  # what the `vitkit` command does to its own process
        return run_vitkit_train(case, a.data, a.pretrained_dir, s, a.steps, a.warmup, a.amp)
    set_malloc(a.plain_malloc)
    ds = build_dataset(a.data, "train", val_fraction=VAL_FRACTION, seed=0)
    n = s["batch"] * (a.steps + a.warmup)
    if len(ds) < n or ds.images.ndim != 3:
        raise SystemExit(f"{a.data}: {n} grey training images needed, found {len(ds)} of shape {ds.images.shape[1:]}")
    images, labels = torch.from_numpy(ds.images[:n]), torch.from_numpy(ds.targets[:n]).long()
    torch.manual_seed(0)
    model, forward = plain_model(kind, case["model"], len(ds.classes), s["drop_path_rate"])
    return run_plain_loop(model, forward, images, labels, case, s, a.steps, a.warmup, a.amp)


def run_in_subprocess(argv: list[str], name: str, pretrained: str) -> dict[str, Any]:
    cmd = [sys.executable, __file__, *argv, "--worker", name, "--pretrained-dir", pretrained]
    done = subprocess.run(cmd, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT)]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"{name} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][len(RESULT) :])


def summarise(rates: dict[str, list[float]]) -> dict[str, Any]:
    med = {k: statistics.median(v) for k, v in rates.items()}
    peers = [k for k in rates if "transformers" in k or "timm" in k]
    out: dict[str, Any] = {"median_img_s": med}
    if "vitkit train" not in rates:
        return out
    if peers:
        best = max(peers, key=med.get)
        rounds = len(rates["vitkit train"])
        per_round = [rates["vitkit train"][r] / max(rates[p][r] for p in peers) for r in range(rounds)]
        out |= {"fastest_peer_loop": best, "ratio": med["vitkit train"] / med[best], "per_round_ratio": per_round}
    if "plain loop, vitkit model" in med:
        out["ratio_vs_plain_loop_same_model"] = med["vitkit train"] / med["plain loop, vitkit model"]
    return out


def table(result: dict) -> str:
    s = result["summary"]
    lines = [
        f"`vitkit train` vs plain loops, case {result['case']} ({result['model']}, batch {result['batch']}, "
        f"amp {result['amp']}), {result['machine']['cpu']}, {result['threads']} threads, torch "
        f"{result['machine']['torch']}, {result['rounds']} rounds of {result['steps']} steps",
        "",
        "| contender | img/s (median) | per round | min-max |",
        "|---|---:|---|---:|",
    ]
    for k, v in result["images_per_s"].items():
        lines.append(
            f"| {k} | {s['median_img_s'][k]:.1f} | {', '.join(f'{x:.1f}' for x in v)} | "
            f"{percentile(v, 0):.1f}-{percentile(v, 1):.1f} |"
        )
    if "ratio" in s:
        lines += [
            "",
            f"vitkit train / fastest plain loop over a peer model ({s['fastest_peer_loop']}): **{s['ratio']:.3f}x** "
            f"(per round {min(s['per_round_ratio']):.3f}-{max(s['per_round_ratio']):.3f}x)",
        ]
    if "ratio_vs_plain_loop_same_model" in s:
        lines.append(f"vitkit train / plain loop over vitkit's model: {s['ratio_vs_plain_loop_same_model']:.3f}x")
    lines += [f"left out: {k} ({why})" for k, why in result["left_out"].items()]
    lines.append(f"\nload average before -> after: {result['load_before']} -> {result['load_after']}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="sample", help="a data source, e.g. fashion-mnist:DIR (default: the sample)")
    p.add_argument("--case", choices=sorted(CASES), default="fashion")
    p.add_argument("--model", help="another architecture for the case (one input channel is used)")
    p.add_argument("--batch-size", type=int, help="default: the recipe's")
    p.add_argument("--steps", type=int, default=20, help="timed optimizer steps per contender and round")
    p.add_argument("--warmup", type=int, default=3, help="steps before the timing starts")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--amp", choices=["none", "bf16"], default="none")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--only", help="run the contenders whose name contains one of these comma-separated words")
    p.add_argument(
        "--plain-malloc",
        choices=sorted(PRESETS),
        default="default",
        help="glibc malloc preset of the plain loops' processes (default: untouched, as a plain script runs; "
        "`vitkit train` applies VITKIT_MALLOC, default tuned, as the vitkit command does)",
    )
    p.add_argument("--out", help="directory for the JSON + Markdown result")
    p.add_argument("--worker", choices=list(CONTENDERS), help=argparse.SUPPRESS)
    p.add_argument("--pretrained-dir", default="", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    case = dict(CASES[a.case])
    if a.model:
        case["model"] = a.model
    s = recipe_settings(case, a.batch_size or case["recipe"]["batch_size"])
    if a.worker:  # one contender, once: every run in a fresh process, so no run inherits another's allocator state
        try:
            print(RESULT + json.dumps({"img_s": run_worker(a, case, s)}))
        except LeftOut as e:
            print(RESULT + json.dumps({"left_out": str(e)}))
        return 0
    words = [w.strip() for w in (a.only or "").split(",") if w.strip()]
    names = [k for k in CONTENDERS if not words or any(w in k for w in words)]
    rates: dict[str, list[float]] = {k: [] for k in names}
    left_out: dict[str, str] = {}
    before = load_avg()
    with tempfile.TemporaryDirectory(prefix="vitkit-train-bench-ckpt-") as ckpt:
        pretrained = ""
        if case["pretrained"]:  # a checkpoint to fine-tune from (random weights: speed does not depend on them)
            save_pretrained(create_model(case["model"]), ckpt)
            pretrained = ckpt
        for r in range(a.rounds):
            for j in range(len(names)):
                k = names[(r + j) % len(names)]
                if k in left_out:
                    continue
                got = run_in_subprocess(argv, k, pretrained)
                if "left_out" in got:
                    left_out[k] = got["left_out"]
                    print(f"{k}: left out ({got['left_out']})", flush=True)
                    continue
                rates[k].append(got["img_s"])
                print(f"round {r + 1}: {k}: {got['img_s']:.1f} img/s", flush=True)
    rates = {k: v for k, v in rates.items() if k not in left_out}
    result = {
        "benchmark": "train_loop",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "case": a.case,
        "model": case["model"],
        "batch": s["batch"],
        "amp": a.amp,
        "steps": a.steps,
        "warmup": a.warmup,
        "rounds": a.rounds,
        "threads": torch.get_num_threads(),
        "data": a.data,
        "settings": s,
        "malloc": {"vitkit train": malloc_preset(), "plain loops": a.plain_malloc},
        "machine": machine_info(torch.device("cpu")),
        "load_before": before,
        "load_after": load_avg(),
        "images_per_s": rates,
        "left_out": left_out,
        "summary": summarise(rates),
    }
    text = table(result)
    print(text)
    if a.out:
        slug = cpu_name().lower().replace(" ", "-").replace("(r)", "")[:40]
        malloc = "" if a.plain_malloc == "default" else f"_plain-malloc-{a.plain_malloc}"
        stem = f"{a.case}_{case['model']}_{a.amp}{malloc}_{slug}_t{result['threads']}_{result['created'][:10]}"
        stem = Path(a.out) / stem
        atomic_write_json(stem.with_suffix(".json"), result)
        atomic_write_text(stem.with_suffix(".md"), text)
        print(f"wrote {stem}.json / .md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
