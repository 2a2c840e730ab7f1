"""The streaming paths of the converter: byte chunks through a scratch buffer, checksums on a thread.

Tiny test models never reach the sizes where these paths switch on (chunks of several MB), so
they are tested here directly, and end to end with a Megatron -> Megatron reshard whose
row-parallel columns cross the old shards' boundaries.
"""

from __future__ import annotations

import os
import zipfile
import zlib

import pytest
import torch

from vla_reference import reshard
from vla_reference.rows import CHUNK_BYTES, HCat, Rows
from vla_reference.shard_writer import _Checksums

from builders import llama, write_model
from test_roundtrip import assert_same, rank_models


def chunk_bytes(rows: Rows, scratch: torch.Tensor | None) -> bytes:
    return b"".join(bytes(c) for c in rows.byte_chunks(scratch))


def raw(t: torch.Tensor) -> bytes:
    return t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


@pytest.mark.parametrize("scratch_bytes", [None, 64, 1000, 1 << 16])
def test_byte_chunks_of_strided_and_joined_pieces(scratch_bytes):
    g = torch.Generator().manual_seed(0)
    shards = [torch.randn(37, w, generator=g).to(torch.bfloat16) for w in (6, 10, 8)]
    joined = torch.cat(shards, dim=1)
    scratch = None if scratch_bytes is None else torch.empty(scratch_bytes, dtype=torch.uint8)
    whole = Rows.hcat(shards)
    assert chunk_bytes(whole, scratch) == raw(joined)
    # columns 4:20 cross all three shards; a row slice of them as well
    assert chunk_bytes(whole.columns(4, 20), scratch) == raw(joined[:, 4:20])
    assert chunk_bytes(whole.columns(4, 20).slice(3, 30), scratch) == raw(joined[3:30, 4:20])
    assert chunk_bytes(whole.columns(6, 16), scratch) == raw(shards[1])  # exactly one shard
    strided = Rows.of(joined)
    assert chunk_bytes(strided.columns(5, 9), scratch) == raw(joined[:, 5:9])


def test_hcat_columns_read_only_the_shards_they_cover():
    shards = [torch.zeros(4, 3), torch.ones(4, 3), torch.full((4, 3), 2.0)]
    block = HCat(tuple(shards), 1, 3).columns(3, 6)
    assert block.shape == (2, 3)
    assert [s.data_ptr() for s in block.sources()] == [shards[1][1:3].data_ptr()]
    assert torch.equal(block.tensor(), torch.ones(2, 3))


def test_contiguous_pieces_are_zero_copy_chunks():
    t = torch.arange(CHUNK_BYTES // 4 * 2 + 5, dtype=torch.int32)
    chunks = list(Rows.of(t).byte_chunks(torch.empty(16, dtype=torch.uint8)))
    assert [len(c) for c in chunks] == [CHUNK_BYTES, CHUNK_BYTES, 20]
    assert b"".join(bytes(c) for c in chunks) == raw(t)


@pytest.mark.parametrize("enabled", [True, False])
def test_checksums_on_a_thread_match_zlib(tmp_path, enabled):
    data = os.urandom(3 * (1 << 20) + 12345)
    chunks = [memoryview(data)[a : a + 1_500_000] for a in range(0, len(data), 1_500_000)]
    chunks.insert(1, memoryview(b"small"))
    expected = b"".join(bytes(c) for c in chunks)
    file = tmp_path / "out.bin"
    file.write_bytes(b"\0" * (len(expected) + 100))
    fd = os.open(file, os.O_RDWR)
    sums = _Checksums(enabled)
    try:
        written, crc = sums.write(fd, 100, chunks)
    finally:
        sums.close()
        os.close(fd)
    assert written == len(expected)
    assert file.read_bytes()[100:] == expected
    assert crc == (zlib.crc32(expected) if enabled else 0)


def test_megatron_to_megatron_reshard_equals_resharding_the_hf_model(tmp_path):
    """TP=4 -> TP=2 joins row-parallel columns of two old shards into each new one."""
    write_model(llama(swiglu=True, num_query_groups=4), tmp_path / "hf", dtype=torch.bfloat16)
    reshard(tmp_path / "hf", tmp_path / "tp4", tp=4, pp=2, fsync=False)
    reshard(tmp_path / "tp4", tmp_path / "tp2", tp=2, pp=1, fsync=False)
    reshard(tmp_path / "hf", tmp_path / "direct", tp=2, pp=1, fsync=False)
    ours, direct = rank_models(tmp_path / "tp2"), rank_models(tmp_path / "direct")
    assert ours.keys() == direct.keys() == {"mp_rank_00", "mp_rank_01"}
    for rank in ours:
        assert_same(ours[rank], direct[rank])


def test_crc_follows_torch_save_option(tmp_path):
    """``torch.serialization.set_crc32_options(False)`` skips the checksums, as torch.save does."""
    write_model(llama(), tmp_path / "hf")
    before = torch.serialization.get_crc32_options()
    torch.serialization.set_crc32_options(False)
    try:
        reshard(tmp_path / "hf", tmp_path / "mg", tp=2, fsync=False)
    finally:
        torch.serialization.set_crc32_options(before)
    reshard(tmp_path / "hf", tmp_path / "with", tp=2, fsync=False)
    for rank in ("mp_rank_00", "mp_rank_01"):
        plain = zipfile.ZipFile(tmp_path / "mg/release" / rank / "model_optim_rng.pt")
        checked = zipfile.ZipFile(tmp_path / "with/release" / rank / "model_optim_rng.pt")
        storages = [i for i in plain.infolist() if "/data/" in i.filename]
        assert storages and all(i.CRC == 0 for i in storages)
        assert all(checked.getinfo(i.filename).CRC != 0 for i in storages)
        assert checked.testzip() is None
    assert_same(rank_models(tmp_path / "mg")["mp_rank_00"], rank_models(tmp_path / "with")["mp_rank_00"])
