"""The benchmark's plumbing on a tiny ViT: JSON schema, same weights as transformers, ratios, CLI (never timings)."""

import argparse
import json

import pytest
import torch

import vitkit
from vitkit import bench
from vitkit.bench.machine import resolve_device
from vitkit.bench.memory import measure_memory
from vitkit.bench.report import SCHEMA
from vitkit.cli import main as cli_main
from vitkit.cli.bench import add_arguments, run
from vitkit.engine.quantize import quantize_dynamic_int8
from vitkit.errors import VitkitError
from vitkit.kernels import compiler

TINY_VIT = ["--set", "embed_dim=32", "--set", "depth=2", "--set", "num_heads=2", "--set", "patch_size=8"]
FAST = ["--img-size", "32", "--batch-size", "2", "--threads", "1", "--warmup", "1", "--iters", "1", "--repeats", "2"]


def _parse(argv):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def test_cli_run_writes_json_and_table(tmp_path, capsys):
    pytest.importorskip("transformers")
    args = _parse(["vit_base_patch16_224", *TINY_VIT, *FAST, "--compare", "--no-memory", "--out", str(tmp_path), "-q"])
    assert run(args) == 0
    (path,) = tmp_path.glob("*.json")
    assert path.name.startswith("vit_base_patch16_224_cpu-") and path.with_suffix(".md").is_file()
    r = json.loads(path.read_text())
    assert r["schema"] == SCHEMA
    assert r["settings"]["input_size"] == [3, 32, 32] and r["settings"]["overrides"]["depth"] == 2
    assert r["matmul_gflops"]["fp32"] > 0
    assert r["settings"]["malloc"] == "default" and r["settings"]["malloc_applied"] is False
    assert any("native kernel attention" in line for line in r["optimization"])
    assert r["flops"]["params"] == vitkit.create_model("vit_base_patch16_224", **r["settings"]["overrides"],
                                                       img_size=32).num_params()  # fmt: skip
    assert r["flops"]["train_gflops_per_image"] > 2 * 2 * r["flops"]["gmacs_per_image"]
    names = {(x["name"], x["task"]) for x in r["results"]}
    assert names == {
        ("vitkit", "infer"),  # optimized: inference only
        ("vitkit[reference]", "infer"),
        ("transformers", "infer"),
        ("vitkit[reference]", "train"),
        ("transformers", "train"),
    }
    assert r["settings"]["peer_adamw"] == "default"
    adamw = {x["name"]: x["adamw"] for x in r["results"] if x["task"] == "train"}
    assert adamw == {"vitkit[reference]": "fused", "transformers": "default"}  # vitkit's trainer vs a plain loop
    for x in r["results"]:
        assert x["img_per_s"] > 0 and len(x["repeat_img_per_s"]) == 2
        assert 0 < x["latency_ms_p50"] <= x["latency_ms_p90"]
        assert x["gflops_per_s"] > 0 and x["frac_of_matmul_peak"] > 0
        assert x["peak_mem_mb"] is None and x["mem_method"] == "not measured"
        assert x["page_faults_per_batch"] >= 0
        # same weights: transformers' logits equal vitkit's
        assert x["max_abs_logit_diff_vs_first"] < 1e-4
    rows = {(q["task"], q["dtype"], q["vitkit"]) for q in r["ratios"]}
    assert rows == {
        ("infer", "fp32", "vitkit"),
        ("infer", "fp32", "vitkit[reference]"),
        ("train", "fp32", "vitkit[reference]"),
    }
    q = r["ratios"][0]
    assert q["vitkit"] == "vitkit" and q["mode"] == "optimized"
    assert q["speed_ratio"] == pytest.approx(q["vitkit_img_per_s"] / q["peer_img_per_s"], rel=1e-2)
    ours, peer = ({x["name"]: x for x in r["results"] if x["task"] == q["task"]}[n] for n in ("vitkit", "transformers"))
    rounds = [a / b for a, b in zip(ours["repeat_img_per_s"], peer["repeat_img_per_s"], strict=True)]
    assert q["round_ratios"] == pytest.approx(rounds, abs=1e-3) and len(rounds) == 2
    assert min(rounds) - 1e-3 <= q["round_ratio_median"] <= max(rounds) + 1e-3
    out = capsys.readouterr().out
    assert "| vitkit | infer |" in out and "speed ratio" in out and "per-round ratios" in out
    assert "page faults / batch" in out and "malloc default" in out and "native kernel calls / batch" in out
    assert "avx" in out or "neon" in out or "none listed" in out  # the CPU's features are named
    assert bench.round_range(q).startswith(f"{q['round_ratio_median']:.2f} (")


