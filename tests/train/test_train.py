import itertools
import json

import pytest
import torch
from safetensors.torch import load_file

import vitkit
from vitkit.cli import main as cli_main
from vitkit.errors import CheckpointError, VitkitError
from vitkit.train import TrainConfig, train
from vitkit.train import loop as loop_mod
from vitkit.train import state as ckpt_mod
from vitkit.train.optim import WarmupCosine, param_groups

from .helpers import tiny


def test_param_groups_decay_rules_and_layer_decay():
    model = vitkit.create_model("vit_tiny_patch4_28", depth=2, embed_dim=32, num_heads=2)
    groups = param_groups(model, weight_decay=0.05, layer_decay=0.5)
    by_name = {n: g for g in groups for n in g["names"]}
    for name in ("pos_embed", "cls_token", "blocks.0.norm1.weight", "blocks.1.attn.qkv.bias", "head.bias"):
        assert by_name[name]["weight_decay"] == 0.0, name
    for name in ("blocks.0.attn.qkv.weight", "patch_embed.proj.weight", "head.weight"):
        assert by_name[name]["weight_decay"] == 0.05, name
    assert by_name["head.weight"]["lr_scale"] == 1.0  # layer 3 of 3
    assert by_name["blocks.1.mlp.fc1.weight"]["lr_scale"] == 0.5
    assert by_name["patch_embed.proj.weight"]["lr_scale"] == 0.125
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_warmup_cosine_schedule():
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = WarmupCosine(opt, base_lr=1.0, min_lr=0.1, warmup_steps=4, total_steps=14)
    lrs = [opt.param_groups[0]["lr"]]
    for _ in range(14):
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs[:5] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert lrs[9] == pytest.approx(0.55) and lrs[14] == pytest.approx(0.1)
    assert all(a >= b for a, b in itertools.pairwise(lrs[4:]))


def test_train_end_to_end_outputs(tmp_path):
    cfg = tiny(tmp_path, ema_decay=0.9, aug="trivialaugment", mixup=0.2, cutmix=1.0, accum_steps=2)
    result = train(cfg)
    assert result.best_checkpoint == tmp_path / "run" / "best" and len(result.history) == 2
    assert {"val_acc", "val_loss", "val_top5", "val_ema_acc", "train_loss"} <= set(result.metrics)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["type"] == "train"] == [1, 2, 3, 4]  # 4 batches, accum 2, 2 epochs
    assert sum(r["type"] == "epoch" for r in records) == 2
    model = vitkit.from_pretrained(result.best_checkpoint)  # EMA weights, loadable for inference
    assert model.class_names[0] == "T-shirt/top" and model.config.img_size == 16 and model.config.in_chans == 1
    state = json.loads((result.last_checkpoint / "trainer_state.json").read_text())
    assert state["epoch"] == 2 and state["step"] == 4 and state["scheduler"]["last_step"] == 4
    assert {"python", "numpy"} <= set(state["rng"])
    tensors = load_file(str(result.last_checkpoint / "training_state.safetensors"))
    assert "rng.torch" in tensors and any(k.startswith("ema.") for k in tensors)
    assert any(k.startswith("optim.") and k.endswith("exp_avg") for k in tensors)


