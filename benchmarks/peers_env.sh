#!/usr/bin/env bash
# Build (or reuse) the environment the peer comparisons run in and print its path: timm with its torchvision and
# transformers beside the torch they install, so timm is a contender wherever it can run. vitkit itself is not
# installed there: the benchmarks run it from this checkout (PYTHONPATH=src), on the same torch as the peers, and
# every result records that torch's version.
#   VITKIT_PEERS_VENV  where the environment lives (default: benchmarks/.peers-venv; several GB)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VITKIT_PEERS_VENV:-benchmarks/.peers-venv}
if ! "$VENV/bin/python" -c "import timm, torchvision, transformers, safetensors, PIL" >/dev/null 2>&1; then
    python3 -m venv "$VENV" >&2
    "$VENV/bin/python" -m pip install -q --upgrade pip >&2
    "$VENV/bin/python" -m pip install -q timm transformers safetensors pillow numpy >&2
fi
"$VENV/bin/python" -c "import timm, torch, transformers; print(f'torch {torch.__version__}, timm {timm.__version__}, transformers {transformers.__version__}')" >&2
echo "$VENV"
