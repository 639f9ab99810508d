"""Checkpoints written by vitkit 0.1 (CvT's per-stage fields had singular names, drop_rate meant MLP dropout) load."""

import dataclasses
import json

import torch

import vitkit
from tests.conftest import randomize_


def test_a_vitkit_0_1_cvt_checkpoint_loads_with_todays_names(tmp_path):
    model = randomize_(vitkit.create_model("cvt_nano_28")).eval()
    vitkit.save_pretrained(model, tmp_path / "ck")
    path = tmp_path / "ck" / "config.json"
    cfg = json.loads(path.read_text())
    new = cfg["vitkit"]["config"]
    renamed = ("depths", "embed_dims", "patch_sizes", "patch_strides", "patch_paddings")
    old = {k: v for k, v in new.items() if k not in (*renamed, "pos_drop_rate", "proj_drop_rate")}
    n = len(new["depths"])
    old |= {"depth": new["depths"], "embed_dim": new["embed_dims"], "patch_size": new["patch_sizes"],
            "patch_stride": new["patch_strides"], "patch_padding": new["patch_paddings"], "drop_rate": 0.0,
            "mlp_ratio": [new["mlp_ratio"]] * n, "qkv_bias": [new["qkv_bias"]] * n,
            "cls_token": [False] * (n - 1) + [new["cls_token"]]}  # fmt: skip
    cfg["vitkit"] |= {"version": "0.1.0", "config": old}
    path.write_text(json.dumps(cfg))
    loaded = vitkit.from_pretrained(tmp_path / "ck")
    assert dataclasses.asdict(loaded.config) == dataclasses.asdict(model.config)
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
