"""``vla-release``: pack releases; merge, reshard and inspect checkpoints; lint model cards; write manifests.

Exit codes: 0 success, 1 a conversion error (the message names the file and key) or findings
(``card``, ``manifest --check``), 2 usage.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..errors import LayoutError, ReleaseError
from ..hf._safetensors import parse_size
from ._metadata import add_card_parser, add_manifest_parser, run_card, run_manifest

__all__ = ["main", "build_parser"]


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be >= 1")
    return value


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vla-release", description=__doc__.splitlines()[0])
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    sub = p.add_subparsers(dest="command", required=True)

    def vocab_opts(sp: argparse.ArgumentParser) -> None:
        g = sp.add_mutually_exclusive_group()
        g.add_argument("--vocab-size", type=_positive, help="true vocabulary size (strips Megatron's padding rows)")
        g.add_argument("--tokenizer", type=Path, help="tokenizer.json (or its directory) giving the vocabulary size")

    def out_opts(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--overwrite", action="store_true", help="replace DST if it exists")
        sp.add_argument("--no-fsync", dest="fsync", action="store_false", help="skip fsync before the final rename")

    m = sub.add_parser("merge", help="Megatron checkpoint -> Hugging Face directory")
    m.add_argument("src", type=Path)
    m.add_argument("dst", type=Path)
    m.add_argument("--max-shard-size", type=_size, default=parse_size("5GB"), help="default 5GB")
    vocab_opts(m)
    out_opts(m)

    r = sub.add_parser("reshard", help="Hugging Face (or Megatron) -> Megatron checkpoint at TP/PP/EP")
    r.add_argument("src", type=Path)
    r.add_argument("dst", type=Path)
    r.add_argument("--tp", type=_positive, required=True)
    r.add_argument("--pp", type=_positive, required=True)
    r.add_argument("--ep", type=_positive, default=1)
    r.add_argument("--iteration", type=int, default=None, help="write iter_NNNNNNN/ instead of release/")
    r.add_argument(
        "--format",
        choices=("torch", "torch_dist"),
        default="torch",
        help="Megatron's --ckpt-format: one model_optim_rng.pt per rank (default), or torch_dist",
    )
    r.add_argument(
        "--make-vocab-size-divisible-by",
        type=_positive,
        default=None,
        help="pad the vocabulary as the training run will (Megatron's flag; default: the source's, else 128)",
    )
    vocab_opts(r)
    out_opts(r)

    i = sub.add_parser("inspect", help="layout, hyperparameters and per-key shapes and split rules")
    i.add_argument("src", type=Path)
    i.add_argument("--json", action="store_true", help="machine-readable output")
    i.add_argument(
        "--args",
        action="store_true",
        help="print only the training arguments the checkpoint records, as arguments.json holds them",
    )
    vocab_opts(i)
    add_pack_parser(sub)
    add_snapshots_parser(sub)
    add_card_parser(sub)
    add_manifest_parser(sub)
    return p


def add_snapshots_parser(sub: Any) -> None:
    s = sub.add_parser(
        "snapshots",
        help="re-record a release's preprocessing snapshots (and refresh release.json) after a processor change",
        description="Record the preprocessing snapshots with the release's own processor, under its version or "
        "--version X (also written into release.json and the card), then refresh release.json. A preprocessing "
        "change under the version the snapshots were recorded for is refused.",
    )
    s.add_argument("release", type=Path, help="the release directory")
    s.add_argument("--version", help="record under this version (a preprocessing change needs at least a minor bump)")
    s.add_argument(
        "--resave-processor",
        action="store_true",
        help="first rewrite the processor configs as save_pretrained(from_pretrained(model/)) writes them",
    )

    r = sub.add_parser(
        "remerge",
        help="re-merge a release's checkpoint/ into model/ as pack does (keeps the tokenizer, processor, card)",
        description="Merge checkpoint/ into model/ with the bos/eos/pad IDs of model/'s tokenizer and the "
        "norm_stats of its processor in config.json (what a bare merge cannot know), keep model/'s other files, "
        "then refresh release.json.",
    )
    r.add_argument("release", type=Path, help="the release directory")
    lg = sub.add_parser(
        "logits",
        help="recompute golden/expected_logits.safetensors as pack does, and refresh release.json",
        description="The expected logits of the release's eval set: the sharded forward over real ranks from "
        "checkpoint/, or the reference forward of model/ when the release has no checkpoint.",
    )
    lg.add_argument("release", type=Path, help="the release directory")


def _rederive(args: argparse.Namespace) -> int:
    """``snapshots``, ``remerge``, ``logits``: one part of a release derived again from the others."""
    from ..release import recompute_logits, remerge_model, rerecord_snapshots

    def log(m: str) -> None:
        if not args.quiet:
            print(f"vla-release {args.command}: {m}", file=sys.stderr)

    try:
        if args.command == "snapshots":
            done = rerecord_snapshots(
                args.release, version=args.version, resave_processor=args.resave_processor, log=log
            )
            print(f"recorded {done['written']} snapshots under {done['version']}: {len(done['changed'])} changed")
        elif args.command == "remerge":
            print(f"re-merged {remerge_model(args.release, log=log)} into {args.release / 'model'}")
        else:
            how = recompute_logits(args.release, log=log)
            print(f"wrote {args.release / 'golden/expected_logits.safetensors'}: {how}")
    except ReleaseError as e:
        print(f"vla-release: error: {e}", file=sys.stderr)
        return 1
    return 0


def add_pack_parser(sub: Any) -> None:
    k = sub.add_parser(
        "pack",
        help="training outputs (or a fine-tuned Hugging Face directory) -> a release, then the suite on it",
        description="Write a release at OUT from a Megatron checkpoint (--checkpoint) or a Hugging Face "
        "directory (--hf) and the other inputs, in a staging directory renamed into place; then run the "
        "conformance suite on it and exit with its verdict (0: conforms).",
    )
    k.add_argument("out", type=Path, help="the release directory to write")
    src = k.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--checkpoint", type=Path, help="the Megatron training checkpoint (torch or torch_dist, any layout)"
    )
    src.add_argument("--hf", type=Path, help="a Hugging Face model directory (a fine-tune with no Megatron checkpoint)")
    k.add_argument(
        "--tokenizer", type=Path, required=True, help="the tokenizer package's directory (or tokenizer.json)"
    )
    k.add_argument("--processor", type=Path, help="processor_config.json or its directory (none: a text-only release)")
    k.add_argument("--card", type=Path, required=True, help="the model card (README.md)")
    k.add_argument("--name", required=True)
    k.add_argument("--version", required=True, help="X.Y.Z (SemVer)")
    k.add_argument("--date", help="YYYY-MM-DD (default: SOURCE_DATE_EPOCH's day, else today, UTC)")
    for part in ("configs", "docker", "scripts", "examples"):
        k.add_argument(f"--{part}", type=Path, help=f"a directory shipped as the release's {part}/")
    k.add_argument("--eval-set", type=Path, help="eval_set.json (default: the golden texts through the tokenizer)")
    k.add_argument(
        "--baseline", type=Path, help="the release this one follows: refuses a version that understates the change"
    )
    k.add_argument("--max-shard-size", type=_size, default=parse_size("5GB"), help="default 5GB")
    k.add_argument("--no-check", dest="check", action="store_false", help="do not run the conformance suite after")
    k.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    k.add_argument("--no-fsync", dest="fsync", action="store_false", help="skip fsync before the final rename")


class _Progress:
    """A byte-count progress bar on stderr (tqdm), silent when not wanted."""

    def __init__(self, enabled: bool, desc: str) -> None:
        self._bar: Any = None
        if enabled:
            from tqdm import tqdm

            self._bar = tqdm(desc=desc, unit="B", unit_scale=True, file=sys.stderr, leave=False)

    def __call__(self, n: int) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _inspect(args: argparse.Namespace, out: Callable[[str], None]) -> None:
    from .._convert import describe_source, open_source
    from ..megatron._legacy import MegatronSource

    src = open_source(args.src, vocab_size=args.vocab_size, tokenizer=args.tokenizer)
    if args.args:
        from ..megatron import args_record

        recorded = getattr(src, "args", None)
        if recorded is None:
            raise LayoutError(
                f"{args.src} is not a Megatron checkpoint: it records no training arguments", path=args.src
            )
        out(json.dumps(args_record(recorded), indent=2, sort_keys=True))
        return
    info = describe_source(src)
    rows: list[dict[str, Any]] = []
    from ..converter._split_rules import rule_for

    for key in src.keys():
        rule, _, _ = rule_for(key)
        full = src.get(key, meta=True)
        split = rule.split.value + (f"/{rule.fused.value}" if rule.fused.value != "none" else "")
        rows.append(
            {"key": key, "shape": list(full.shape), "dtype": str(full.dtype).removeprefix("torch."), "split": split}
        )
    if isinstance(src, MegatronSource):
        by_key = {k: (shape, local) for k, _, shape, local in src.shard_keys()}
        for row in rows:
            shape, local = by_key[row["key"]]
            row["rank_shape"], row["stored_as"] = list(shape), local
    info["tensors"] = rows
    if args.json:
        out(json.dumps(info, indent=2, default=str))
        return
    for k in ("source", "format", "architecture", "layout", "iteration", "checkpoint_version", "dialects", "args_from"):
        if k in info:
            out(f"{k + ':':<20}{info[k]}")
    for note in info["assumed"]:
        out(f"{'assumed:':<20}{note}")
    out("hyperparameters:")
    for k, v in sorted(info["arch"].items()):
        out(f"  {k:<40}{v}")
    width = max(len(r["key"]) for r in rows)
    out(f"{'key':<{width}}  {'shape':<16} {'dtype':<9} {'split':<15} rank shape")
    for r in rows:
        out(
            f"{r['key']:<{width}}  {str(tuple(r['shape'])):<16} {r['dtype']:<9} {r['split']:<15} "
            f"{tuple(r.get('rank_shape', r['shape']))}"
        )


def _pack(args: argparse.Namespace) -> int:
    import subprocess

    from ..release import pack
    from ..release._pack import suite_command

    try:
        pack(
            args.out,
            checkpoint=args.checkpoint,
            hf=args.hf,
            tokenizer=args.tokenizer,
            processor=args.processor,
            card=args.card,
            name=args.name,
            version=args.version,
            date=args.date,
            configs=args.configs,
            docker=args.docker,
            scripts=args.scripts,
            examples=args.examples,
            eval_set=args.eval_set,
            baseline=args.baseline,
            max_shard_size=args.max_shard_size,
            overwrite=args.overwrite,
            fsync=args.fsync,
            log=(lambda m: None) if args.quiet else (lambda m: print(f"vla-release pack: {m}", file=sys.stderr)),
        )
    except ReleaseError as e:
        print(f"vla-release: error: {e}", file=sys.stderr)
        return 1
    print(f"vla-release pack: wrote {args.out}", file=sys.stderr)
    if not args.check:
        return 0
    return subprocess.run(suite_command(args.out, args.baseline), check=False).returncode


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code.

    Example:
        >>> main(["inspect", "golden/dense/checkpoint"])  # doctest: +SKIP
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    logging.basicConfig(level=logging.WARNING, format="vla-release: %(levelname)s: %(message)s")
    if args.command == "pack":
        return _pack(args)
    if args.command in ("snapshots", "remerge", "logits"):
        return _rederive(args)
    if args.command in ("card", "manifest"):
        try:
            return (run_card if args.command == "card" else run_manifest)(args, print)
        except ReleaseError as e:
            print(f"vla-release: error: {e}", file=sys.stderr)
            return 1
    from .._convert import merge, reshard

    progress = _Progress(not args.quiet and args.command != "inspect" and sys.stderr.isatty(), args.command)
    try:
        if args.command == "merge":
            merge(
                args.src,
                args.dst,
                vocab_size=args.vocab_size,
                tokenizer=args.tokenizer,
                max_shard_size=args.max_shard_size,
                overwrite=args.overwrite,
                fsync=args.fsync,
                progress=progress,
            )
        elif args.command == "reshard":
            reshard(
                args.src,
                args.dst,
                tp=args.tp,
                pp=args.pp,
                ep=args.ep,
                vocab_size=args.vocab_size,
                tokenizer=args.tokenizer,
                iteration=args.iteration,
                make_vocab_size_divisible_by=args.make_vocab_size_divisible_by,
                ckpt_format=args.format,
                overwrite=args.overwrite,
                fsync=args.fsync,
                progress=progress,
            )
        else:
            _inspect(args, print)
    except ReleaseError as e:
        print(f"vla-release: error: {e}", file=sys.stderr)
        return 1
    finally:
        progress.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
