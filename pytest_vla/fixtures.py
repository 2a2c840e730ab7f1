"""Public fixtures: a downstream team's own tests request these (see docs/fixtures.md)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, TypeAlias

import pytest

from vla_reference import merge, tokenizer_vocab_size
from vla_reference.card import ModelCard, find_card, read_card
from vla_reference.errors import ReleaseError
from vla_reference.megatron import MegatronSource, TorchDistSource, find_checkpoint, write_megatron
from vla_reference.release import Release

from .cache import ArtefactCache
from .findings import Findings, fail
from .session import SESSION_KEY, VLASession

__all__ = [
    "vla_session",
    "vla_release",
    "vla_baseline",
    "vla_artefacts",
    "vla_model_dir",
    "vla_checkpoint_dir",
    "vla_checkpoint",
    "vla_rank_checkpoint",
    "vla_merged_checkpoint",
    "vla_model",
    "vla_tokenizer",
    "vla_tokenizer_package",
    "vla_baseline_tokenizer_package",
    "vla_raw_tokenizer",
    "vla_card",
]


@pytest.fixture(scope="session")
def vla_session(request: pytest.FixtureRequest) -> VLASession:
    """pytest-vla's run state: options, area tallies."""
    return request.config.stash[SESSION_KEY]


@pytest.fixture(scope="session")
def vla_release(vla_session: VLASession) -> Release:
    """The release under test (``--vla-release``); skips when none was given."""
    release = vla_session.release
    if release is None:
        pytest.skip("no --vla-release given")
    return release


@pytest.fixture
def vla_manifest(vla_release: Release) -> dict[str, Any]:
    """``release.json`` of the release under test, parsed; skips when it is missing or unreadable,
    which ``test_manifest_entries_well_formed`` reports, naming the file (one defect, one failure)."""
    try:
        return vla_release.manifest
    except ReleaseError as e:
        # Why skip: test_manifest_entries_well_formed fails on a missing or unreadable release.json, naming it.
        pytest.skip(f"release.json is unreadable (reported by test_manifest_entries_well_formed): {e}")


@pytest.fixture(scope="session")
def vla_baseline(vla_session: VLASession) -> Release:
    """The release this one derives from (``--vla-baseline``); skips when none was given."""
    baseline = vla_session.baseline
    if baseline is None:
        pytest.skip("no --vla-baseline given")
    return baseline


@pytest.fixture(scope="session")
def vla_artefacts(vla_session: VLASession) -> ArtefactCache:
    """The content-keyed artefact cache (outside the release), shared by xdist workers."""
    return vla_session.cache


def _required(release: Release, part: str) -> Path:
    try:
        return release.require(part)
    except ReleaseError as e:
        Findings("release part", release.root).fail_on(e, "release part missing")


@pytest.fixture(scope="session")
def vla_model_dir(vla_release: Release) -> Path:
    """``model/``: the Hugging Face inference checkpoint (required)."""
    return _required(vla_release, "model")


@pytest.fixture(scope="session")
def vla_checkpoint_dir(vla_release: Release) -> Path:
    """``checkpoint/``: the Megatron training checkpoint; skips for an inference-only release."""
    path = vla_release.part("checkpoint")
    if path is None:
        # Why skip: checkpoint/ is optional (an inference-only release); the sharded side needs it.
        pytest.skip(f"no Megatron checkpoint at {vla_release.root / 'checkpoint'} (optional part)")
    return path


def _true_vocab(release: Release) -> int | None:
    tok = release.root / "model" / "tokenizer.json"
    try:
        return tokenizer_vocab_size(tok) if tok.is_file() else None
    except ReleaseError:
        return None


Checkpoint: TypeAlias = MegatronSource | TorchDistSource


def open_checkpoint(release: Release, path: Path, *, verify: bool) -> Checkpoint:
    """Open the training checkpoint, in either format; the true vocabulary comes from its args,
    else the release tokenizer."""
    src: Checkpoint
    if find_checkpoint(path).format == "torch_dist":
        src = TorchDistSource.open(path)
    else:
        src = MegatronSource.open(path, verify=verify)
    if src.arch.vocab_size is None:
        vocab = _true_vocab(release)
        if vocab is not None and vocab <= src.arch.padded_vocab_size:
            src.arch = src.arch.with_vocab(vocab)
    return src


@pytest.fixture(scope="session")
def vla_checkpoint(vla_release: Release, vla_checkpoint_dir: Path) -> Checkpoint:
    """The training checkpoint opened lazily (mmap), in either format (a ``MegatronSource`` for
    rank files, a ``TorchDistSource`` for torch_dist); skips if its layout cannot be read."""
    try:
        return open_checkpoint(vla_release, vla_checkpoint_dir, verify=True)
    except ReleaseError as e:
        pytest.skip(f"cannot open the checkpoint (reported by test_checkpoint_layout): {e}")


@pytest.fixture(scope="session")
def vla_rank_checkpoint(
    vla_checkpoint: Checkpoint, vla_checkpoint_dir: Path, vla_artefacts: ArtefactCache
) -> MegatronSource:
    """The training checkpoint as rank files at its recorded layout (what the sharded forward's
    ranks load): the checkpoint itself in the torch format; a torch_dist checkpoint is layout-free,
    so it is split at its recorded layout as megatron-core does when it loads one (cached by content)."""
    if isinstance(vla_checkpoint, MegatronSource):
        return vla_checkpoint
    src = vla_checkpoint
    key = vla_artefacts.digest(vla_checkpoint_dir, salt=f"vocab={src.arch.vocab_size}")
    # its TP, PP and EP; virtual stages only reorder the pipeline's work, which the forward's
    # result does not depend on (the rank writer writes none)
    layout = dataclasses.replace(src.layout, vpp=1)
    name = f"torch-dist-ranks-tp{layout.tp}-pp{layout.pp}-ep{layout.ep}"
    try:
        ranks = vla_artefacts.build(key, name, lambda dst: write_megatron(src, dst, layout, fsync=False))
        out = MegatronSource.open(ranks, verify=False)
    except ReleaseError as e:
        Findings("cannot split the torch_dist checkpoint at its layout").fail_on(e, "torch_dist checkpoint")
    if out.arch.vocab_size is None and src.arch.vocab_size is not None:
        out.arch = out.arch.with_vocab(src.arch.vocab_size)
    return out


