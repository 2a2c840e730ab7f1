"""Rank files are unpickled with tensors on the meta device, and only the model's tensors are
mapped from the file, at offsets checked against the archive's own records.

Two readers do it: the quick one (``_quickload``, the C unpickler with an allow-list of inert
globals), and, for any file it does not handle, torch's ``weights_only`` unpickler with
``map_location="meta"``. Both must give what a full ``torch.load`` gives."""

from __future__ import annotations

import zipfile

import pytest
import torch

from vla_reference import merge, reshard
from vla_reference.megatron import _safeload, load_pt
from vla_reference.megatron._rank_state import read_rank_file

from builders import assert_same, hf_tensors, llama, moe, write_model

QKV = "decoder.layers.0.self_attention.linear_qkv.weight"


@pytest.fixture
def rank(tmp_path):
    write_model(llama(), tmp_path / "hf", dtype=torch.bfloat16)
    reshard(tmp_path / "hf", tmp_path / "ckpt", tp=2, fsync=False)
    path = tmp_path / "ckpt/release/mp_rank_00/model_optim_rng.pt"
    state = torch.load(path, weights_only=True)
    g = torch.Generator().manual_seed(0)
    state["optimizer"] = {
        "state": {i: {"exp_avg": torch.randn(64, 32, generator=g)} for i in range(3)},
        "fp32_from_fp16_params": [[t.float() for t in list(state["model"].values())[:2]]],
    }
    state["model"][QKV] = state["model"][QKV][:, :16]  # a strided view: its storage is the whole matrix
    torch.save(state, path)
    return path


def for_torch_only(path):
    """Add a global torch allows and the quick reader does not know: the file goes to torch's reader."""
    state = torch.load(path, weights_only=True)
    state["device"] = torch.device("cpu")
    torch.save(state, path)


def calls_to_load_pt(monkeypatch):
    calls: list[bool] = []
    real = _safeload.load_pt

    def spy(path, *, meta=False, expect=None):
        calls.append(meta)
        return real(path, meta=meta, expect=expect)

    monkeypatch.setattr(_safeload, "load_pt", spy)
    return calls


def assert_model_views_of(fast, full):
    assert fast["model"].keys() == full["model"].keys()
    for key, t in full["model"].items():
        got = fast["model"][key]
        if not isinstance(t, torch.Tensor):
            assert got == t, key
            continue
        assert got.device.type == "cpu" and got.dtype == t.dtype and got.stride() == t.stride(), key
        assert torch.equal(got, t), key
    assert all(unread(s["exp_avg"]) for s in fast["optimizer"]["state"].values())
    master = fast["optimizer"]["fp32_from_fp16_params"][0][0]
    assert unread(master) and master.dtype == full["optimizer"]["fp32_from_fp16_params"][0][0].dtype


def unread(x):
    """Optimizer state stays unread: a meta tensor (torch's reader) or an inert description (the quick one)."""
    return x.is_meta if isinstance(x, torch.Tensor) else type(x).__name__ == "_Lazy"


def test_the_quick_reader_maps_model_tensors_and_leaves_the_optimizer_on_meta(rank, monkeypatch):
    calls = calls_to_load_pt(monkeypatch)
    fast = read_rank_file(rank).obj
    assert calls == []  # torch's unpickler was not needed
    full = load_pt(rank).obj
    assert_model_views_of(fast, full)
    assert fast["args"] == full["args"]
    assert (fast["iteration"], fast["checkpoint_version"]) == (full["iteration"], full["checkpoint_version"])


def test_torchs_reader_maps_model_tensors_and_leaves_the_optimizer_on_meta(rank, monkeypatch):
    for_torch_only(rank)
    calls = calls_to_load_pt(monkeypatch)
    fast = read_rank_file(rank).obj
    assert calls == [True]  # one meta load, no fallback to a full one
    assert fast["device"] == torch.device("cpu")
    assert_model_views_of(fast, load_pt(rank).obj)


def rezip_reversed(src, dst):
    with zipfile.ZipFile(src) as z:
        entries = [(i.filename, z.read(i)) for i in z.infolist()]
    with zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as z:
        for name, data in reversed(entries):
            z.writestr(name, data)


def test_an_archive_not_laid_out_by_torch_save(rank, tmp_path, monkeypatch):
    """Re-zipped with the records in reverse order: the quick reader finds records by name and
    reads it right; torch's computed offsets would be wrong, which the record check catches."""
    want = {k: t.clone() for k, t in load_pt(rank).obj["model"].items() if isinstance(t, torch.Tensor)}
    rezip_reversed(rank, tmp_path / "quick.pt")
    for_torch_only(rank)
    rezip_reversed(rank, tmp_path / "torch.pt")
    calls = calls_to_load_pt(monkeypatch)
    got = read_rank_file(tmp_path / "quick.pt").obj["model"]
    assert calls == []
    assert all(torch.equal(got[k], want[k]) for k in want)
    got = read_rank_file(tmp_path / "torch.pt").obj["model"]
    assert calls == [True, False]  # the offset check failed, so the file was loaded in full
    assert all(torch.equal(got[k], want[k]) for k in want)


