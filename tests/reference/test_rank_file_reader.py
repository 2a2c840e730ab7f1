"""Rank files are unpickled with tensors on the meta device, and only the model's tensors are
mapped from the file, at offsets checked against the archive's own records."""

from __future__ import annotations

import zipfile

import pytest
import torch

from vla_reference import _safeload, merge, reshard
from vla_reference._safeload import load_pt
from vla_reference.megatron import _read_rank_file

from builders import llama, write_model
from test_roundtrip import assert_same, hf_tensors


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
    state["model"]["decoder.layers.0.self_attention.linear_qkv.weight"] = state["model"][
        "decoder.layers.0.self_attention.linear_qkv.weight"
    ][:, :16]  # a strided view: its storage is the whole matrix
    torch.save(state, path)
    return path


def calls_to_load_pt(monkeypatch):
    calls: list[bool] = []
    real = _safeload.load_pt

    def spy(path, *, meta=False, expect=None):
        calls.append(meta)
        return real(path, meta=meta, expect=expect)

    monkeypatch.setattr(_safeload, "load_pt", spy)
    return calls


def test_model_tensors_are_file_views_and_the_optimizer_stays_on_meta(rank, monkeypatch):
    calls = calls_to_load_pt(monkeypatch)
    fast = _read_rank_file(rank).obj
    assert calls == [True]  # one meta load, no fallback to a full one
    full = load_pt(rank).obj
    assert fast["model"].keys() == full["model"].keys()
    for key, t in full["model"].items():
        got = fast["model"][key]
        assert got.device.type == "cpu" and got.dtype == t.dtype and got.stride() == t.stride(), key
        assert torch.equal(got, t), key
    assert all(s["exp_avg"].is_meta for s in fast["optimizer"]["state"].values())
    assert fast["optimizer"]["fp32_from_fp16_params"][0][0].is_meta


def test_an_archive_not_laid_out_by_torch_save_is_read_the_slow_way(rank, tmp_path, monkeypatch):
    """Re-zipped with the records in reverse order: torch's computed offsets would be wrong."""
    with zipfile.ZipFile(rank) as z:
        entries = [(i, z.read(i)) for i in z.infolist()]
    rezipped = tmp_path / "rezipped.pt"
    with zipfile.ZipFile(rezipped, "w", zipfile.ZIP_STORED) as z:
        for info, data in reversed(entries):
            z.writestr(info.filename, data)
    calls = calls_to_load_pt(monkeypatch)
    got = _read_rank_file(rezipped).obj["model"]
    assert calls == [True, False]  # the offset check failed, so the file was loaded in full
    want = load_pt(rank).obj["model"]
    assert all(torch.equal(got[k], want[k]) for k in want)


def test_merge_reads_a_rezipped_checkpoint_correctly(tmp_path):
    write_model(llama(), tmp_path / "hf")
    reshard(tmp_path / "hf", tmp_path / "ckpt", tp=2, pp=2, fsync=False)
    for path in sorted((tmp_path / "ckpt/release").glob("*/model_optim_rng.pt"))[:2]:
        with zipfile.ZipFile(path) as z:
            entries = [(i.filename, z.read(i)) for i in z.infolist()]
        with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
            for name, data in reversed(entries):
                z.writestr(name, data)
    merge(tmp_path / "ckpt", tmp_path / "back", fsync=False)
    assert_same(hf_tensors(tmp_path / "hf"), hf_tensors(tmp_path / "back"))


def test_a_later_rank_file_with_other_foreign_globals_is_scanned_and_read(tmp_path):
    """Rank files after the first are tried with the first one's stand-ins; a global beyond
    them sends the file through the scan, which stands it in (numpy here) or refuses it."""
    import numpy

    write_model(llama(), tmp_path / "hf")
    reshard(tmp_path / "hf", tmp_path / "ckpt", tp=2, fsync=False)
    first, later = sorted((tmp_path / "ckpt/release").glob("*/model_optim_rng.pt"))
    state = torch.load(later, weights_only=True)
    state["rng_state"] = [{"np_rng_state": numpy.random.RandomState(0).get_state()}]
    torch.save(state, later)
    read_first = _read_rank_file(first)
    assert not any(n.startswith("numpy.") for n in read_first.stand_ins)
    read_later = _read_rank_file(later, read_first)
    assert any(n.startswith("numpy.") for n in read_later.stand_ins)
    merge(tmp_path / "ckpt", tmp_path / "back", fsync=False)
    assert_same(hf_tensors(tmp_path / "hf"), hf_tensors(tmp_path / "back"))
