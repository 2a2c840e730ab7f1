#!/usr/bin/env bash
# Set up (if needed) and run pytest-vla's own tests on 2 workers.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/pytest ] && .venv/bin/python -c "import vla_reference, pytest_vla" 2>/dev/null || bash scripts/setup.sh
exec .venv/bin/pytest -n 2 -q tests "$@"