@pytest.fixture(scope="session")
def vla_merged_checkpoint(
    vla_checkpoint: MegatronSource, vla_checkpoint_dir: Path, vla_artefacts: ArtefactCache
) -> Path:
    """The training checkpoint merged to a Hugging Face directory (cached by content).

    Replicated parameters are taken from rank 0 here; their agreement is a check of its own.
    """
    key = vla_artefacts.digest(vla_checkpoint_dir, salt=f"vocab={vla_checkpoint.arch.vocab_size}")

    def build(dst: Path) -> None:
        merge(vla_checkpoint_dir, dst, vocab_size=vla_checkpoint.arch.vocab_size, verify=False, fsync=False)

    try:
        return vla_artefacts.build(key, "merged", build)
    except ReleaseError as e:
        Findings("cannot merge the training checkpoint").fail_on(e, "cannot merge the training checkpoint")


@pytest.fixture(scope="session")
def vla_model(vla_model_dir: Path) -> Any:
    """The shipped model in stock transformers (``AutoModelForCausalLM``, no remote code), in eval mode."""
    from transformers import AutoModelForCausalLM

    from vla_reference.hf import HFSource

    try:
        HFSource(vla_model_dir)  # config.json describes the weights: transformers builds whatever it says
    except ReleaseError as e:
        Findings("the shipped model does not load as written").fail_on(e, "the shipped model does not load as written")
    try:
        model = AutoModelForCausalLM.from_pretrained(vla_model_dir, trust_remote_code=False)
    except Exception as e:  # noqa: BLE001 - transformers raises many types; name the directory
        fail(
            f"transformers cannot load {vla_model_dir}",
            f"{type(e).__name__}: {e}",
            file=vla_model_dir,
            fix="make AutoModelForCausalLM.from_pretrained(model/) load without remote code",
        )
    return model.eval()


@pytest.fixture(scope="session")
def vla_tokenizer(vla_model_dir: Path) -> Any:
    """The shipped tokenizer through ``transformers.AutoTokenizer``; skips without tokenizer.json."""
    if not (vla_model_dir / "tokenizer.json").is_file():
        pytest.skip(f"no tokenizer package at {vla_model_dir / 'tokenizer.json'}")
    from transformers import AutoTokenizer

    from vla_reference.tokenizer import probe_tokenizer

    try:
        tok = AutoTokenizer.from_pretrained(vla_model_dir, trust_remote_code=False)
    except Exception as e:  # noqa: BLE001 - transformers raises many types; name the directory instead
        fail(
            "transformers cannot load the tokenizer",
            f"{type(e).__name__}: {e}",
            file=vla_model_dir,
            fix="rebuild the package with vla_reference.tokenizer.write_tokenizer_package",
        )
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is not None:
        try:
            probe_tokenizer(backend, vla_model_dir / "tokenizer.json")
        except ReleaseError as e:
            Findings("tokenizer package").fail_on(e, "the tokenizer crashes")
    return tok


@pytest.fixture(scope="session")
def vla_tokenizer_package(vla_model_dir: Path) -> Any:
    """The tokenizer package of ``model/`` as written, file by file (``vla_reference.tokenizer.TokenizerPackage``)."""
    from vla_reference.tokenizer import read_tokenizer_package

    return read_tokenizer_package(vla_model_dir)


@pytest.fixture(scope="session")
def vla_baseline_tokenizer_package(vla_baseline: Release) -> Any:
    """The baseline's tokenizer package as written; skips without ``--vla-baseline``."""
    from vla_reference.tokenizer import read_tokenizer_package

    return read_tokenizer_package(vla_baseline.root / "model")


@pytest.fixture(scope="session")
def vla_raw_tokenizer(vla_tokenizer_package: Any) -> Any:
    """``model/tokenizer.json`` loaded by ``tokenizers`` alone, as a non-transformers runtime sees it.

    Skips when tokenizer.json is absent or unparsable (the package check reports it), or when
    tokenizers cannot load it or crashes on it (test_transformers_loads_the_tokenizer reports that):
    one defect, one failure.
    """
    if not vla_tokenizer_package.readable("tokenizer.json"):
        pytest.skip(f"no readable {vla_tokenizer_package.path('tokenizer.json')} (reported by test_package_complete)")
    try:
        return vla_tokenizer_package.load()
    except ReleaseError as e:
        # Why skip: test_transformers_loads_the_tokenizer fails on this error, naming tokenizer.json.
        pytest.skip(f"tokenizers cannot use tokenizer.json (reported by test_transformers_loads_the_tokenizer): {e}")


@pytest.fixture(scope="session")
def vla_card(vla_release: Release) -> ModelCard:
    """The model card (``model/README.md`` or ``MODEL_CARD.md``) parsed; skips without one.

    A missing or unreadable card is reported by ``test_card_present``.
    """
    path = find_card(vla_release.root)
    if path is None:
        pytest.skip(f"no model card at {vla_release.root / 'model' / 'README.md'} (reported by test_card_present)")
    try:
        return read_card(path)
    except ReleaseError as e:
        pytest.skip(f"cannot read the model card (reported by test_card_present): {e}")
