#!/usr/bin/env bash
# The main job: set up (if needed) and run the conformance suite on the embedded golden releases.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/pytest ] && .venv/bin/python -c "import vla_reference, pytest_vla" 2>/dev/null || bash scripts/setup.sh
status=0
for release in golden/dense golden/moe; do
  .venv/bin/pytest -p no:cacheprovider --vla-release="$release" "$@" || status=$?
done
exit $status
