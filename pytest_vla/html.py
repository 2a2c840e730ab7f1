"""The HTML report: one self-contained file, read without a script, rendered from the JSON report.

The verdict first; a table of areas; every failure with its findings (file, key, fix); then
per check the pictures a reader would rather look at than read, as inline SVG or PNG: the
distribution of |Δlogit| per parity layout, the round-trip map of tensors by layouts, the
expected, actual and difference images of a failing image snapshot, the token-ID changes
against the baseline. Passing rows sit in closed ``<details>``; long series are downsampled.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Sequence
from typing import Any, Final

__all__ = ["render_html", "MAX_ROUND_TRIP_ROWS"]

MAX_ROUND_TRIP_ROWS: Final = 80  # tensors shown in the round-trip map (the differing ones first)
MAX_TABLE_ROWS: Final = 200  # rows of a measured table (token changes, hash mismatches) shown
_COLORS: Final = {"passed": "#1a7f37", "failed": "#cf222e", "skipped": "#6e7781"}
_STYLE: Final = """
body{
  font:14px/1.45 system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;
  margin:24px auto;
  max-width:1100px;
  color:#1f2328;
  padding:0 16px;
}
h1{font-size:22px;margin:0 0 4px}
h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #d0d7de;padding-bottom:4px}
h3{font-size:15px;margin:18px 0 6px}
.verdict{font-size:20px;font-weight:700;padding:12px 16px;border-radius:6px;margin:12px 0}
.CONFORMS{background:#dafbe1;color:#1a7f37}
.DOES{background:#ffebe9;color:#cf222e}
.NOT{background:#fff8c5;color:#7d4e00}
table{border-collapse:collapse;width:100%;margin:6px 0 12px;font-size:13px}
th,td{border:1px solid #d0d7de;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f6f8fa}
code{
  font:12px ui-monospace,SFMono-Regular,Menlo,monospace;
  background:#f6f8fa;
  padding:1px 4px;
  border-radius:4px;
}
.passed{color:#1a7f37}
.failed{color:#cf222e;font-weight:600}
.skipped{color:#6e7781}
.meta{color:#57606a;font-size:12px}
details{margin:6px 0}
summary{cursor:pointer}
figure{margin:8px 0}
figcaption{font-size:12px;color:#57606a}
.imgs img{image-rendering:pixelated;border:1px solid #d0d7de;margin-right:8px}
td code{overflow-wrap:anywhere;white-space:normal}
code.rule{white-space:nowrap;overflow-wrap:normal}
table.findings{table-layout:fixed}
table.findings td{overflow-wrap:anywhere}
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _table(
    head: Sequence[str],
    rows: Iterable[Sequence[Any]],
    raw: bool = False,
    *,
    cls: str = "",
    widths: Sequence[int] = (),
) -> str:
    style = [f' style="width:{w}%"' for w in widths] or [""] * len(head)
    cells = "".join(f"<th{w}>{_e(h)}</th>" for h, w in zip(head, style, strict=True))
    body = "".join("<tr>" + "".join(f"<td>{c if raw else _e(c)}</td>" for c in row) + "</tr>" for row in rows)
    klass = f' class="{cls}"' if cls else ""
    return f"<table{klass}><thead><tr>{cells}</tr></thead><tbody>{body}</tbody></table>"


def _findings(findings: list[dict[str, Any]]) -> str:
    rows = []
    for f in findings:
        where = ":".join(str(x) for x in (f.get("file"), f.get("line")) if x is not None)
        rows.append(
            [
                _e(f.get("what")),
                _e(f.get("observed")),
                _e(f.get("expected")),
                f"<code>{_e(where)}</code>" if where else "",
                f"<code>{_e(f.get('key'))}</code>" if f.get("key") else "",
                _e(f.get("fix")),
            ]
        )
    head = ["what", "observed", "expected", "file", "key", "fix"]
    return _table(head, rows, raw=True, cls="findings", widths=(14, 28, 14, 18, 10, 16))


def _histogram_svg(edges: Sequence[float], counts: Sequence[int], atol: float | None) -> str:
    """Bars of |Δlogit| counts over log-spaced bins, the tolerance as a red line."""
    w, h, pad = 520, 140, 28
    n = max(len(counts), 1)
    top = max(max(counts, default=0), 1)
    bw = (w - 2 * pad) / n
    bars = []
    for i, c in enumerate(counts):
        bh = (h - 2 * pad) * (math.log10(c + 1) / math.log10(top + 1))
        x = pad + i * bw
        bars.append(
            f'<rect x="{x:.1f}" y="{h - pad - bh:.1f}" width="{max(bw - 1, 1):.1f}" height="{bh:.1f}" fill="#0969da">'
            f"<title>{edges[i]:.1e}–{edges[i + 1]:.1e}: {c}</title></rect>"
        )
    marks = []
    for i in range(0, n + 1, max(n // 5, 1)):
        x = pad + i * bw
        marks.append(f'<text x="{x:.1f}" y="{h - 8}" font-size="10" text-anchor="middle">{edges[i]:.0e}</text>')
    line = ""
    if atol and edges[0] < atol < edges[-1]:
        frac = (math.log10(atol) - math.log10(edges[0])) / (math.log10(edges[-1]) - math.log10(edges[0]))
        x = pad + frac * (w - 2 * pad)
        line = (
            f'<line x1="{x:.1f}" y1="{pad / 2}" x2="{x:.1f}" y2="{h - pad}" stroke="#cf222e" stroke-dasharray="4 3"/>'
            f'<text x="{x + 4:.1f}" y="{pad / 2 + 8}" font-size="10" fill="#cf222e">atol</text>'
        )
    axis = f'<line x1="{pad}" y1="{h - pad}" x2="{w - pad}" y2="{h - pad}" stroke="#57606a"/>'
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" role="img" '
        f'aria-label="distribution of |Δlogit|">{axis}{"".join(bars)}{"".join(marks)}{line}</svg>'
    )


def _parity(measured: dict[str, Any]) -> str:
    parts = []
    for label, m in measured.items():
        hist = m.get("histogram") or {}
        svg = _histogram_svg(hist.get("edges", [1e-9, 1]), hist.get("counts", []), m.get("tolerance", {}).get("atol"))
        rows = [
            [
                s["name"],
                s["tokens"],
                f"{s['max_abs']:.3g}",
                f"{s['top1']:.1%}",
                f"pos {s['worst'][0]}, id {s['worst'][1]}",
                "ok" if s["within"] else "OUT",
            ]
            for s in m.get("sequences", [])
        ]
        parts.append(
            f"<figure>{svg}<figcaption>{_e(label)}: |Δlogit| over every position and vocabulary id (log bins, "
            f"log counts)</figcaption></figure>" + _table(["sequence", "tokens", "max |Δ|", "top-1", "worst", ""], rows)
        )
    return "".join(parts)


def _severity(status: float | str | None) -> float:
    """How far a tensor's round-trip status is from equal: 0 equal, its max |Δ|, inf for a
    missing, extra or reshaped tensor."""
    if status is None:
        return 0.0
    return float(status) if isinstance(status, (int, float)) else math.inf


def _round_trip_svg(layouts: dict[str, dict[str, float | str]]) -> str:
    names = sorted({t for tensors in layouts.values() for t in tensors})
    names.sort(key=lambda t: -max(_severity(layouts[lay].get(t)) for lay in layouts))  # differing first
    shown = names[:MAX_ROUND_TRIP_ROWS]
    cols = list(layouts)
    cw, rh, left, top = 90, 14, 420, 20
    w, h = left + cw * len(cols) + 10, top + rh * len(shown) + 10
    cells = [
        f'<text x="{left + i * cw + cw / 2}" y="14" font-size="11" text-anchor="middle">{_e(c)}</text>'
        for i, c in enumerate(cols)
    ]
    for j, name in enumerate(shown):
        y = top + j * rh
        cells.append(f'<text x="{left - 6}" y="{y + 11}" font-size="10" text-anchor="end">{_e(name[-64:])}</text>')
        for i, c in enumerate(cols):
            diff = layouts[c].get(name)
            color = "#d0d7de" if diff is None else "#2da44e" if diff == 0 else "#cf222e"
            if diff is None:
                tip = "not compared"
            elif isinstance(diff, str):
                tip = diff
            else:
                tip = "equal" if diff == 0 else f"differs, max |Δ| {diff:.3g}"
            cells.append(
                f'<rect x="{left + i * cw + 2}" y="{y + 1}" width="{cw - 4}" height="{rh - 2}" fill="{color}">'
                f"<title>{_e(name)} @ {_e(c)}: {tip}</title></rect>"
            )
    more = len(names) - len(shown)
    note = f'<text x="4" y="{h - 2}" font-size="10">… {more} more tensors, all equal</text>' if more else ""
    height = h + (12 if more else 0)
    return f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{height}">{"".join(cells)}{note}</svg>'


def _images(measured: dict[str, Any]) -> str:
    parts = []
    for output, imgs in measured.items():
        figs = "".join(
            f'<figure style="display:inline-block"><img alt="{_e(kind)}" src="data:image/png;base64,{imgs[kind]}" '
            f'width="128"><figcaption>{_e(kind)}</figcaption></figure>'
            for kind in ("expected", "actual", "difference")
            if kind in imgs
        )
        parts.append(f"<h3>{_e(output)}</h3><div class=imgs>{figs}</div>")
    return "".join(parts)


def _measured(check: dict[str, Any]) -> str:
    m = check.get("measured") or {}
    out = []
    if "parity" in m:
        out.append(_parity(m["parity"]))
    if "round_trip" in m:
        out.append(
            f"<figure>{_round_trip_svg(m['round_trip'])}<figcaption>tensors × layouts: green equal, red "
            "differing (hover for max |Δ|)</figcaption></figure>"
        )
    if "snapshot_images" in m:
        out.append(_images(m["snapshot_images"]))
    if "token_changes" in m:
        rows = [
            [
                r.get("token"),
                " ".join(map(str, r.get("baseline_ids", []))) or "—",
                " ".join(map(str, r.get("release_ids", []))) or "—",
                r.get("change"),
                "; ".join(r.get("flags", [])),
            ]
            for r in m["token_changes"][:MAX_TABLE_ROWS]
        ]
        more = len(m["token_changes"]) - len(rows)
        out.append(
            "<h3>token IDs against the baseline</h3>"
            + _table(["token", "baseline IDs", "IDs", "change", "flags"], rows)
            + (f'<p class="meta">… {more} more rows in the JSON report</p>' if more > 0 else "")
        )
    if "snapshot_differences" in m:
        out.append("<ul>" + "".join(f"<li><code>{_e(d)}</code></li>" for d in m["snapshot_differences"]) + "</ul>")
    if "hash_mismatches" in m:
        rows = [
            [r.get("path"), r.get("listed_size"), r.get("actual_size"), r.get("listed_sha256"), r.get("actual_sha256")]
            for r in m["hash_mismatches"][:MAX_TABLE_ROWS]
        ]
        out.append(_table(["file", "listed size", "size", "listed sha256", "sha256"], rows))
    return "".join(out)


def render_html(report: dict[str, Any]) -> str:
    """The report as one HTML page (no network, no script)."""
    release = report.get("release") or {}
    title = f"{release.get('name') or '?'} v{release.get('version') or '?'}"
    verdict = report["verdict"]
    env = report.get("environment", {})
    libs = ", ".join(f"{k} {v}" for k, v in env.get("libraries", {}).items())
    head = (
        f"<h1>pytest-vla: {_e(title)}</h1>"
        f'<div class="verdict {verdict.split()[0]}" id="verdict">{_e(report.get("verdict_line", verdict))}</div>'
        f'<p class="meta">release date {_e(release.get("date"))} · {_e(release.get("path"))}<br>'
        f"Python {_e(env.get('python'))} on {_e(env.get('cpu'))} ({_e(env.get('machine'))}, "
        f"{_e(env.get('cpu_count'))} CPUs, {_e(env.get('torch_threads'))} torch threads) · {_e(libs)}</p>"
    )
    coverage = report.get("coverage", {})
    area_rows = []
    for area, t in report.get("summary", {}).items():
        why = coverage.get(area)
        area_rows.append(
            [
                _e(area),
                f'<span class="passed">{t["passed"]}</span>',
                f'<span class="failed">{t["failed"]}</span>' if t["failed"] else "0",
                f'<span class="skipped">{t["skipped"]}</span>',
                _e("checked" if why is None else f"not checked: {why}"),
            ]
        )
    areas = "<h2>Areas</h2>" + _table(["area", "passed", "failed", "skipped", "coverage"], area_rows, raw=True)
    checks = report.get("checks", [])
    failed = [c for c in checks if c["status"] == "failed"]
    failures = ""
    if failed:
        blocks = [
            f'<div class="failure" id="{_e(c["nodeid"])}"><h3><code>{_e(c.get("rule"))}</code> {_e(c["nodeid"])}</h3>'
            f"<p>{_e(c.get('reason'))}</p>{_findings(c.get('findings', []))}{_measured(c)}</div>"
            for c in failed
        ]
        failures = "<h2>Failures</h2>" + "".join(blocks)
    per_area = ["<h2>Checks</h2>"]
    for area in report.get("summary", {}):
        mine = [c for c in checks if c["area"] == area]
        if not mine:
            continue
        rows = [
            [
                f"<code class=rule>{_e(c.get('rule'))}</code>",
                _e(c["nodeid"].rpartition("::")[2]),
                f'<span class="{c["status"]}">{c["status"]}</span>',
                f"{c['duration_s']:.2f} s",
                _e(c.get("reason")),
            ]
            for c in mine
        ]
        pictures = "".join(_measured(c) for c in mine if c["status"] != "failed")
        bad = any(c["status"] == "failed" for c in mine)
        body = _table(["rule", "check", "status", "time", "note"], rows, raw=True) + pictures
        per_area.append(
            f"<details{' open' if bad else ''}><summary>{_e(area)} ({len(mine)} checks)</summary>{body}</details>"
        )
    return (
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
        f"<title>{_e(title)}: {_e(verdict)}</title><style>{_STYLE}</style></head><body>"
        + head
        + areas
        + failures
        + "".join(per_area)
        + f'<p class="meta">pytest-vla report, schema {_e(report.get("schema_version"))}</p></body></html>\n'
    )
