"""Semantic segmentation on a vitkit backbone: shapes on noise, a light FPN head, mean IoU.

    python examples/segmentation.py                          # fine-tune the backbone with the head
    python examples/segmentation.py --freeze                 # train the head only
    python examples/segmentation.py --grad-checkpointing     # recompute the backbone's blocks in backward
    python examples/segmentation.py --model cvt_small_64 --model-args "depths=(1,1,2)"
    python examples/segmentation.py --pretrained path/to/checkpoint   # any vitkit.create_model source

The data are generated: each image is coloured noise with one to three filled shapes (circle, square, triangle) in
random colours, so a pixel's class is the shape it belongs to (0 = background) and colour says nothing about it.
Background covers most pixels; ``--class-weights sqrt`` weighs each class's loss by 1 / sqrt(its share of them).
The backbone is ``vitkit.create_model(name, features_only=True)``: a list of NCHW maps, one per stage (Swin, CvT)
or per chosen block (ViT), whose channels and strides ``feature_info`` gives. The head is a small feature pyramid
(Lin et al., 2017, as in Kirillov et al.'s panoptic FPN): a 1x1 lateral conv per level, a top-down pass that adds
each coarser map to the finer one, a 3x3 conv per level, everything upsampled to the finest level and summed, a
1x1 classifier, bilinear upsampling to the image. The score is the mean over classes of the intersection over union
of predicted and true pixels (mIoU) on held-out images, beside what predicting "background" everywhere or a random
class per pixel would score.
"""

import argparse
import contextlib
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import vitkit
from vitkit.cli._args import apply_threads
from vitkit.models.registry import parse_overrides

CLASSES = ("background", "circle", "square", "triangle")
MEAN, STD = 0.5, 0.3  # of the generated images


