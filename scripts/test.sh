#!/usr/bin/env bash
# Set up (if needed) and run pytest-vla's own tests on 2 workers. loadgroup: the megatron-core
# modules each run on one worker, so their module-scoped conversions and launches happen once.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/pytest ] && [ -f .venv/mcore-0.13.1/megatron/core/__init__.py ] &&
  .venv/bin/python -c "import vla_reference, pytest_vla, megatron.core, jsonschema" 2>/dev/null || bash scripts/setup.sh
# A container's CPU quota (docker --cpus) is not in nproc: torch would start a thread per host core in
# each worker and rank process, and the quota would throttle them all. Run within the quota.
if [ -z "${OMP_NUM_THREADS:-}" ] && [ -r /sys/fs/cgroup/cpu.max ] && read -r quota period </sys/fs/cgroup/cpu.max &&
  [ "$quota" != max ] && [ $(((quota + period - 1) / period)) -lt "$(nproc)" ]; then
  export OMP_NUM_THREADS=$(((quota + 2 * period - 1) / (2 * period)))  # per worker, of 2
fi
exec .venv/bin/pytest -n 2 --dist loadgroup -q tests "$@"
