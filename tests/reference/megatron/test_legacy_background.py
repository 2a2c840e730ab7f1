"""merge(background=True) reads the later pipeline stages on a thread while the first ones are written.

The tiny test checkpoints load in milliseconds, so each test holds the last stage's rank files
back (a gate on reading a rank file) until a chosen moment: the plan is then made from the first rank
file's dtypes, errors in the last stage arrive after bytes were written, and the tied-head check
waits for ``finish``. Whatever the timing, the output must be the bytes a fully read checkpoint
gives, and a failure must leave nothing behind.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import pytest
import torch

from vla_reference import LayoutError, MalformedFileError, ShardMismatchError, merge, open_source, reshard
from vla_reference.hf import _checkpoint as hf_module
from vla_reference.hf import write_hf
from vla_reference.megatron import MegatronSource
from vla_reference.megatron import _legacy as megatron_module

from builders import assert_same, hf_tensors, llama, moe, write_model

LAST_STAGE = "mp_rank_00_001", "mp_rank_01_001"


def rewrite(path: Path, edit) -> None:
    state = torch.load(path, weights_only=True)
    edit(state)
    torch.save(state, path)


def files(root: Path) -> dict[str, str]:
    """Every file's sha256 (a failure prints digests, not megabytes of bytes)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def no_loader_left() -> bool:
    return not any(t.name == "vla-megatron-load" and t.is_alive() for t in threading.enumerate())


class Gate:
    """Holds back reading the last pipeline stage until ``open()``."""

    def __init__(self, monkeypatch) -> None:
        self.event = threading.Event()
        self.held: list[str] = []
        real = megatron_module.read_rank_file

        def load(path: Path, *args):
            if path.parent.name in LAST_STAGE:
                self.held.append(path.parent.name)
                assert self.event.wait(30), "the gate was never opened"
            return real(path, *args)

        monkeypatch.setattr(megatron_module, "read_rank_file", load)

    def open(self) -> None:
        self.event.set()

    def open_after_plan(self, monkeypatch) -> None:
        real = hf_module._plan

        def plan(src, family):
            units = real(src, family)
            self.open()
            return units

        monkeypatch.setattr(hf_module, "_plan", plan)


@pytest.fixture
def ckpt(tmp_path):
    write_model(llama(), tmp_path / "hf", dtype=torch.bfloat16)
    reshard(tmp_path / "hf", tmp_path / "ckpt", tp=2, pp=2, fsync=False)
    return tmp_path / "ckpt"


@pytest.mark.parametrize(
    ("arch", "tp", "pp", "ep"),
    [(llama(), 2, 2, 1), (llama(num_layers=4), 1, 4, 1), (llama(tied=True), 2, 2, 1), (moe(), 2, 2, 2)],
    ids=["tp2-pp2", "pp4", "tied", "moe-ep2"],
)
def test_background_merge_writes_the_bytes_of_a_full_read(tmp_path, arch, tp, pp, ep):
    write_model(arch, tmp_path / "hf")
    reshard(tmp_path / "hf", tmp_path / "ckpt", tp=tp, pp=pp, ep=ep, fsync=False)
    merge(tmp_path / "ckpt", tmp_path / "background", fsync=False, background=True)
    src = open_source(tmp_path / "ckpt")  # every rank read before anything is written
    write_hf(src, tmp_path / "eager", fsync=False)
    assert_same(hf_tensors(tmp_path / "hf"), hf_tensors(tmp_path / "background"))  # names a tensor that differs
    assert_same(hf_tensors(tmp_path / "hf"), hf_tensors(tmp_path / "eager"))
    assert files(tmp_path / "background") == files(tmp_path / "eager")
    assert no_loader_left()


def test_plan_is_made_before_the_last_stage_is_read(ckpt, tmp_path, monkeypatch):
    gate = Gate(monkeypatch)
    seen: list[tuple[str, bool]] = []
    real_plan = hf_module._plan

    def plan(src, family):
        seen.extend((k, src.loaded(k)) for k in src.keys())
        return real_plan(src, family)

    monkeypatch.setattr(hf_module, "_plan", plan)
    gate.open_after_plan(monkeypatch)  # wraps the spy: the gate opens once the plan is made
    merge(ckpt, tmp_path / "out", fsync=False, background=True)
    assert ("decoder.final_layernorm.weight", False) in seen  # planned while stage 1 was held back
    assert sorted(set(gate.held)) == sorted(LAST_STAGE)
    assert_same(hf_tensors(tmp_path / "hf"), hf_tensors(tmp_path / "out"))


