#!/usr/bin/env bash
# Set up (if needed) and run pytest-vla's own tests on 2 workers. loadgroup: the megatron-core
# modules each run on one worker, so their module-scoped conversions and launches happen once.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/pytest ] && [ -f .venv/mcore-0.13.1/megatron/core/__init__.py ] &&
  .venv/bin/python -c "import vla_reference, pytest_vla, megatron.core, jsonschema" 2>/dev/null || bash scripts/setup.sh
exec .venv/bin/pytest -n 2 --dist loadgroup -q tests "$@"