def test_same_seed_same_weights_on_cpu(tmp_path):
    a = train(tiny(tmp_path / "a", epochs=1, drop_path_rate=0.2, aug="randaugment"))
    b = train(tiny(tmp_path / "b", epochs=1, drop_path_rate=0.2, aug="randaugment"))
    wa = load_file(str(a.last_checkpoint / "model.safetensors"))
    wb = load_file(str(b.last_checkpoint / "model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_bf16_autocast_and_fp16_needs_cuda(tmp_path):
    r = train(tiny(tmp_path, epochs=1, amp="bf16"))
    assert r.metrics["val_loss"] == r.metrics["val_loss"]  # finite
    with pytest.raises(VitkitError, match="needs a CUDA device"):
        train(tiny(tmp_path / "x", amp="fp16", device="cpu"))


def test_fine_tune_new_head_channels_resolution_and_frozen_backbone(tmp_path):
    tiny_vit = dict(depth=1, embed_dim=32, num_heads=2)
    src = vitkit.create_model("vit_tiny_patch4_28", num_classes=5, in_chans=3, img_size=32, **tiny_vit)
    vitkit.save_pretrained(src, tmp_path / "src")
    cfg = tiny(tmp_path, model="", model_args="", pretrained=str(tmp_path / "src"), freeze_backbone=True, epochs=1)
    with pytest.warns(UserWarning, match="re-initialised for 10 classes"):
        result = train(cfg)
    tuned = load_file(str(result.last_checkpoint / "model.safetensors"))
    original = src.state_dict()
    # 3-channel stem summed into 1 channel, position embedding resampled 8x8 -> 4x4, backbone untouched
    assert tuned["patch_embed.proj.weight"].shape[1] == 1 and tuned["pos_embed"].shape[1] == 1 + 16
    assert torch.allclose(tuned["patch_embed.proj.weight"], original["patch_embed.proj.weight"].sum(1, keepdim=True))
    assert torch.equal(tuned["blocks.0.attn.qkv.weight"], original["blocks.0.attn.qkv.weight"])
    assert tuned["head.weight"].shape == (10, 32)


def test_nan_loss_stops_with_step_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    real = loop_mod.soft_cross_entropy
    calls = {"n": 0}

    def poisoned(logits, target):
        calls["n"] += 1
        loss = real(logits, target)
        return loss * float("nan") if calls["n"] == 3 else loss

    monkeypatch.setattr(loop_mod, "soft_cross_entropy", poisoned)
    with pytest.raises(VitkitError, match=r"not finite .* at step 3 .*Last good checkpoint: .*last"):
        train(tiny(tmp_path, checkpoint_every_steps=1))
    state = json.loads((tmp_path / "run" / "last" / "trainer_state.json").read_text())
    assert state["step"] == 2
    assert torch.isfinite(load_file(str(tmp_path / "run" / "last" / "model.safetensors"))["head.weight"]).all()


def test_corrupt_checkpoint_is_refused_and_interrupted_write_keeps_the_old_one(tmp_path, monkeypatch):
    cfg = tiny(tmp_path, epochs=1)
    train(cfg)
    last = tmp_path / "run" / "last"
    good = (last / "model.safetensors").read_bytes()

    # a crash while writing the next checkpoint leaves the previous one whole
    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(ckpt_mod, "atomic_save_safetensors", boom)
    with pytest.raises(CheckpointError, match=r"could not write checkpoint .*: disk full; the previous checkpoint"):
        train(cfg.replace(resume="auto", epochs=2))
    monkeypatch.undo()
    assert (last / "model.safetensors").read_bytes() == good
    assert ckpt_mod.load_checkpoint(last)[0]["epoch"] == 1
    # a truncated file is named
    (last / "model.safetensors").write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match=r"model.safetensors: corrupt or truncated"):
        train(cfg.replace(resume="auto", epochs=2))
    assert (tmp_path / "run" / "best" / "config.json").is_file()


def test_refuses_to_overwrite_a_run_and_checks_resume_settings(tmp_path):
    cfg = tiny(tmp_path, epochs=1)
    train(cfg)
    with pytest.raises(VitkitError, match="already holds a training run"):
        train(cfg)
    with pytest.raises(CheckpointError, match=r"settings changed .*lr"):
        train(cfg.replace(resume="auto", lr=0.1))
    with pytest.raises(CheckpointError, match=r"global batch: checkpoint 16 x 1 process\(es\) vs now 8 x 1"):
        train(cfg.replace(resume="auto", batch_size=8))
    r = train(cfg.replace(resume=str(tmp_path / "run"), epochs=2))  # an output dir works as a resume source
    assert len(r.history) == 2


def test_fsdp_on_one_process_writes_a_verified_distributed_checkpoint(tmp_path):
    cfg = tiny(tmp_path, epochs=1, strategy="fsdp")  # one process: unsharded training, sharded checkpoints
    train(cfg)
    last = tmp_path / "run" / "last"
    manifest = json.loads((last / "trainer_state.json").read_text())["sha256"]
    assert {"dcp/.metadata", "dcp/__0_0.distcp"} <= set(manifest)
    assert not (tmp_path / "run" / ".last.shards.tmp").exists()
    assert vitkit.from_pretrained(last).config.depth == 1
    shard = last / "dcp" / "__0_0.distcp"
    shard.write_bytes(shard.read_bytes()[:-8])
    with pytest.raises(CheckpointError, match=r"__0_0\.distcp: corrupt or truncated"):
        train(cfg.replace(resume="auto", epochs=2))


def test_a_torchrun_restart_continues_the_run(tmp_path, monkeypatch):
    cfg = tiny(tmp_path, epochs=1)
    train(cfg)
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")  # what torchrun --max-restarts sets after a failure
    r = train(cfg.replace(epochs=2))  # no resume given: a restarted job continues from last/
    assert [h["step"] for h in r.history] == [4, 8]


def test_time_limit_stops_cleanly(tmp_path):
    r = train(tiny(tmp_path, epochs=50, time_limit_minutes=1e-6))
    assert r.stopped_early and "time limit" in r.stopped_early
    assert len(r.history) == 1 and "val_acc" in r.metrics and r.best_checkpoint is not None


def test_early_stopping(tmp_path):
    r = train(tiny(tmp_path, epochs=6, lr=0.0, min_lr=0.0, early_stopping_patience=2))
    assert r.stopped_early and "early stopping" in r.stopped_early and len(r.history) == 3


def test_config_validation_files_and_cli(tmp_path, capsys):
    with pytest.raises(VitkitError, match=r"--amp \(amp\): must be one of none, bf16, fp16, got 'fp8'"):
        TrainConfig(amp="fp8")
    with pytest.raises(VitkitError, match=r"--strategy \(strategy\): must be one of ddp, fsdp, got 'zero'"):
        TrainConfig(strategy="zero")
    with pytest.raises(VitkitError, match=r"--amp \(amp\): fp16 .* not supported with strategy fsdp; use bf16"):
        TrainConfig(strategy="fsdp", amp="fp16")
    yaml = "epochs: 3\nbetas: [0.9, 0.95]\nmodel: vit_nano_patch4_28\nmodel_args: {depth: 1}\n"
    (tmp_path / "c.yaml").write_text(yaml)
    cfg = TrainConfig.from_file(tmp_path / "c.yaml")
    assert cfg.epochs == 3 and cfg.betas == (0.9, 0.95) and cfg.model_args == "depth=1"
    (tmp_path / "bad.toml").write_text("epoch = 3\n")
    with pytest.raises(VitkitError, match="unknown training setting"):
        TrainConfig.from_file(tmp_path / "bad.toml")
    out = tmp_path / "cli"
    argv = ["--model", "vit_tiny_patch4_28", "--model-args", "depth=1,embed_dim=32,num_heads=2", "--img-size", "16"]
    argv += ["--max-train-samples", "32"]
    argv += ["--max-val-samples", "16", "--batch-size", "16", "--epochs", "1", "--progress", "none"]
    argv += ["--no-tensorboard", "--output-dir", str(out)]
    assert cli_main(["train", *argv]) == 0
    assert "finished:" in capsys.readouterr().out and (out / "best" / "model.safetensors").is_file()
    assert cli_main(["train", *argv]) == 2  # already a run there: a one-line error, not a traceback
    assert "already holds a training run" in capsys.readouterr().err


def _image_folder(root, n_per_class=8):
    from PIL import Image

    for split in ("train", "val"):
        for c, color in enumerate(((220, 30, 30), (30, 30, 220))):
            d = root / split / f"class{c}"
            d.mkdir(parents=True)
            for i in range(n_per_class):
                Image.new("RGBA" if i % 2 else "RGB", (20 + i, 18), (*color, 255)[: 4 if i % 2 else 3]).save(
                    d / f"{i}.png"
                )
    (root / "train" / "class0" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")


def test_image_folder_training_with_workers_and_bad_files(tmp_path):
    _image_folder(tmp_path / "imgs")
    cfg = tiny(
        tmp_path,
        data=f"folder:{tmp_path / 'imgs'}",
        model_args="depth=1,embed_dim=32,num_heads=2",
        max_train_samples=0,
        max_val_samples=0,
        batch_size=17,  # one batch: every training image, the broken one included
        epochs=1,
        num_workers=1,
    )
    with pytest.raises(VitkitError, match=r"broken\.jpg: cannot read image"):
        train(cfg)
    result = train(cfg.replace(skip_bad_images=True, overwrite_output_dir=True))
    assert result.history[-1]["skipped_images"] == 1
    model = vitkit.from_pretrained(result.best_checkpoint)
    assert model.config.in_chans == 3 and model.class_names == ["class0", "class1"]


def test_val_data_sharing_training_files_warns(tmp_path):
    from tests.data.conftest import class_folders

    data = class_folders(tmp_path / "data", {"a": 4, "b": 4})
    cfg = TrainConfig(model="vit_nano_patch4_28", data=f"folder:{data}", val_data=f"folder:{data / '..' / 'data'}")
    # the training split of a flat folder holds one image per class back: 6 of the 8 files are training files
    with pytest.warns(UserWarning, match=r"--val-data: 6 of 8 validation files are also training files"):
        loop_mod.build_datasets(cfg)
