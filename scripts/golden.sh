#!/usr/bin/env bash
# The main job: set up (if needed) and run the conformance suite on the embedded golden releases.
# Each release's verdict is also written as a JSON report, an HTML report and JUnit XML in
# reports/ (gitignored): reports/<release>.json, .html, .junit.xml.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/pytest ] && .venv/bin/python -c "import vla_reference, pytest_vla" 2>/dev/null || bash scripts/setup.sh
mkdir -p reports
status=0
# golden/dense-ft is a fine-tune of golden/dense: a Hugging Face directory with changed weights
# and no training checkpoint, checked against its base (the checks that need --vla-baseline run);
# its verdict is partial by design (no checkpoint), which --vla-allow-partial accepts.
for release in golden/dense golden/moe golden/dense-ft; do
  name=$(basename "$release")
  extra=()
  [ "$name" = dense-ft ] && extra=(--vla-baseline=golden/dense --vla-allow-partial)
  .venv/bin/pytest -p no:cacheprovider --vla-release="$release" "${extra[@]}" \
    --vla-report="reports/$name.json" --vla-html="reports/$name.html" --junitxml="reports/$name.junit.xml" \
    "$@" || status=$?
done
echo "reports: $(ls reports/*.json reports/*.html | tr '\n' ' ')"
exit $status
