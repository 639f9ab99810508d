"""from_pretrained / save_pretrained: formats, errors, head re-init, channel adaptation, safety."""

import json
import os
import pickle

import pytest
import torch
from safetensors.torch import save_file

import vitkit
from vitkit.errors import CheckpointError, VitkitError

TINY = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=5)


def _tiny():
    torch.manual_seed(0)
    return vitkit.create_model("vit_tiny_patch16_224", **TINY).eval()


def test_roundtrip_is_exact(tmp_path):
    model = _tiny()
    model.class_names = list("abcde")
    vitkit.save_pretrained(model, tmp_path / "ckpt")
    loaded = vitkit.from_pretrained(tmp_path / "ckpt")
    assert not loaded.training
    assert loaded.config == model.config
    assert loaded.class_names == list("abcde")
    assert loaded.model_name == "vit_tiny_patch16_224"
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(loaded(x), model(x), atol=0, rtol=0)
    # a path to the weights file works too
    vitkit.from_pretrained(tmp_path / "ckpt" / "model.safetensors")


def test_new_head_warns_and_keeps_backbone(tmp_path):
    model = _tiny()
    vitkit.save_pretrained(model, tmp_path / "ckpt")
    with pytest.warns(UserWarning, match="re-initialised for 3 classes"):
        loaded = vitkit.from_pretrained(tmp_path / "ckpt", num_classes=3)
    assert loaded.head.out_features == 3
    torch.testing.assert_close(loaded.blocks[1].mlp.fc2.weight, model.blocks[1].mlp.fc2.weight)


def test_img_size_resizes_pos_embed(tmp_path):
    model = _tiny()
    vitkit.save_pretrained(model, tmp_path / "ckpt")
    loaded = vitkit.from_pretrained(tmp_path / "ckpt", img_size=48)
    assert loaded.pos_embed.shape == (1, 1 + 36, 32)
    x = torch.randn(1, 3, 48, 48)
    # resizing at load time equals resizing on the fly
    torch.testing.assert_close(loaded(x), model(x), atol=1e-5, rtol=1e-5)


def test_rgb_weights_into_grayscale_sum_filters(tmp_path):
    model = _tiny()
    vitkit.save_pretrained(model, tmp_path / "ckpt")
    gray = vitkit.from_pretrained(tmp_path / "ckpt", in_chans=1)
    w = model.patch_embed.proj.weight
    torch.testing.assert_close(gray.patch_embed.proj.weight, w.sum(1, keepdim=True))
    x1 = torch.randn(2, 1, 32, 32)
    torch.testing.assert_close(gray(x1), model(x1.expand(-1, 3, -1, -1)), atol=1e-5, rtol=1e-5)


def test_missing_and_unexpected_keys_are_listed(tmp_path):
    model = _tiny()
    vitkit.save_pretrained(model, tmp_path / "ckpt")
    sd = {k: v for k, v in model.state_dict().items() if k != "blocks.1.norm1.weight"}
    sd["blocks.9.extra"] = torch.zeros(1)
    save_file(sd, str(tmp_path / "ckpt" / "model.safetensors"))
    with pytest.raises(
        CheckpointError, match=r"missing keys: blocks\.1\.norm1\.weight.*unexpected keys: blocks\.9\.extra"
    ):
        vitkit.from_pretrained(tmp_path / "ckpt")


def test_shape_mismatch_is_named(tmp_path):
    model = _tiny()
    vitkit.save_pretrained(model, tmp_path / "ckpt")
    cfg = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    cfg["vitkit"]["config"]["mlp_ratio"] = 2.0
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(
        CheckpointError, match=r"blocks\.0\.mlp\.fc1\.weight: checkpoint \(128, 32\) vs model \(64, 32\)"
    ):
        vitkit.from_pretrained(tmp_path / "ckpt")


def test_truncated_weights_are_a_clear_error(tmp_path):
    vitkit.save_pretrained(_tiny(), tmp_path / "ckpt")
    path = tmp_path / "ckpt" / "model.safetensors"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="model.safetensors: cannot read weights"):
        vitkit.from_pretrained(tmp_path / "ckpt")


def test_bad_config_json(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="config.json: not valid JSON"):
        vitkit.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match="no 'model_type', 'architecture' or 'vitkit' key"):
        vitkit.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(CheckpointError, match="model_type 'bert' is not one of"):
        vitkit.from_pretrained(tmp_path)


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_pickles_never_execute_code(tmp_path, capsys):
    model = _tiny()
    vitkit.save_pretrained(model, tmp_path / "ckpt")
    (tmp_path / "ckpt" / "model.safetensors").unlink()
    with open(tmp_path / "ckpt" / "pytorch_model.bin", "wb") as f:
        pickle.dump({"x": _Evil()}, f, protocol=2)  # protocol >= 4 is refused at its FRAME before any global
    with pytest.raises(CheckpointError, match="pytorch_model.bin"):
        vitkit.from_pretrained(tmp_path / "ckpt")
    assert "pwned" not in capsys.readouterr().out


