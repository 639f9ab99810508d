#!/usr/bin/env bash
# Regenerate tests/fixtures/timm with timm in a separate venv (default /tmp/vitkit-timm-env; VITKIT_TIMM_ENV overrides).
# The first run installs the pinned torch/torchvision/timm from PyPI (several GB) there; the project venv is untouched.
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 tools/make_timm_fixtures.py "$@"
