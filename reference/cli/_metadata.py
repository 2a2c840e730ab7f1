"""The release-metadata commands of ``vla-release``: ``card`` (lint a model card) and ``manifest``.

``vla-release card PATH [--json] [--release DIR]`` prints the card's section statuses and its
findings, and exits 1 if there are any. ``vla-release manifest RELEASE`` writes or refreshes
``release.json``; with ``--check`` it verifies it instead and prints one table of mismatches.
``--version X`` also restates X wherever the model card states the release's version (front
matter, title, labels), so that one command bumps the release and its card together.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path

from ..card._card import CardReport, find_card, read_card
from ..card._lint import lint_card
from ..card._release import check_against_release, restate_card_version
from ..errors import LayoutError
from ..release._manifest import MANIFEST, mismatch_problems, mismatch_table, verify_manifest, write_manifest
from ..release._semver import VersionError, parse_version

__all__ = ["add_card_parser", "add_manifest_parser", "run_card", "run_manifest"]

Out = Callable[[str], None]


def _semver(text: str) -> str:
    try:
        parse_version(text)
    except VersionError as e:
        raise argparse.ArgumentTypeError(f"{e.detail}; {e.fix}") from None
    return text


def _iso_date(text: str) -> str:
    try:
        dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date as YYYY-MM-DD") from None
    if len(text) != 10:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date as YYYY-MM-DD")
    return text


def add_card_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    c = sub.add_parser("card", help="lint a model card: required sections, placeholders, BibTeX")
    c.add_argument("path", type=Path, help="the card file (README.md, MODEL_CARD.md), or a model or release directory")
    c.add_argument("--json", action="store_true", help='print {"sections": {KEY: status}, "findings": [...]}')
    c.add_argument(
        "--release", type=Path, metavar="DIR", help="also check the card against this release (version, license...)"
    )


def add_manifest_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    m = sub.add_parser("manifest", help="write or refresh release.json: every file's size and SHA-256")
    m.add_argument("release", type=Path, help="the release directory")
    m.add_argument("--name", help="release name (kept from release.json when not given)")
    m.add_argument(
        "--version",
        type=_semver,
        help="release version, strict SemVer (kept when not given); also written where the model card states it",
    )
    m.add_argument("--date", type=_iso_date, help="release date YYYY-MM-DD (kept when not given)")
    m.add_argument("--check", action="store_true", help="verify release.json instead of writing it; exit 1 on problems")


def run_card(args: argparse.Namespace, out: Out) -> int:
    """Lint the card; 0 when there is nothing to report, 1 otherwise (ReleaseError propagates)."""
    path = find_card(args.path)
    if path is None:
        raise LayoutError("no model card (README.md or MODEL_CARD.md)", path=args.path, fix="pass the card file")
    card = read_card(path)
    report = lint_card(card)
    if args.release is not None:
        extra = check_against_release(card, args.release)
        report = CardReport(report.path, report.sections, report.findings + extra)
    root = path.parent
    if args.json:
        out(json.dumps(report.to_json(root), indent=2, ensure_ascii=False))
        return 1 if report.findings else 0
    out(f"{path}: " + ", ".join(f"{key} {status}" for key, status in report.sections.items()))
    for f in report.findings:
        out(f"  [{f.section or '-'}] {f.problem.render(root)}")
    out(f"{len(report.findings)} finding(s)" if report.findings else "no findings")
    return 1 if report.findings else 0


def run_manifest(args: argparse.Namespace, out: Out) -> int:
    """Write (or with --check, verify) release.json; 1 when the check finds problems."""
    root: Path = args.release
    if not root.is_dir():
        raise LayoutError("not a release directory", path=root, fix="pass the directory that holds model/")
    if args.check:
        problems, rows = verify_manifest(root)
        problems += mismatch_problems(root, rows)
        for p in problems:
            out(p.render(root))
        if rows:
            out("")
            out(mismatch_table(rows))
        out(f"{len(problems)} problem(s)" if problems else f"{root / MANIFEST}: every file listed and intact")
        return 1 if problems else 0
    if args.version is not None:
        restate_card_version(root, args.version, out)
    manifest = write_manifest(root, name=args.name, version=args.version, date=args.date)
    total = sum(int(e["size"]) for e in manifest["files"].values())
    out(f"wrote {root / MANIFEST}: {len(manifest['files'])} files, {total} bytes")
    return 0
