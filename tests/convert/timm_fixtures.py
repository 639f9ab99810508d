"""Shared reading of the timm golden fixtures (tests/fixtures/timm/<name>/: config, weights, meta.json, io)."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import vitkit

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "timm"


def meta(name: str) -> dict:
    return json.loads((FIXTURES / name / "meta.json").read_text())


def io_of(name: str) -> dict[str, torch.Tensor]:
    return load_file(str(FIXTURES / name / "io.safetensors"))


def cases(names: list[str]):
    """(name, (H, W)) for every size meta.json lists, as pytest params."""
    for name in names:
        for entry in meta(name)["sizes"]:
            yield pytest.param(name, tuple(entry["size"]), id=f"{name}-{entry['size'][0]}x{entry['size'][1]}")


def load_models(names: list[str]) -> dict:
    return {name: vitkit.from_pretrained(FIXTURES / name) for name in names}


def io_keys_expected(name: str) -> list[str]:
    sizes = [f"{e['size'][0]}x{e['size'][1]}" for e in meta(name)["sizes"]]
    return sorted(f"{p}_{s}" for s in sizes for p in ("input", "logits", "pre_logits"))


def assert_matches_timm(model, io: dict[str, torch.Tensor], size: tuple[int, int]) -> None:
    """Pre-logits and logits of ``model`` on timm's input at ``size`` equal timm's within 1e-5."""
    key = f"{size[0]}x{size[1]}"
    x = io[f"input_{key}"]
    assert x.shape[-2:] == size
    with torch.no_grad():
        feats = model.forward_features(x)
        pre = model.forward_head(feats, pre_logits=True)
        out = model.forward_head(feats)
    torch.testing.assert_close(pre, io[f"pre_logits_{key}"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out, io[f"logits_{key}"], atol=1e-5, rtol=1e-5)
