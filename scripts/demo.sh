#!/usr/bin/env bash
# The README's first command: set up a virtual environment, then train + evaluate a small ViT on the
# Fashion-MNIST sample that ships with vitkit (offline; about two minutes on 2 CPU cores).
# Extra arguments go to `vitkit demo` (e.g. `bash scripts/demo.sh --epochs 5 --output-dir /tmp/demo`).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q -c constraints-cpu.txt -e ".[plots]"
.venv/bin/vitkit demo "$@"
