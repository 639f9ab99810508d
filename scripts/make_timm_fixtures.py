"""Write tiny random-weight timm checkpoints + timm's logits as golden fixtures for vitkit's tests.

timm needs torchvision, which does not install beside the CPU torch vitkit is tested with, so this
script runs in a separate virtual environment that it creates on first use (PyPI's torch wheel, run
on the CPU) and re-executes itself there:

    python3 scripts/make_timm_fixtures.py                  # env in /tmp/vitkit-timm-env, writes tests/fixtures/timm
    python3 scripts/make_timm_fixtures.py --env DIR --out DIR

Every fixture is a directory in timm's own hub format, written by ``timm.models.save_for_hf``
(``config.json`` + ``model.safetensors``), plus ``io.safetensors`` (fixed inputs, timm's logits and
pre-logits) and ``meta.json`` (versions, model_args, the sizes and how each was computed).
tests/fixtures/timm/README.md describes the layout. All parameters are random (LayerNorm weights and
biases too), drawn from a fixed seed; reference outputs are computed in float64 and stored as float32.

With ``--features`` it writes (only) the intermediate-feature fixtures, tests/fixtures/timm_features/<name>/:
timm's ``forward_intermediates`` and ``features_only`` outputs for the weights and inputs already committed in
tests/fixtures/timm/<name>/ (which it reads and does not change); tests/fixtures/timm_features/README.md
describes them.

    python3 scripts/make_timm_fixtures.py --features --env /tmp/vitkit-timm-env
"""

import argparse
import json
import os
import subprocess
import sys
import zlib
from pathlib import Path

# The versions the env is built with (the features fixtures were made with these; the model fixtures with
# torch 2.15.0 / torchvision 0.29.2, as their meta.json records).
PINS = {"torch": "2.14.1", "torchvision": "0.29.1", "timm": "1.0.31", "safetensors": "0.8.0"}
DEFAULT_ENV = "/tmp/vitkit-timm-env"
ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "tests" / "fixtures" / "timm"
DEFAULT_FEATURES_OUT = ROOT / "tests" / "fixtures" / "timm_features"
BATCH = 2  # two images catch batch/window mix-ups; the 64 px fixture uses one to stay small
BATCH_OF = {"swin_3stage": 1}

_VIT = dict(img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=4, num_classes=7)
_SWIN = dict(window_size=4, num_classes=7)

# name: (timm architecture, model_args overrides, extra sizes computed with dynamic_img_size=True)
FIXTURES = {
    "vit_token": ("vit_tiny_patch16_224", _VIT, [(48, 64), (16, 24)]),
    "vit_avg": ("vit_tiny_patch16_224", {**_VIT, "global_pool": "avg"}, [(48, 64), (16, 24)]),
    "vit_avg_noclass": (
        "vit_tiny_patch16_224",
        {**_VIT, "global_pool": "avg", "class_token": False},
        [(48, 64)],
    ),
    "vit_noqkvbias_mlp2": ("vit_tiny_patch16_224", {**_VIT, "qkv_bias": False, "mlp_ratio": 2.0}, [(16, 24)]),
    # stage resolutions 8, 4: W-MSA/SW-MSA in stage 0, no shift in stage 1 (resolution == window)
    "swin_2stage": (
        "swin_tiny_patch4_window7_224",
        {**_SWIN, "img_size": 32, "embed_dim": 24, "depths": (2, 2), "num_heads": (2, 4)},
        [(32, 48)],
    ),
    # stage resolutions 8, 4, 2: the last stage's window is clamped to 2 (a 3x3 bias table)
    "swin_3stage_clamp": (
        "swin_tiny_patch4_window7_224",
        {**_SWIN, "img_size": 32, "embed_dim": 12, "depths": (2, 2, 2), "num_heads": (2, 4, 8)},
        [(32, 48)],
    ),
    # stage resolutions 16, 8, 4: shifted windows in stages 0 and 1, patch merging between them
    "swin_3stage": (
        "swin_tiny_patch4_window7_224",
        {**_SWIN, "img_size": 64, "embed_dim": 12, "depths": (2, 2, 2), "num_heads": (2, 4, 8)},
        [(64, 96)],
    ),
}


# --- environment -----------------------------------------------------------------------------------
def _have_timm() -> bool:
    try:
        import timm  # noqa: F401
        import torchvision  # noqa: F401
    except ImportError:
        return False
    return True


