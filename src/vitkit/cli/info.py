"""``vitkit info MODEL``: configuration, size, cost and a per-stage architecture summary."""

import argparse
import dataclasses
import json

from vitkit.cli._args import print_table


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="registered model name, or a checkpoint directory / hf-hub:org/name")
    p.add_argument("--img-size", type=int, default=None, help="describe the model at this input resolution")
    p.add_argument("--model-args", default="", help="config overrides 'key=value,...', e.g. 'depth=2,embed_dim=64'")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")


def load_config_model(source: str, img_size: int | None, model_args: str):
    """A model (on the meta device when registered: nothing is allocated) for a name or a checkpoint."""
    from vitkit.eval.complexity import build_on_meta
    from vitkit.models.registry import get_entry, list_models, parse_overrides, replace_config

    overrides = parse_overrides(model_args)
    if img_size:
        overrides["img_size"] = img_size
    if source in set(list_models()):
        cfg = replace_config(get_entry(source).config, **overrides)
        return build_on_meta(cfg, source), source
    import os

    if os.path.exists(source) or source.startswith("hf-hub:"):
        from vitkit.hub import from_pretrained

        model = from_pretrained(source, **overrides)
        return model, getattr(model, "model_name", None) or source
    get_entry(source)  # raises "unknown model ... did you mean"
    raise AssertionError("unreachable")


def run(args: argparse.Namespace) -> int:
    from vitkit.eval.complexity import describe, model_stats
    from vitkit.models.registry import family_of_config

    model, name = load_config_model(args.model, args.img_size, args.model_args)
    stats = model_stats(model)
    stages = describe(model)
    cfg = dataclasses.asdict(model.config)
    family = family_of_config(model.config).name
    if args.json:
        out = {**stats.to_dict(), "name": name, "family": family, "config": cfg, "stages": stages}
        out["data_config"] = model.data_config
        print(json.dumps(out, indent=2, default=list))
        return 0
    c, h, w = stats.input_size
    print(f"{name}  ({family}, {type(model).__name__})")
    print(
        f"  params {stats.params / 1e6:.3f} M   {stats.gflops:.4g} GFLOPs ({stats.gmacs:.4g} GMACs)   "
        f"input {c}x{h}x{w}   classes {model.config.num_classes}"
    )
    dc = model.data_config
    print(f"  data: mean {tuple(dc['mean'])} std {tuple(dc['std'])} {dc['interpolation']} crop_pct {dc['crop_pct']}")
    print("  config: " + ", ".join(f"{k}={v}" for k, v in cfg.items() if k not in ("mean", "std")))
    print()
    print_table(
        stages,
        [
            ("stage", "stage"),
            ("blocks", "blocks"),
            ("tokens", "tokens"),
            ("channels", "channels"),
            ("heads", "heads"),
            ("window", "attention window"),
            ("modules", "modules"),
        ],
    )
    return 0
