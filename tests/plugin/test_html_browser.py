"""The HTML report as a person sees it: rendered by headless Chromium, with no network.

For a conforming release and a failing one (image preprocessing changed: a failing snapshot with
its pictures), Chromium loads the report from disk and the test reads what it shows: the verdict
text at the top, the failing rule's row and finding, and that every image decoded (the test's copy
of the page gets a probe script; the report itself has none). A screenshot of each is written too.

Chromium is Debian's ``chromium`` package; ``.ci/run`` installs it and sets
``VLA_REQUIRE_BROWSER=1``, so in CI a missing browser fails. Elsewhere the test skips, saying so.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import GOLDEN

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
PROBE = """<script>
addEventListener('load', () => {
  const imgs = [...document.images].map(i => [i.alt, i.complete, i.naturalWidth, i.naturalHeight]);
  const v = document.getElementById('verdict');
  const box = v.getBoundingClientRect();
  document.body.setAttribute('data-probe', JSON.stringify({imgs, verdict: v.innerText, top: box.top}));
});
</script>"""


def _browser() -> str:
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    if os.environ.get("VLA_REQUIRE_BROWSER"):
        pytest.fail(f"no browser ({', '.join(BROWSERS)}) on PATH, VLA_REQUIRE_BROWSER is set: apt-get install chromium")
    pytest.skip(f"no headless browser here ({', '.join(BROWSERS)} not on PATH); CI installs chromium and runs this")


def _chromium(browser: str, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--no-first-run",
            "--disable-dev-shm-usage",
            f"--user-data-dir={tmp / 'profile'}",
            "--virtual-time-budget=5000",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _shown(browser: str, page: Path, tmp: Path) -> tuple[str, dict]:
    """The DOM Chromium rendered from ``page`` (with the probe) and what the probe saw."""
    probed = tmp / f"probed-{page.name}"
    probed.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    done = _chromium(browser, tmp, "--dump-dom", probed.as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    found = dom.split('data-probe="', 1)
    assert len(found) == 2, f"the probe did not run: {dom[:500]}"
    import html

    probe = json.loads(html.unescape(found[1].split('"', 1)[0]))
    return dom, probe


def _screenshot(browser: str, page: Path, tmp: Path, out: Path) -> None:
    from PIL import Image

    done = _chromium(browser, tmp, f"--screenshot={out}", "--window-size=1200,1400", page.as_uri())
    assert done.returncode == 0 and out.is_file(), done.stderr[-2000:]
    with Image.open(out) as im:
        assert im.size == (1200, 1400)
        assert len(im.convert("RGB").getcolors(1 << 20) or []) > 8, "a blank screenshot"


@pytest.fixture(scope="module")
def browser() -> str:
    return _browser()


def test_a_conforming_report_shows_its_verdict_first(browser, run_suite, tmp_path):
    run = run_suite(GOLDEN / "dense")
    page = tmp_path / "conforming.html"
    page.write_text(run.html)
    dom, probe = _shown(browser, page, tmp_path)
    assert probe["verdict"] == "VLA-Driver-Tiny-Dense v1.0.0: CONFORMS"
    assert probe["top"] < 120, "the verdict is not at the top of the page"
    assert "Failures" not in dom
    assert all(complete and w > 0 and h > 0 for _, complete, w, h in probe["imgs"]), probe["imgs"]
    _screenshot(browser, page, tmp_path, tmp_path / "conforming.png")


def test_a_failing_report_shows_the_rule_the_finding_and_the_images(browser, golden_copy, run_suite, tmp_path):
    from test_preprocessing_meta import CONFIG_BREAKS, edit_config

    release = golden_copy("dense")
    edit_config(release, CONFIG_BREAKS["mean-std-switched"][0])
    run = run_suite(release, "-m", "preprocessing", "-k", "image_edges or image_red")
    page = tmp_path / "failing.html"
    page.write_text(run.html)
    dom, probe = _shown(browser, page, tmp_path)
    assert probe["verdict"].startswith("VLA-Driver-Tiny-Dense v1.0.0: DOES NOT CONFORM (2 failures: VLA-PRE-002)")
    assert probe["top"] < 120
    assert "<code>VLA-PRE-002</code>" in dom and "test_matches_snapshot[image_edges]" in dom
    assert "processor config image_processor.image_mean" in dom
    shown = [alt for alt, complete, w, h in probe["imgs"] if complete and w > 0 and h > 0]
    assert shown == [a for a, *_ in probe["imgs"]], probe["imgs"]  # every image decoded
    assert shown.count("expected") == shown.count("actual") == shown.count("difference") == 2, shown
    _screenshot(browser, page, tmp_path, tmp_path / "failing.png")
