"""The streaming paths of the converter: byte chunks through a scratch buffer, checksums on a thread.

Tiny test models never reach the sizes where these paths switch on (chunks of several MB), so
they are tested here directly, and end to end with a Megatron -> Megatron reshard whose
row-parallel columns cross the old shards' boundaries.
"""

from __future__ import annotations

import functools
import os
import threading
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from vla_reference import reshard
from vla_reference.converter import CHUNK_BYTES, HCat, Rows, Writer

from builders import assert_same, hf_tensors, llama, rank_models, write_model


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


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("checksum", [True, False])
def test_writer_pwrites_at_offsets_with_crc(tmp_path, threads, checksum):
    g = torch.Generator().manual_seed(1)
    joined = torch.randn(1200, 4000, generator=g)  # 19.2 MB: several chunks and scratch blocks
    shards = list(joined.split([1500, 2500], dim=1))
    rows = [Rows.of(joined[:, 100:2100]), Rows.hcat(shards), Rows.of(torch.arange(7.0))]
    expected = [raw(joined[:, 100:2100]), raw(joined), raw(torch.arange(7.0))]
    offsets = [100, 100 + len(expected[0]), 100 + len(expected[0]) + len(expected[1])]
    file = tmp_path / "out.bin"
    file.write_bytes(b"\0" * (offsets[-1] + len(expected[2])))
    fd = os.open(file, os.O_RDWR)
    results: dict[int, tuple[int, int]] = {}
    try:
        with Writer(threads=threads) as w:
            w.run(
                [
                    functools.partial(
                        lambda i: results.__setitem__(i, w.write(fd, offsets[i], rows[i], checksum=checksum)), i
                    )
                    for i in range(3)
                ]
            )
    finally:
        os.close(fd)
    data = file.read_bytes()
    for i in range(3):
        assert data[offsets[i] : offsets[i] + len(expected[i])] == expected[i]
        assert results[i] == (len(expected[i]), zlib.crc32(expected[i]) if checksum else 0)


def test_writer_raises_the_first_error_after_all_jobs_end():
    done = []

    def fail():
        raise ValueError("boom")

    with Writer(threads=2) as w, pytest.raises(ValueError, match="boom"):
        w.run([fail, lambda: done.append(1)])
    assert done == [1]


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


def test_merged_safetensors_data_starts_on_a_cache_line(tmp_path):
    """The header is padded so tensor bytes start at a multiple of 64, like torch's zip records."""
    import struct

    from safetensors import safe_open

    from vla_reference import merge

    write_model(llama(), tmp_path / "hf", dtype=torch.bfloat16)
    reshard(tmp_path / "hf", tmp_path / "mg", tp=2, pp=2, fsync=False)
    merge(tmp_path / "mg", tmp_path / "back", fsync=False)
    file = tmp_path / "back" / "model.safetensors"
    (n,) = struct.unpack("<Q", file.read_bytes()[:8])
    assert (8 + n) % 64 == 0
    expected = hf_tensors(tmp_path / "hf")
    with safe_open(str(file), "pt") as f:  # the safetensors library reads the padded header
        assert set(f.keys()) == set(expected)
        for key, tensor in expected.items():
            assert torch.equal(f.get_tensor(key), tensor), key


def _mapped_rss_kb(path) -> int:
    """Resident KB of this process's mappings of ``path`` (from /proc/self/smaps)."""
    total, inside = 0, False
    target = str(path)
    for line in open("/proc/self/smaps").read().splitlines():
        first = line.split()[0] if line.split() else ""
        if "-" in first and not first.endswith(":"):
            inside = line.rstrip().endswith(target)
        elif inside and line.startswith("Rss:"):
            total += int(line.split()[1])
    return total


# Why skip: batched release is observed in /proc/self/smaps, which only Linux has; on other
# systems FileMappings advises nothing (no libc madvise path), so there is nothing to observe.
@pytest.mark.skipif(not os.path.exists("/proc/self/smaps"), reason="needs Linux /proc/self/smaps")
def test_released_pages_are_given_back_in_batches(tmp_path, monkeypatch):
    from vla_reference.converter import _pages
    from vla_reference.hf import SafetensorsFile

    monkeypatch.setattr(_pages, "BATCH_BYTES", 3 << 20)
    tensors = {f"t{i}": torch.full((1 << 18,), float(i)) for i in range(4)}  # 1 MiB each
    from safetensors.torch import save_file

    save_file(tensors, tmp_path / "w.safetensors")
    pages = _pages.FileMappings()
    st = SafetensorsFile(tmp_path / "w.safetensors", pages)
    views = [st.tensor(f"t{i}") for i in range(4)]
    assert all(float(v.sum()) == i * (1 << 18) for i, v in enumerate(views))  # every page touched
    resident = _mapped_rss_kb(tmp_path / "w.safetensors")
    assert resident >= 4 * 1024
    pages.release(views[0])
    pages.release(views[1])
    assert _mapped_rss_kb(tmp_path / "w.safetensors") >= 4 * 1024  # queued, not yet given back
    pages.release(views[2])  # 3 MiB queued: one call gives back all three
    assert _mapped_rss_kb(tmp_path / "w.safetensors") <= resident - 3 * 1024 + 8
    assert torch.equal(views[0], torch.zeros(1 << 18))  # refaulted from the file, not zeroed memory


