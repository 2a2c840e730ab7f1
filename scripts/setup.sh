#!/usr/bin/env bash
# Create .venv and install pytest-vla with every dependency pinned by constraints.txt
# (torch==2.13.0 there keeps pip from resolving a multi-GB CUDA build).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q -c constraints.txt torch==2.13.0
.venv/bin/python -m pip install -q -c constraints.txt -e ".[dev,test]"
# an older megatron-core beside the venv's, for tests/mcore/test_mcore_releases.py (formats drift
# between releases); its own dependencies are the venv's
.venv/bin/python -m pip install -q --no-deps --target .venv/mcore-0.13.1 megatron-core==0.13.1
