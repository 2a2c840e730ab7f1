"""Bytes that lie in a source file go file to file (``copy_file_range``); everything else, and
everywhere the kernel or filesystem cannot copy, goes out with ``pwrite``. Same bytes either way."""

from __future__ import annotations

import errno
import os

import pytest
import torch

from vla_reference import merge, reshard
from vla_reference.converter import FileMappings, Rows, Writer, _pwrite
from vla_reference.converter._rows import _cut
from vla_reference.megatron._rank_state import read_rank_file

from builders import assert_same, hf_tensors, llama, write_model

# Why skip: copy_file_range exists only on Linux (Python exposes it nowhere else); elsewhere the
# writer never tries it, and every byte goes through pwrite, which the other streaming tests cover.
pytestmark = pytest.mark.skipif(not hasattr(os, "copy_file_range"), reason="os.copy_file_range is Linux-only")


@pytest.fixture
def rank(tmp_path):
    write_model(llama(), tmp_path / "hf", dtype=torch.bfloat16)
    reshard(tmp_path / "hf", tmp_path / "ckpt", tp=2, fsync=False)
    path = tmp_path / "ckpt/release/mp_rank_00/model_optim_rng.pt"
    pages = FileMappings()
    model = read_rank_file(path).obj["model"]
    tensors = {k: t for k, t in model.items() if isinstance(t, torch.Tensor)}
    pages.register_file(path, tensors.values())
    yield path, pages, tensors
    pages.close()


def test_file_range_names_where_a_mapped_view_lies(rank):
    path, pages, model = rank
    for key, t in model.items():
        chunk = next(_cut(t))
        fd, offset = pages.file_range(chunk)
        assert os.pread(fd, len(chunk), offset) == bytes(chunk), key
    assert pages.file_range(memoryview(torch.ones(8).numpy()).cast("B")) is None  # anonymous memory


def test_another_readers_mapping_of_the_same_file_is_not_registered(rank):
    """An earlier reader of the file (a source not yet collected) has its own mapping of it; once
    that is unmapped its addresses go to anonymous memory, which must never be taken for the file
    (CI once merged wrong bytes that way: a background merge's mappings, collected mid-way through
    the next merge of the same checkpoint, were registered by it)."""
    path, pages, model = rank
    other = read_rank_file(path).obj["model"]  # mapped after ``pages`` registered: not in it
    mine = FileMappings()
    tensors = [t for t in other.values() if isinstance(t, torch.Tensor)]
    mine.register_file(path, tensors)
    try:
        for key, t in model.items():  # the fixture's reader: its mapping is someone else's to ``mine``
            assert mine.file_range(next(_cut(t))) is None, key
        for t in tensors:
            chunk = next(_cut(t))
            fd, offset = mine.file_range(chunk)
            assert os.pread(fd, len(chunk), offset) == bytes(chunk)
    finally:
        mine.close()


def test_a_file_replaced_since_it_was_mapped_is_not_copied_from(rank, tmp_path):
    path, pages, model = rank
    os.replace(path, tmp_path / "moved.pt")
    path.write_bytes((tmp_path / "moved.pt").read_bytes())  # the same bytes, another inode
    assert pages.file_range(next(_cut(next(iter(model.values()))))) is None


def stream_all(pages, model, out):
    offsets, at = {}, 0
    for key, t in model.items():
        offsets[key], at = at, at + t.numel() * t.element_size()
    fd = os.open(out, os.O_RDWR | os.O_CREAT)
    try:
        with Writer(threads=1) as w:
            w.stream(fd, [(offsets[k], Rows.of(t)) for k, t in model.items()], source=pages.file_range)
    finally:
        os.close(fd)
    return b"".join(bytes(c) for t in model.values() for c in _cut(t))


def test_stream_copies_file_to_file(rank, tmp_path, monkeypatch):
    path, pages, model = rank
    copied = []
    real = os.copy_file_range

    def spy(src, dst, count, offset_src, offset_dst):
        n = real(src, dst, count, offset_src, offset_dst)
        copied.append(n)
        return n

    monkeypatch.setattr(os, "copy_file_range", spy)
    want = stream_all(pages, model, tmp_path / "out.bin")
    assert (tmp_path / "out.bin").read_bytes() == want
    assert sum(copied) == len(want)  # every byte went file to file
    assert max(copied) <= _pwrite.COPY_BYTES


@pytest.mark.parametrize("code", [errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP])
def test_where_the_kernel_cannot_copy_it_writes_and_stops_trying(rank, tmp_path, monkeypatch, code):
    path, pages, model = rank
    tries = []

    def cannot(*args):
        tries.append(args)
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "copy_file_range", cannot)
    want = stream_all(pages, model, tmp_path / "out.bin")
    assert (tmp_path / "out.bin").read_bytes() == want
    assert len(tries) == 1


def test_a_short_copy_is_finished_with_pwrite(rank, tmp_path, monkeypatch):
    path, pages, model = rank
    real = os.copy_file_range
    state = {"calls": 0}

    def short(src, dst, count, offset_src, offset_dst):
        state["calls"] += 1
        if state["calls"] % 2:  # half of what was asked, then "end of file"
            return real(src, dst, max(count // 2, 1), offset_src, offset_dst)
        return 0

    monkeypatch.setattr(os, "copy_file_range", short)
    want = stream_all(pages, model, tmp_path / "out.bin")
    assert (tmp_path / "out.bin").read_bytes() == want


def test_another_error_fails_the_write(rank, tmp_path, monkeypatch):
    path, pages, model = rank

    def broken(*args):
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(os, "copy_file_range", broken)
    with pytest.raises(OSError, match="I/O error"):
        stream_all(pages, model, tmp_path / "out.bin")


def test_merge_copies_the_contiguous_weights_file_to_file(tmp_path, monkeypatch):
    write_model(llama(), tmp_path / "hf", dtype=torch.bfloat16)
    reshard(tmp_path / "hf", tmp_path / "ckpt", tp=2, pp=2, fsync=False)
    copied = []
    real = os.copy_file_range

    def spy(*args):
        copied.append(real(*args))
        return copied[-1]

    monkeypatch.setattr(os, "copy_file_range", spy)
    merge(tmp_path / "ckpt", tmp_path / "back", fsync=False)
    assert sum(copied) > 0
    assert_same(hf_tensors(tmp_path / "hf"), hf_tensors(tmp_path / "back"))