# Why skip: as above, the pages given back are observed in /proc/self/smaps (Linux only).
@pytest.mark.skipif(not os.path.exists("/proc/self/smaps"), reason="needs Linux /proc/self/smaps")
def test_each_thread_gives_back_the_ranges_it_queued(tmp_path, monkeypatch):
    from safetensors.torch import save_file

    from vla_reference.converter import _pages
    from vla_reference.hf import SafetensorsFile

    monkeypatch.setattr(_pages, "BATCH_BYTES", 3 << 20)
    save_file({f"t{i}": torch.full((1 << 18,), float(i)) for i in range(2)}, tmp_path / "w.safetensors")
    file = tmp_path / "w.safetensors"
    pages = _pages.FileMappings()
    st = SafetensorsFile(file, pages)
    views = [st.tensor(f"t{i}") for i in range(2)]
    assert all(float(v.sum()) == i * (1 << 18) for i, v in enumerate(views))  # every page touched
    resident = _mapped_rss_kb(file)
    with ThreadPoolExecutor(1) as other:  # one thread, kept alive between the calls
        other.submit(pages.release, views[0]).result()
        pages.release(views[1])
        pages.flush()  # this thread's queue only: view 1
        after_own = _mapped_rss_kb(file)
        assert resident - 1024 - 8 <= after_own <= resident - 1024 + 8  # 1 MiB given back, view 0 still mapped
        other.submit(pages.flush).result()
    assert _mapped_rss_kb(file) <= after_own - 1024 + 8  # the other thread gave back its own
    assert torch.equal(views[0], torch.zeros(1 << 18))


def test_sources_split_into_copied_and_direct_as_byte_blocks_reads_them():
    g = torch.Generator().manual_seed(3)
    direct = torch.randn(4, 6, generator=g)
    shards = [torch.randn(5, 3, generator=g) for _ in range(2)]
    wide = torch.randn(3, 10, generator=g)
    rows = Rows.cat([Rows.of(direct), Rows.hcat(shards), Rows.of(wide).columns(2, 8)])
    ptrs = [t.data_ptr() for t in rows.sources()]
    copied = [t.data_ptr() for t in rows.sources(copied=True)]
    as_is = [t.data_ptr() for t in rows.sources(copied=False)]
    assert as_is == [direct.data_ptr()]
    assert copied == [shards[0].data_ptr(), shards[1].data_ptr(), wide[:, 2:8].data_ptr()]
    assert sorted(copied + as_is) == sorted(ptrs)
    # byte_blocks agrees: the direct piece is its own memory, the others come through scratch
    blocks = list(rows.byte_blocks(lambda: torch.empty(1 << 10, dtype=torch.uint8), 1 << 10))
    assert [buf is None for _, buf in blocks] == [True, False, False]
    assert blocks[0][0].obj is not None and bytes(blocks[0][0]) == raw(direct)


def test_merge_gives_back_copied_pages_on_the_calling_thread(tmp_path, monkeypatch):
    from vla_reference import merge
    from vla_reference.converter import InFileMappings

    write_model(llama(), tmp_path / "hf", dtype=torch.bfloat16)
    reshard(tmp_path / "hf", tmp_path / "ckpt", tp=2, fsync=False)  # row-parallel joins on merge
    seen: list[tuple[str, bool | None, int]] = []
    real = InFileMappings.release

    def release(self, rows, *, copied=None):
        seen.append((threading.current_thread().name, copied, len(rows.sources(copied=copied))))
        real(self, rows, copied=copied)

    monkeypatch.setattr(InFileMappings, "release", release)
    merge(tmp_path / "ckpt", tmp_path / "merged", fsync=False)
    me = threading.current_thread().name
    assert {copied for name, copied, _ in seen if name == "vla-stream"} == {False}  # pieces written as they are
    assert {copied for name, copied, _ in seen if name == me} == {True}  # joins and slices, read here
    assert sum(n for name, _, n in seen if name == me) > 0  # TP=2: there were joins to give back
    assert_same(hf_tensors(tmp_path / "merged"), hf_tensors(tmp_path / "hf"))