def test_results_count_the_native_kernels_that_ran():
    kw = dict(depths=(1, 1), num_heads=(2, 2), embed_dim=32, window_size=4)
    args = dict(img_size=32, batch_size=2, tasks=("infer",), warmup=1, iters=1, repeats=1, memory=False)
    r = bench.benchmark("swin_tiny_patch2_window4_32", modes=("optimized", "reference"), overrides=kw, **args)
    got = {x["name"]: x for x in r["results"]}
    if compiler() is not None:
        assert got["vitkit"]["kernel_calls_per_batch"] == {"window_attention": 2.0}  # one per block
    assert got["vitkit[reference]"]["kernel_calls_per_batch"] == {}
    assert r["machine"]["cpu_features"].keys() >= {"avx2", "avx512", "avx512_bf16", "amx_bf16"}


def test_modes_run_and_agree_with_eager():
    r = bench.benchmark(
        "vit_nano_patch4_28",
        batch_size=2,
        threads=1,
        modes=("optimized", "reference", "int8", "onnx", "bf16-weights"),
        dtypes=("fp32", "bf16"),
        tasks=("infer",),
        warmup=1,
        iters=1,
        repeats=1,
        memory=False,
    )
    got = {x["name"]: x for x in r["results"]}
    assert set(got) == {
        "vitkit",
        "vitkit[bf16]",
        "vitkit[reference]",
        "vitkit[reference,bf16]",
        "vitkit[int8]",
        "vitkit[onnx]",
        "vitkit[bf16-weights,bf16]",
    }  # int8, onnx: fp32 only; bf16-weights: bf16 only
    assert got["vitkit[onnx]"]["max_abs_logit_diff_vs_first"] < 1e-4
    assert 0 < got["vitkit[bf16]"]["max_abs_logit_diff_vs_first"] < 0.5
    assert 0 < got["vitkit[bf16-weights,bf16]"]["max_abs_logit_diff_vs_first"] < 0.5
    assert got["vitkit[onnx]"]["setup_s"] > 0 and got["vitkit"]["peak_mem_mb"] is None
    assert r["ratios"] == []  # no peers


def test_int8_quantises_every_linear_and_keeps_predictions_close():
    model = vitkit.create_model("vit_nano_patch4_28").eval()
    q = quantize_dynamic_int8(model)
    assert not any(type(m) is torch.nn.Linear for m in q.modules())
    assert any(type(m) is torch.nn.Linear for m in model.modules())  # the original is untouched
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        ref, out = model(x), q(x)
    assert (out - ref).abs().max() < 0.05 * ref.abs().max() + 1e-3


def test_bad_arguments_are_clear_errors():
    with pytest.raises(VitkitError, match="unknown model"):
        bench.benchmark("vit_nope", memory=False)
    with pytest.raises(VitkitError, match="mode"):
        bench.benchmark("vit_nano_patch4_28", modes=("turbo",), memory=False)
    with pytest.raises(VitkitError, match="CUDA"):
        if not torch.cuda.is_available():
            resolve_device("cuda")
        else:
            raise VitkitError("CUDA is available; nothing to check")
    with pytest.raises(SystemExit):
        _parse(["vit_nano_patch4_28", "--dtype", "fp8"])
    with pytest.raises(SystemExit):
        _parse(["vit_nano_patch4_28", "--malloc", "fast"])
    with pytest.raises(VitkitError, match="malloc"):
        bench.benchmark("vit_nano_patch4_28", malloc="fast", memory=False)
    assert cli_main(["bench", "vit_nope", "--no-memory"]) == 2


def test_memory_is_measured_in_a_subprocess_for_a_peer():
    pytest.importorskip("transformers")
    job = {
        "model": "vit_base_patch16_224",
        "spec": {"impl": "transformers", "mode": "eager", "dtype": "fp32"},
        "img_size": 32,
        "overrides": {"embed_dim": 32, "depth": 2, "num_heads": 2, "patch_size": 8},
        "device": "cpu",
        "threads": 1,
        "batch_size": 2,
        "num_classes": 1000,
        "task": "infer",
        "iters": 1,
    }
    r = measure_memory(job, timeout=120)
    assert r["peak_mem_mb"] > 0, r
    assert r["mem_method"].startswith("VmHWM")


def test_memory_grows_with_the_batch():
    # each measurement in its own process: in this (pytest) process earlier tests' freed memory would be reused
    job = {
        "model": "vit_nano_patch4_28",
        "spec": {"impl": "vitkit", "mode": "reference", "dtype": "fp32"},
        "img_size": None,
        "overrides": {},
        "device": "cpu",
        "threads": 1,
        "batch_size": 16,
        "num_classes": 10,
        "task": "train",
        "iters": 1,
    }
    small = measure_memory(job, timeout=120)
    big = measure_memory(job | {"batch_size": 256}, timeout=120)
    assert 0 < small["peak_mem_mb"] < big["peak_mem_mb"], (small, big)
    assert 0 < small["run_mem_mb"] < big["run_mem_mb"]