# --- data ---------------------------------------------------------------------------------------------------
def make_shapes(n: int, size: int, seed: int, noise: float = 0.25) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` images (n, 3, size, size), normalised, and their masks (n, size, size) of class indices."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    images = np.empty((n, 3, size, size), np.float32)
    masks = np.zeros((n, size, size), np.int64)
    for i in range(n):
        ramp = rng.uniform(0, 1, (3, 1, 1)) + rng.uniform(-0.5, 0.5, (3, 1, 1)) * (xx + yy) / (2 * size)
        img = ramp + rng.normal(0, noise, (3, size, size))  # a colour ramp under noise
        for _ in range(rng.integers(1, 4)):
            kind = int(rng.integers(1, len(CLASSES)))
            r = rng.uniform(0.12, 0.24) * size
            cy, cx = rng.uniform(r, size - r, 2)
            dy, dx = yy - cy, xx - cx
            if kind == 1:
                inside = dy * dy + dx * dx <= r * r
            elif kind == 2:
                inside = (np.abs(dy) <= 0.85 * r) & (np.abs(dx) <= 0.85 * r)
            else:  # pointing up: as wide as its height at the base
                inside = (dy >= -r) & (dy <= 0.8 * r) & (np.abs(dx) <= 0.55 * (dy + r))
            colour = rng.uniform(0, 1, (3, 1))
            img[:, inside] = colour + rng.normal(0, noise / 2, (3, int(inside.sum())))
            masks[i][inside] = kind
        images[i] = img
    return (torch.from_numpy(images) - MEAN) / STD, torch.from_numpy(masks)


# --- model --------------------------------------------------------------------------------------------------
class FPNHead(nn.Module):
    """Feature-pyramid segmentation head over the backbone's maps (finest first)."""

    def __init__(self, channels: list[int], num_classes: int, width: int = 64) -> None:
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(c, width, 1) for c in channels)
        self.smooth = nn.ModuleList(
            nn.Sequential(nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
            for _ in channels
        )
        self.classifier = nn.Conv2d(width, num_classes, 1)

    def forward(self, maps: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        x = [lat(m) for lat, m in zip(self.lateral, maps, strict=True)]
        for i in range(len(x) - 2, -1, -1):  # top-down: each coarser map refines the finer one
            x[i] = x[i] + F.interpolate(x[i + 1], size=x[i].shape[-2:], mode="bilinear", align_corners=False)
        fine = x[0].shape[-2:]
        fused = sum(
            F.interpolate(s(m), size=fine, mode="bilinear", align_corners=False)
            for s, m in zip(self.smooth, x, strict=True)
        )
        return F.interpolate(self.classifier(fused), size=size, mode="bilinear", align_corners=False)


class Segmenter(nn.Module):
    def __init__(self, backbone: nn.Module, num_classes: int, width: int = 64, frozen: bool = False) -> None:
        super().__init__()
        self.backbone, self.frozen = backbone, frozen
        self.head = FPNHead(backbone.feature_info.channels(), num_classes, width)
        if frozen:
            backbone.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) -> logits (B, classes, H, W)
        with torch.no_grad() if self.frozen else contextlib.nullcontext():  # a frozen backbone keeps no activations
            maps = self.backbone(x)
        return self.head(maps, x.shape[-2:])


# --- metrics ------------------------------------------------------------------------------------------------
def confusion(pred: torch.Tensor, target: torch.Tensor, k: int) -> torch.Tensor:
    return torch.bincount(target.flatten() * k + pred.flatten(), minlength=k * k).view(k, k)


def iou_per_class(cm: torch.Tensor) -> torch.Tensor:
    cm = cm.double()
    tp = cm.diagonal()
    union = cm.sum(0) + cm.sum(1) - tp
    return torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, float("nan")))


def miou(cm: torch.Tensor) -> float:
    return float(iou_per_class(cm).nanmean())


@torch.no_grad()
def evaluate(model: nn.Module, images: torch.Tensor, masks: torch.Tensor, batch: int = 32) -> torch.Tensor:
    model.eval()
    k = len(CLASSES)
    cm = torch.zeros(k, k, dtype=torch.long)
    for i in range(0, len(images), batch):
        cm += confusion(model(images[i : i + batch]).argmax(1), masks[i : i + batch], k)
    return cm


# --- the run ------------------------------------------------------------------------------------------------
def build(args: argparse.Namespace) -> Segmenter:
    overrides = parse_overrides(args.model_args) if args.model_args else {}
    backbone = vitkit.create_model(
        args.model, pretrained=args.pretrained or None, img_size=args.size, in_chans=3, features_only=True, **overrides
    )
    if args.grad_checkpointing:
        backbone.set_grad_checkpointing(True)
    return Segmenter(backbone, len(CLASSES), args.width, frozen=args.freeze)


def run(args: argparse.Namespace) -> dict:
    torch.manual_seed(args.seed)
    apply_threads(args.threads)
    train_x, train_y = make_shapes(args.train_size, args.size, args.seed)
    val_x, val_y = make_shapes(args.val_size, args.size, args.seed + 1)
    model = build(args)
    weight = None
    if args.class_weights == "sqrt":  # weight each class by 1 / sqrt(its share of the training pixels)
        share = torch.bincount(train_y.flatten(), minlength=len(CLASSES)).double().clamp(min=1) / train_y.numel()
        weight = (share**-0.5 / (share**-0.5).mean()).float()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.05)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: min(1.0, (s + 1) / max(1, args.steps // 20)) * 0.5 * (1 + math.cos(math.pi * s / args.steps)),
    )
    g = torch.Generator().manual_seed(args.seed)
    start, log = time.perf_counter(), []
    for step in range(args.steps):
        model.train()
        if args.freeze:
            model.backbone.eval()  # frozen: no dropout / drop-path, BatchNorm statistics stay
        idx = torch.randint(len(train_x), (args.batch_size,), generator=g)
        loss = F.cross_entropy(model(train_x[idx]), train_y[idx], weight=weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        if (step + 1) % args.log_every == 0 or step + 1 == args.steps:
            log.append({"step": step + 1, "loss": round(loss.item(), 4)})
            if not args.quiet:
                print(f"step {step + 1:5d}  loss {loss.item():.4f}  {time.perf_counter() - start:6.1f} s", flush=True)
    seconds = time.perf_counter() - start
    cm = evaluate(model, val_x, val_y)
    k = len(CLASSES)
    background = confusion(torch.zeros_like(val_y), val_y, k)
    random = confusion(torch.randint(k, val_y.shape, generator=g), val_y, k)
    result = {
        "model": args.model,
        "model_args": args.model_args,
        "pretrained": args.pretrained,
        "frozen_backbone": args.freeze,
        "grad_checkpointing": args.grad_checkpointing,
        "class_weights": args.class_weights,
        "backbone_params": sum(p.numel() for p in model.backbone.parameters()),
        "head_params": sum(p.numel() for p in model.head.parameters()),
        "feature_channels": model.backbone.feature_info.channels(),
        "feature_reduction": model.backbone.feature_info.reduction(),
        "steps": args.steps,
        "train_seconds": round(seconds, 1),
        "mIoU": round(miou(cm), 4),
        "IoU": {c: round(float(v), 4) for c, v in zip(CLASSES, iou_per_class(cm), strict=True)},
        "pixel_accuracy": round(float(cm.diagonal().sum() / cm.sum()), 4),
        "mIoU_all_background": round(miou(background), 4),
        "mIoU_random": round(miou(random), 4),
        "log": log,
    }
    if not args.quiet:
        print(
            f"mIoU {result['mIoU']:.4f} (all background {result['mIoU_all_background']:.4f}, random "
            f"{result['mIoU_random']:.4f})  pixel accuracy {result['pixel_accuracy']:.4f}  "
            + "  ".join(f"{c} {v:.3f}" for c, v in result["IoU"].items())
        )
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return result


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="swin_tiny_patch4_window4_64", help="registered backbone name")
    p.add_argument("--model-args", default="embed_dim=48,depths=(2,2,2),num_heads=(2,4,8)",
                   help="config overrides, key=value,... ('' for the registered config)")  # fmt: skip
    p.add_argument("--pretrained", default="", help="backbone weights: a checkpoint, hf-hub:id or weights file")
    p.add_argument("--freeze", action="store_true", help="keep the backbone fixed, train the head only")
    p.add_argument("--grad-checkpointing", action="store_true", help="recompute the backbone's blocks in backward")
    p.add_argument("--size", type=int, default=64, help="image side in pixels")
    p.add_argument("--train-size", type=int, default=2000, help="training images")
    p.add_argument("--val-size", type=int, default=200, help="held-out images for mIoU")
    p.add_argument("--steps", type=int, default=1500, help="optimizer steps")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--width", type=int, default=64, help="channels of the FPN head")
    p.add_argument("--class-weights", choices=("none", "sqrt"), default="none",
                   help="sqrt: weigh the loss of each class by 1 / sqrt(its share of the pixels); learns the shapes "
                   "sooner in short runs")  # fmt: skip
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", default="auto", help="torch CPU threads: N, 0 = torch's default, auto = 1 on a busy "
                   "machine (as the vitkit command line)")  # fmt: skip
    p.add_argument("--log-every", type=int, default=100)
    p.add_argument("--out", default="", help="write the results as JSON here")
    p.add_argument("--quiet", action="store_true")
    return p


def main(argv: list[str] | None = None) -> dict:
    return run(parser().parse_args(argv))


if __name__ == "__main__":
    main(sys.argv[1:])