def test_stream_writes_in_order_and_runs_steps_after_the_bytes_before_them(tmp_path):
    g = torch.Generator().manual_seed(2)
    joined = torch.randn(1500, 3000, generator=g)  # 18 MB: several scratch blocks, more than depth
    items = [(0, Rows.hcat(list(joined.split([1000, 2000], dim=1)))), (joined.numel() * 4, Rows.of(joined[:, 7:9]))]
    size = joined.numel() * 4 + 1500 * 2 * 4
    file = tmp_path / "s.bin"
    fd = os.open(file, os.O_RDWR | os.O_CREAT)
    seen = []
    try:
        with Writer(threads=1) as w:
            w.stream(fd, [items[0], lambda: seen.append(os.fstat(fd).st_size), items[1]], depth=2)
    finally:
        os.close(fd)
    assert seen == [joined.numel() * 4]  # the step ran once the first tensor was out, before the second
    assert file.read_bytes() == raw(joined) + raw(joined[:, 7:9])
    assert os.path.getsize(file) == size


def test_stream_raises_producer_and_writer_errors_without_hanging(tmp_path):
    def items():
        yield 0, Rows.of(torch.ones(4))
        raise ValueError("planned shape differs")

    fd = os.open(tmp_path / "e.bin", os.O_RDWR | os.O_CREAT)
    try:
        with Writer(threads=1) as w, pytest.raises(ValueError, match="planned shape"):
            w.stream(fd, items())
    finally:
        os.close(fd)
    ro = os.open(tmp_path / "e.bin", os.O_RDONLY)  # pwrite on a read-only fd fails on the writer thread
    try:
        big = Rows.hcat([torch.ones(3000, 1000), torch.zeros(3000, 1000)])  # 24 MB: blocks the small pool
        with Writer(threads=1) as w, pytest.raises(OSError):
            w.stream(ro, [(0, big), (0, big)], depth=1)
    finally:
        os.close(ro)


def test_prefetch_asks_for_the_pages_of_mapped_tensors_only(tmp_path):
    from safetensors.torch import save_file

    from vla_reference.converter import _pages
    from vla_reference.hf import SafetensorsFile

    calls = []

    class FakeLibc:
        def madvise(self, addr, length, advice):
            calls.append((addr.value, length.value, advice))
            return 0

    save_file({"w": torch.ones(1 << 16)}, tmp_path / "p.safetensors")
    pages = _pages.FileMappings()
    st = SafetensorsFile(tmp_path / "p.safetensors", pages)
    pages._libc = FakeLibc()
    w = st.tensor("w")
    pages.prefetch(w)
    pages.prefetch(torch.ones(1 << 16))  # anonymous memory: never advised
    assert len(calls) == 1
    addr, length, advice = calls[0]
    assert advice == _pages._MADV_WILLNEED
    assert addr <= w.data_ptr() and w.data_ptr() + (1 << 18) <= addr + length
    assert addr % _pages._PAGE == 0  # madvise needs a page-aligned start


def test_conversions_pause_the_garbage_collector_and_restore_it(tmp_path, monkeypatch):
    import gc

    from vla_reference import _convert as convert

    write_model(llama(), tmp_path / "hf")
    seen = []
    real = convert.write_megatron

    def spy(*args, **kwargs):
        seen.append(gc.isenabled())
        return real(*args, **kwargs)

    monkeypatch.setattr(convert, "write_megatron", spy)
    assert gc.isenabled()
    reshard(tmp_path / "hf", tmp_path / "ckpt", tp=2, fsync=False)
    with pytest.raises(Exception, match="destination exists"):
        reshard(tmp_path / "hf", tmp_path / "ckpt", tp=2, fsync=False)
    assert seen == [False, False]
    assert gc.isenabled()  # restored, after success and after failure


def test_writes_go_out_in_cache_sized_calls(tmp_path, monkeypatch):
    from vla_reference.converter import WRITE_BYTES
    from vla_reference.converter._rows import BLOCK_BYTES

    calls: list[tuple[int, int]] = []
    real = os.pwrite

    def spy(fd, data, offset):
        calls.append((offset, len(data)))
        return real(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", spy)
    g = torch.Generator().manual_seed(2)
    joined = torch.randn(600, 3000, generator=g)  # 7.2 MB, row-parallel join of two shards
    rows = [Rows.of(joined), Rows.hcat(list(joined.split([1000, 2000], dim=1)))]
    file = tmp_path / "out.bin"
    size = joined.numel() * 4
    fd = os.open(file, os.O_RDWR | os.O_CREAT)
    try:
        os.ftruncate(fd, 2 * size)
        with Writer(threads=1) as w:
            w.write(fd, 0, rows[0])
            w.stream(fd, [(size, rows[1])])
    finally:
        os.close(fd)
    assert file.read_bytes() == raw(joined) * 2
    assert max(n for _, n in calls) == WRITE_BYTES
    at = 0
    for offset, n in sorted(calls):  # the calls cover both tensors exactly, without overlap
        assert offset == at
        at += n
    assert at == 2 * size
    # the joined rows are copied into scratch in blocks of whole rows, about BLOCK_BYTES each,
    # and a write never spans two blocks
    block = (BLOCK_BYTES // (3000 * 4)) * 3000 * 4
    for offset, n in calls:
        if offset >= size:
            assert (offset - size) // block == (offset - size + n - 1) // block
