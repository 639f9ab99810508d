"""benchmarks/isa_caps.sh: which caps and arguments each run gets (a stand-in for the peers' Python records them)."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_each_cap_runs_speed_py_with_its_caps_and_dtypes(tmp_path):
    venv, log = tmp_path / "peers", tmp_path / "calls.log"
    (venv / "bin").mkdir(parents=True)
    python = venv / "bin" / "python"
    python.write_text(  # "-c" checks pass; a run records its caps and arguments
        '#!/bin/sh\n[ "$1" = -c ] && exit 0\n'
        f'echo "ONEDNN=$ONEDNN_MAX_CPU_ISA ATEN=$ATEN_CPU_CAPABILITY ARCH=$VITKIT_KERNEL_ARCH $*" >> {log}\n'
    )
    python.chmod(0o755)
    env = {**os.environ, "VITKIT_PEERS_VENV": str(venv), "OUT": str(tmp_path / "out"), "RUNS": "infer-b8 train-b32"}
    for name in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "VITKIT_KERNEL_ARCH"):
        env.pop(name, None)
    done = subprocess.run(["bash", "benchmarks/isa_caps.sh"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    calls = log.read_text().splitlines()
    assert len(calls) == 4  # two runs x two caps
    bf16, avx2 = [c for c in calls if "infer" in c]
    assert bf16.startswith("ONEDNN=AVX512_CORE_BF16 ATEN= ARCH= ") and "--dtype fp32,bf16" in bf16
    assert avx2.startswith("ONEDNN=AVX2 ATEN=avx2 ARCH=-march=x86-64-v3 ") and "--dtype fp32 " in avx2
    assert f"--out {tmp_path}/out/isa-avx2/infer-b8" in avx2 and "vit_base_patch16_224" in avx2
    train = [c for c in calls if "train" in c]
    assert all("--train-batch-size 32" in c and "vit_base_patch16_224" not in c for c in train)