class _System:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_refusal_names_the_global_and_never_advises_unsafe_loading(tmp_path):
    vitkit.save_pretrained(_tiny(), tmp_path / "ckpt")
    (tmp_path / "ckpt" / "model.safetensors").unlink()
    weights = tmp_path / "ckpt" / "pytorch_model.bin"
    with open(weights, "wb") as f:
        pickle.dump({"x": _System(tmp_path / "pwned")}, f, protocol=2)  # the protocol torch.save uses
    with pytest.raises(CheckpointError) as err:
        vitkit.from_pretrained(tmp_path / "ckpt")
    message = str(err.value)
    assert message.startswith(f"{weights}: refused to load")
    assert f"refused global {os.system.__module__}.system" in message  # posix.system on Linux
    assert "weights_only=False" not in message and "weights_only` set to `False" not in message
    assert "\n" not in message and not (tmp_path / "pwned").exists()


def test_pytorch_bin_weights_load(tmp_path):
    model = _tiny()
    vitkit.save_pretrained(model, tmp_path / "ckpt")
    (tmp_path / "ckpt" / "model.safetensors").unlink()
    torch.save(model.state_dict(), tmp_path / "ckpt" / "pytorch_model.bin")
    loaded = vitkit.from_pretrained(tmp_path / "ckpt")
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(loaded(x), model(x))


def test_unknown_source_and_offline_hub(tmp_path, monkeypatch):
    with pytest.raises(VitkitError, match="neither a directory, a registered model name"):
        vitkit.from_pretrained(tmp_path / "does-not-exist")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    with pytest.raises(VitkitError, match="could not fetch 'hf-hub:google/vit-base-patch16-224'") as err:
        vitkit.from_pretrained("hf-hub:google/vit-base-patch16-224")
    assert "HF_HUB_OFFLINE is set" in str(err.value) and "set HF_HUB_OFFLINE=1" not in str(err.value)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr("huggingface_hub.snapshot_download", _no_network, raising=False)
    with pytest.raises(VitkitError, match="set HF_HUB_OFFLINE=1 to use the local cache"):
        vitkit.from_pretrained("hf-hub:google/vit-base-patch16-224")


def _no_network(*args, **kwargs):
    raise OSError("network is unreachable")


def test_registered_name_uses_its_hub_id(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    with pytest.raises(VitkitError, match="google/vit-base-patch16-224"):
        vitkit.create_model("vit_base_patch16_224", pretrained=True)
    with pytest.raises(VitkitError, match="no default pretrained weights"):
        vitkit.create_model("vit_nano_patch4_28", pretrained=True)


def test_hf_hub_download_is_used(tmp_path, monkeypatch):
    """The hf-hub: path really goes through huggingface_hub.snapshot_download (served from a fake cache)."""
    huggingface_hub = pytest.importorskip("huggingface_hub")
    model = _tiny()
    vitkit.save_pretrained(model, tmp_path / "repo")
    calls = []

    def fake_snapshot_download(repo_id, revision=None, allow_patterns=None):
        calls.append((repo_id, revision))
        return str(tmp_path / "repo")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    loaded = vitkit.from_pretrained("hf-hub:someone/tiny-vit@v1")
    assert calls == [("someone/tiny-vit", "v1")]
    assert loaded.config == model.config


def test_registered_name_keeps_registered_resolution(tmp_path, monkeypatch):
    """A hub config without a resolution (transformers' CvT never records one) gets the registered img_size."""
    import dataclasses

    from vitkit import hub

    vitkit.save_pretrained(_tiny(), tmp_path / "repo")  # a 32 px checkpoint stands in for the hub download
    entry = hub.get_entry("vit_tiny_patch16_224")
    registered = dataclasses.replace(entry, config=hub.replace_config(_tiny().config, img_size=48))
    monkeypatch.setattr(hub, "resolve_source", lambda source: tmp_path / "repo")
    monkeypatch.setattr(hub, "_registered_entry", lambda source: registered)
    loaded = vitkit.from_pretrained("vit_tiny_patch16_224")
    assert loaded.config.img_size == 48 and loaded.pos_embed.shape[1] == 1 + 36
    assert loaded.model_name == "vit_tiny_patch16_224"
