"""glibc malloc presets: the page faults they remove are counted in a fresh process (the settings are global)."""

import json
import platform
import subprocess
import sys

import pytest

from vitkit.engine.malloc import PRESETS, set_malloc

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

CHILD = """
import json, resource, sys
import torch
from vitkit.engine.malloc import set_malloc
applied = set_malloc(sys.argv[1])
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
x = torch.ones(10 * 2**20)  # 40 MiB: above every adaptive mmap threshold
for _ in range(2):  # warm-up: first touch faults in any case
    y = x * 2
    del y
per_call = []
for _ in range(3):  # the least of three windows: the kernel moves pages on its own now and then
    before = faults()
    for _ in range(5):
        y = x * 2
        del y
    per_call.append((faults() - before) / 5)
print(json.dumps({"applied": applied, "faults_per_call": min(per_call)}))
"""


def _faults_per_call(preset: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, preset], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_unknown_preset_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown malloc preset 'fast'; choose from default, pinned, tuned"):
        set_malloc("fast")
    assert set(PRESETS) == {"default", "pinned", "tuned"}


def test_default_changes_nothing():
    assert set_malloc("default") is False


def test_tuned_keeps_large_blocks_and_stops_the_page_faults():
    default, tuned = _faults_per_call("default"), _faults_per_call("tuned")
    assert default["applied"] is False and tuned["applied"] is GLIBC
    if GLIBC:  # a 40 MiB block is mmapped and faulted in page by page (10240 pages) on every call by default
        assert default["faults_per_call"] > 5000
        # tuned: none, mostly; some fresh processes on a busy VM still fault 2048 pages (8 MiB) of the 40 MiB per
        # call, so the test asks for "most faults gone", not zero
        assert tuned["faults_per_call"] < default["faults_per_call"] / 4