def ensure_env(env: Path) -> Path:
    """Create the venv with the pinned packages (the first run downloads a few GB) and return its python."""
    python = env / "bin" / "python"
    if not python.exists():
        print(f"creating {env}", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(env)], check=True)
    check = "import timm, torch, torchvision, safetensors; print(timm.__version__, torch.__version__)"
    probe = subprocess.run([str(python), "-c", check], capture_output=True, text=True)
    have = probe.stdout.split()
    if probe.returncode != 0 or have[0] != PINS["timm"] or have[1].split("+")[0] != PINS["torch"]:
        pins = [f"{k}=={v}" for k, v in PINS.items()]
        print(f"installing {' '.join(pins)} into {env} (several GB, a few minutes)", flush=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", *pins], check=True)
    return python


# --- fixtures --------------------------------------------------------------------------------------
def randomize_(model, seed: int) -> None:
    """Random values in every parameter, so no parameter keeps an init that hides a mapping error."""
    import torch
    from torch import nn

    g = torch.Generator().manual_seed(seed)
    done = set()
    with torch.no_grad():
        for mod_name, mod in model.named_modules():
            own = dict(mod.named_parameters(recurse=False))
            if not own:
                continue
            for p_name, p in own.items():
                full = f"{mod_name}.{p_name}" if mod_name else p_name
                if isinstance(mod, nn.LayerNorm) and p_name == "weight":
                    p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
                elif p_name == "bias":
                    p.copy_(0.1 * torch.randn(p.shape, generator=g))
                elif isinstance(mod, (nn.Linear, nn.Conv2d)) and p_name == "weight":
                    fan_in = p[0].numel()
                    p.copy_(torch.randn(p.shape, generator=g) * fan_in**-0.5)
                else:  # cls_token, pos_embed, relative_position_bias_table
                    p.copy_(0.5 * torch.randn(p.shape, generator=g))
                done.add(full)
    missing = {n for n, _ in model.named_parameters()} - done
    if missing:
        raise RuntimeError(f"parameters not randomised: {sorted(missing)}")


def _swin_stages(model, size: tuple[int, int]) -> list[dict]:
    """Per stage: the feature resolution at this input size and the window/shift timm uses there."""
    patch = model.patch_embed.patch_size[0]
    h, w = -(-size[0] // patch), -(-size[1] // patch)
    out = []
    for i, stage in enumerate(model.layers):
        if i > 0:
            h, w = -(-h // 2), -(-w // 2)
        blocks = list(stage.blocks)
        out.append(
            {
                "resolution": [h, w],
                "window_size": list(blocks[0].window_size),
                "shift_sizes": [list(b.shift_size) for b in blocks],
                "bias_table": list(blocks[0].attn.relative_position_bias_table.shape),
            }
        )
    return out


def make_fixture(name: str, arch: str, args: dict, extra_sizes: list, out_root: Path) -> None:
    import copy

    import timm
    import torch
    import torchvision
    from safetensors.torch import save_file
    from timm.models import save_for_hf

    seed = zlib.crc32(name.encode())
    model = timm.create_model(arch, pretrained=False, **args).eval()
    randomize_(model, seed)
    out = out_root / name
    out.mkdir(parents=True, exist_ok=True)
    for old in out.iterdir():
        old.unlink()
    save_for_hf(model, out, safe_serialization=True)

    # the same weights in a model that accepts other input sizes (ViT resamples pos_embed each forward
    # with resample_abs_pos_embed, antialias=True; Swin builds masks per forward, padding to the window)
    dynamic = timm.create_model(arch, pretrained=False, dynamic_img_size=True, **args).eval()
    dynamic.load_state_dict(model.state_dict(), strict=True)

    native = tuple(args["img_size"]) if isinstance(args["img_size"], (tuple, list)) else (args["img_size"],) * 2
    g = torch.Generator().manual_seed(seed + 1)
    batch = BATCH_OF.get(name, BATCH)
    tensors, sizes = {}, []
    for size in [native, *extra_sizes]:
        key = f"{size[0]}x{size[1]}"
        x = torch.randn(batch, 3, *size, generator=g)
        ref = model if size == native else dynamic
        with torch.no_grad():
            ref64 = copy.deepcopy(ref).double()
            logits = ref64(x.double())
            pre = ref64.forward_head(ref64.forward_features(x.double()), pre_logits=True)
            same = ref(x)  # float32, the precision vitkit is compared in
            if size == native:  # the dynamic model agrees with the fixed-size one where both apply
                torch.testing.assert_close(dynamic(x), same, rtol=0, atol=1e-6)
        torch.testing.assert_close(same.double(), logits, rtol=0, atol=1e-4)
        tensors[f"input_{key}"] = x.contiguous()
        tensors[f"logits_{key}"] = logits.float().contiguous()
        tensors[f"pre_logits_{key}"] = pre.float().contiguous()
        entry = {
            "size": list(size),
            "how": "fixed-size model (as saved)" if size == native else "dynamic_img_size=True, same weights",
            "logits_abs_max": round(float(logits.abs().max()), 4),
            "logits_std": round(float(logits.std()), 4),
        }
        if arch.startswith("swin"):
            entry["stages"] = _swin_stages(ref, size)
        sizes.append(entry)
    save_file(tensors, str(out / "io.safetensors"), metadata={"format": "pt"})
    meta = {
        "fixture": name,
        "architecture": arch,
        "model_args": {k: list(v) if isinstance(v, tuple) else v for k, v in args.items()},
        "seed": seed,
        "versions": {
            "timm": timm.__version__,
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "python": sys.version.split()[0],
        },
        "reference_dtype": "float64 (stored as float32)",
        "batch": batch,
        "num_params": sum(p.numel() for p in model.parameters()),
        "sizes": sizes,
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    total = sum(f.stat().st_size for f in out.iterdir())
    print(f"{name:20s} {meta['num_params']:7d} params {total / 1024:6.1f} KiB  sizes {[e['size'] for e in sizes]}")


# --- intermediate features -------------------------------------------------------------------------
def _timm_models(name: str, models_root: Path):
    """timm's model of a committed fixture (its config.json's model_args, its weights) and the same weights in a
    model built with dynamic_img_size=True, as make_fixture used them."""
    import timm
    from safetensors.torch import load_file

    config = json.loads((models_root / name / "config.json").read_text())
    arch, args = FIXTURES[name][0], FIXTURES[name][1]
    weights = load_file(str(models_root / name / "model.safetensors"))
    built = []
    for extra in ({}, {"dynamic_img_size": True}):
        model = timm.create_model(arch, pretrained=False, **args, **extra).eval()
        model.load_state_dict(weights, strict=True)
        built.append(model)
    assert config["architecture"] == arch
    return built


def _features_only(name: str, models_root: Path, size_is_native: bool, out_indices):
    import timm

    arch, args = FIXTURES[name][0], FIXTURES[name][1]
    extra = {} if size_is_native else {"dynamic_img_size": True}
    weights = dict(file=str(models_root / name / "model.safetensors"))  # loaded by timm's own pretrained path
    kw = dict(pretrained_cfg_overlay=weights, features_only=True, out_indices=out_indices)
    return timm.create_model(arch, pretrained=True, **kw, **args, **extra).eval()


def make_features(name: str, models_root: Path, out_root: Path) -> None:
    """timm's forward_intermediates / features_only on the committed inputs, computed in float64."""
    import copy

    import timm
    import torch
    import torchvision
    from safetensors.torch import load_file, save_file

    fixed, dynamic = _timm_models(name, models_root)
    io = load_file(str(models_root / name / "io.safetensors"))
    fixture_meta = json.loads((models_root / name / "meta.json").read_text())
    is_vit = FIXTURES[name][0].startswith("vit")
    levels = len(fixed.blocks) if is_vit else len(fixed.layers)
    out_indices = tuple(range(levels))
    tensors, sizes = {}, []
    for i, entry in enumerate(fixture_meta["sizes"]):
        key = f"{entry['size'][0]}x{entry['size'][1]}"
        x = io[f"input_{key}"]
        model = fixed if i == 0 else dynamic
        m64 = copy.deepcopy(model).double()
        features = _features_only(name, models_root, i == 0, out_indices)
        with torch.no_grad():
            x64 = x.double()
            if is_vit:
                final, maps = m64.forward_intermediates(x64, return_prefix_tokens=True)
                for j, level in enumerate(maps):  # timm pairs a map with its prefix tokens only if there are some
                    spatial, prefix = level if m64.num_prefix_tokens else (level, None)
                    tensors[f"nchw_{key}_{j}"] = spatial
                    if prefix is not None:
                        tensors[f"prefix_{key}_{j}"] = prefix
                normed = m64.forward_intermediates(x64, norm=True, output_fmt="NLC", intermediates_only=True)
                for j, tokens in enumerate(normed):
                    tensors[f"norm_nlc_{key}_{j}"] = tokens
            else:
                final, maps = m64.forward_intermediates(x64)
                for j, spatial in enumerate(maps):
                    tensors[f"nchw_{key}_{j}"] = spatial
                (last,) = m64.forward_intermediates(x64, indices=1, norm=True, intermediates_only=True)
                tensors[f"norm_nchw_{key}_{levels - 1}"] = last
            tensors[f"final_{key}"] = final
            stop_final, (first,) = m64.forward_intermediates(x64, indices=[0], stop_early=True)
            tensors[f"stop_early_final_{key}"] = stop_final
            torch.testing.assert_close(first, tensors[f"nchw_{key}_0"], rtol=0, atol=1e-12)
            # timm's features_only backbone returns the same maps (Swin's channels last), so they are not stored
            for j, y in enumerate(copy.deepcopy(features).double()(x64)):
                y = y if is_vit else y.permute(0, 3, 1, 2)
                torch.testing.assert_close(y, tensors[f"nchw_{key}_{j}"], rtol=0, atol=1e-12)
            # the float32 models agree with the float64 references
            (same,) = model.forward_intermediates(x, indices=[levels - 1], intermediates_only=True)
            torch.testing.assert_close(same.double(), tensors[f"nchw_{key}_{levels - 1}"], rtol=0, atol=1e-4)
        sizes.append({"size": entry["size"], "how": entry["how"]})
    tensors = {k: v.float().contiguous() for k, v in tensors.items()}
    out = out_root / name
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / "features.safetensors"), metadata={"format": "pt"})
    meta = {
        "fixture": name,
        "model_fixture": f"tests/fixtures/timm/{name}",
        "architecture": FIXTURES[name][0],
        "versions": {
            "timm": timm.__version__,
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "python": sys.version.split()[0],
        },
        "reference_dtype": "float64 (stored as float32)",
        "num_levels": levels,
        "feature_info": [{k: d[k] for k in ("num_chs", "reduction", "module")} for d in fixed.feature_info],
        "features_only": {
            "out_indices": list(out_indices),
            "channels": features.feature_info.channels(),
            "reduction": features.feature_info.reduction(),
            "output_fmt": "NCHW" if is_vit else "NHWC",
            "equals": "the nchw_* maps (Swin's permuted from NHWC), checked when written",
        },
        "num_prefix_tokens": getattr(fixed, "num_prefix_tokens", 0),
        "sizes": sizes,
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    total = sum(f.stat().st_size for f in out.iterdir())
    print(f"{name:20s} features {len(tensors):3d} tensors {total / 1024:6.1f} KiB  sizes {[e['size'] for e in sizes]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default=os.environ.get("VITKIT_TIMM_ENV", DEFAULT_ENV), help="venv with timm")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="fixtures root directory")
    parser.add_argument("--only", nargs="*", help="fixture names to (re)write; default all")
    parser.add_argument(
        "--features",
        action="store_true",
        help="write only the intermediate-feature fixtures (from the committed model fixtures) into --features-out",
    )
    parser.add_argument("--features-out", default=str(DEFAULT_FEATURES_OUT), help="features fixtures root")
    args = parser.parse_args()
    if not _have_timm():
        python = ensure_env(Path(args.env))
        os.execv(str(python), [str(python), __file__, *sys.argv[1:]])
    import timm
    import torch

    if timm.__version__ != PINS["timm"] or torch.__version__.split("+")[0] != PINS["torch"]:
        print(f"warning: timm {timm.__version__} / torch {torch.__version__} differ from the pins {PINS}")
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    names = args.only or list(FIXTURES)
    unknown = sorted(set(names) - set(FIXTURES))
    if unknown:
        parser.error(f"unknown fixture(s) {unknown}; known: {sorted(FIXTURES)}")
    for name in names:
        if args.features:
            make_features(name, Path(args.out), Path(args.features_out))
        else:
            arch, model_args, extra = FIXTURES[name]
            make_fixture(name, arch, model_args, extra, Path(args.out))


if __name__ == "__main__":
    main()