def test_a_dtype_other_than_planned_rewrites_everything(ckpt, tmp_path, monkeypatch):
    """The last stage keeps its final norm in fp32: the plan (from stage 0, all bf16) is wrong."""
    key = "decoder.final_layernorm.weight"
    for name in LAST_STAGE:
        rewrite(
            ckpt / "release" / name / "model_optim_rng.pt",
            lambda s: s["model"].__setitem__(key, s["model"][key].float()),
        )
    passes = []
    real_write = hf_module._write_hf
    monkeypatch.setattr(hf_module, "_write_hf", lambda *a, **kw: passes.append(1) or real_write(*a, **kw))
    gate = Gate(monkeypatch)
    gate.open_after_plan(monkeypatch)
    counted: list[int] = []
    merge(ckpt, tmp_path / "out", fsync=False, background=True, progress=counted.append)
    assert len(passes) == 2  # the first pass stopped at the fp32 norm and was dropped
    out = hf_tensors(tmp_path / "out")
    assert out["model.norm.weight"].dtype == torch.float32
    want = hf_tensors(tmp_path / "hf")
    assert torch.equal(out["model.norm.weight"], want["model.norm.weight"].float())
    assert_same(
        {k: v for k, v in want.items() if k != "model.norm.weight"},
        {k: v for k, v in out.items() if k != "model.norm.weight"},
    )
    total = sum(t.numel() * t.element_size() for t in out.values())
    assert sum(counted) == total  # progress counts each byte once across both passes
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.tmp")] == []


def test_a_bad_last_stage_fails_after_writing_began_and_leaves_nothing(ckpt, tmp_path, monkeypatch):
    path = ckpt / "release" / LAST_STAGE[1] / "model_optim_rng.pt"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    gate = Gate(monkeypatch)
    writes: list[int] = []
    real_stream = hf_module.Writer.stream

    def stream(self, fd, items, **kw):
        def watched():
            for item in items:
                if not callable(item):
                    writes.append(item[0])
                    gate.open()  # the first tensor is out: now let the truncated file be read
                yield item

        return real_stream(self, fd, watched(), **kw)

    monkeypatch.setattr(hf_module.Writer, "stream", stream)
    with pytest.raises(MalformedFileError, match=r"mp_rank_01_001/model_optim_rng\.pt"):
        merge(ckpt, tmp_path / "out", fsync=False, background=True)
    assert writes  # the failure arrived after the first bytes were written
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.tmp")] == []
    assert no_loader_left()


def test_tied_head_checked_at_finish_when_the_last_stage_comes_late(tmp_path, monkeypatch):
    write_model(llama(tied=True), tmp_path / "hf")
    reshard(tmp_path / "hf", tmp_path / "ckpt", tp=2, pp=2, fsync=False)
    for name in LAST_STAGE:
        rewrite(
            tmp_path / "ckpt/release" / name / "model_optim_rng.pt",
            lambda s: s["model"]["output_layer.weight"].mul_(2),
        )
    gate = Gate(monkeypatch)
    real_get = MegatronSource.get

    def get(self, key, *, meta=False):
        rows = real_get(self, key, meta=meta)
        if key == "embedding.word_embeddings.weight" and not meta:
            assert self._tied_check_pending  # the head copy was not read yet
            gate.open()
        return rows

    monkeypatch.setattr(MegatronSource, "get", get)
    with pytest.raises(ShardMismatchError, match=r"copy of the tied embedding differs.*mp_rank_00_001.*output_layer"):
        merge(tmp_path / "ckpt", tmp_path / "out", fsync=False, background=True)
    assert not (tmp_path / "out").exists()


def test_a_parameter_in_two_stages_is_refused(ckpt, tmp_path):
    key = "decoder.final_layernorm.weight"
    norm = torch.load(ckpt / "release" / LAST_STAGE[0] / "model_optim_rng.pt", weights_only=True)["model"][key]
    rewrite(ckpt / "release/mp_rank_00_000/model_optim_rng.pt", lambda s: s["model"].__setitem__(key, norm))
    pattern = (
        r"stages 0 and 1 both hold this parameter \(also in .*mp_rank_00_000.*mp_rank_0._001.*:decoder.final_layernorm"
    )
    with pytest.raises(LayoutError, match=pattern):
        open_source(ckpt)
    with pytest.raises(LayoutError, match=pattern):
        merge(ckpt, tmp_path / "out", fsync=False, background=True)
    assert not (tmp_path / "out").exists()


def test_close_stops_the_loader(ckpt, monkeypatch):
    gate = Gate(monkeypatch)
    src = MegatronSource.open(ckpt, background=True)
    assert not src.loaded("decoder.final_layernorm.weight")
    gate.open()
    src.close()
    assert no_loader_left()