def test_merge_reads_a_rezipped_checkpoint_correctly(tmp_path):
    write_model(llama(), tmp_path / "hf")
    reshard(tmp_path / "hf", tmp_path / "ckpt", tp=2, pp=2, fsync=False)
    for i, path in enumerate(sorted((tmp_path / "ckpt/release").glob("*/model_optim_rng.pt"))[:2]):
        if i:
            for_torch_only(path)
        rezip_reversed(path, path)
    merge(tmp_path / "ckpt", tmp_path / "back", fsync=False)
    assert_same(hf_tensors(tmp_path / "hf"), hf_tensors(tmp_path / "back"))


@pytest.mark.parametrize(
    "arch, layout",
    [(llama(), {"tp": 2, "pp": 2}), (llama(tied=True), {"tp": 4}), (moe(), {"tp": 2, "ep": 2})],
    ids=["llama-tp2-pp2", "tied-tp4", "moe-tp2-ep2"],
)
def test_both_readers_give_the_same_merge(arch, layout, tmp_path, monkeypatch):
    write_model(arch, tmp_path / "hf", dtype=torch.bfloat16)
    reshard(tmp_path / "hf", tmp_path / "ckpt", **layout, fsync=False)
    merge(tmp_path / "ckpt", tmp_path / "quick", fsync=False)
    for path in (tmp_path / "ckpt").rglob("model_optim_rng.pt"):
        for_torch_only(path)
    calls = calls_to_load_pt(monkeypatch)
    merge(tmp_path / "ckpt", tmp_path / "torch", fsync=False)
    assert calls and all(calls)  # every rank file went through torch's meta reader
    for name in ("model.safetensors", "config.json"):
        assert (tmp_path / "quick" / name).read_bytes() == (tmp_path / "torch" / name).read_bytes()


def test_a_later_rank_file_with_other_foreign_globals_is_read_with_its_stand_ins(tmp_path):
    """numpy's RNG state in one rank only: its globals become stand-ins there, not elsewhere."""
    import numpy

    write_model(llama(), tmp_path / "hf")
    reshard(tmp_path / "hf", tmp_path / "ckpt", tp=2, fsync=False)
    first, later = sorted((tmp_path / "ckpt/release").glob("*/model_optim_rng.pt"))
    state = torch.load(later, weights_only=True)
    state["rng_state"] = [{"np_rng_state": numpy.random.RandomState(0).get_state()}]
    torch.save(state, later)
    read_first = read_rank_file(first)
    assert not any(n.startswith("numpy.") for n in read_first.stand_ins)
    read_later = read_rank_file(later, read_first)
    assert any(n.startswith("numpy.") for n in read_later.stand_ins)
    state["device"] = torch.device("cpu")  # the same through torch's reader
    torch.save(state, later)
    assert read_rank_file(later, read_first).stand_ins == read_later.stand_ins
    merge(tmp_path / "ckpt", tmp_path / "back", fsync=False)
    assert_same(hf_tensors(tmp_path / "hf"), hf_tensors(tmp_path / "back"))


def test_what_other_libraries_add_to_torchs_allow_list_is_not_ours(tmp_path):
    """megatron-core, once imported, adds numpy's array constructors to torch's process-wide
    weights_only allow-list: our loads still stand numpy in, and leave the process's list as found."""
    import numpy

    write_model(llama(), tmp_path / "hf")
    reshard(tmp_path / "hf", tmp_path / "ckpt", tp=1, fsync=False)
    (f,) = (tmp_path / "ckpt/release").glob("*/model_optim_rng.pt")
    state = torch.load(f, weights_only=True)
    state["rng_state"] = [{"np_rng_state": numpy.random.RandomState(0).get_state()}]
    state["device"] = torch.device("cpu")  # past the quick reader: torch's own weights_only load
    torch.save(state, f)
    others = [numpy.core.multiarray._reconstruct, numpy.ndarray, numpy.dtype, type(numpy.dtype("uint32"))]
    before = torch.serialization.get_safe_globals()
    torch.serialization.add_safe_globals(others)
    try:
        loaded = load_pt(f)
        assert "numpy._core.multiarray._reconstruct" in loaded.stand_ins
        rng = loaded.obj["rng_state"][0]["np_rng_state"]
        assert not any(isinstance(x, numpy.ndarray) for x in rng), "numpy was unpickled for real"
        assert all(o in torch.serialization.get_safe_globals() for o in others)
    finally:
        torch.serialization.clear_safe_globals()
        torch.serialization.add_safe_globals(before)
