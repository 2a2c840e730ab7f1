"""torch_dist checkpoints merge to the same bytes as the torch format, and hostile files run nothing."""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import pickle
import re
import shutil
import sys
import types
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed._shard.metadata import ShardMetadata
from torch.distributed._shard.sharded_tensor import Shard, ShardedTensor
from torch.distributed._shard.sharded_tensor.metadata import ShardedTensorMetadata, TensorProperties
from torch.distributed.checkpoint import DefaultSavePlanner, FileSystemReader
from torch.distributed.checkpoint.metadata import ChunkStorageMetadata, Metadata

from vla_reference import (
    HFSource,
    Layout,
    LayoutError,
    MalformedFileError,
    ShardMismatchError,
    UnsafeCheckpointError,
    canonical_keys,
    merge,
    reshard,
)
from vla_reference.converter import random_weights
from vla_reference.megatron import TorchDistSource

from builders import gpt2, llama, moe, write_model

ITER = 7
ITER_DIR = f"iter_{ITER:07d}"
_LAYER = re.compile(r"decoder\.layers\.(\d+)\.")
_EXPERT = re.compile(r"mlp\.experts\.local_experts\.(\d+)\.")


@pytest.fixture(scope="module", autouse=True)
def process_group():
    """torch's ShardedTensor (used to write Megatron-like chunks) needs a process group: one of one."""
    if dist.is_initialized():
        yield
        return
    dist.init_process_group("gloo", rank=0, world_size=1, store=dist.HashStore())
    yield
    dist.destroy_process_group()


class RunsCode:
    """Unpickling this runs ``os.system``: a marker file appears if it ever executes."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class Prints:
    def __reduce__(self):
        return (print, ("pwned",))


class MegatronSavePlanner(DefaultSavePlanner):
    """Writes objects already packed as BytesIO unchanged, like Megatron's MCoreSavePlanner."""

    def transform_object(self, write_item, object):
        return object


def evil_bytes(marker: Path) -> bytes:
    buf = io.BytesIO()
    torch.save([RunsCode(marker)], buf)
    return buf.getvalue()


def dist_tensors(arch, weights, *, stacked: bool, padded: int, halves: bool = False):
    """Canonical weights as Megatron's torch_dist stores them: {key: (global tensor, leading axes)}.

    Norms take the TE names (Megatron renames local-spec norms when saving), experts move to
    ``mlp.experts.experts`` on an expert axis, layers to a leading axis when ``stacked``.
    """
    grouped: dict[str, dict[tuple[int, ...], torch.Tensor]] = {}
    for key, t in weights.items():
        if key in ("embedding.word_embeddings.weight", "output_layer.weight"):
            junk = torch.full((padded - t.shape[0], *t.shape[1:]), 7.0, dtype=t.dtype)
            t = torch.cat([t, junk])
        m = _LAYER.search(key)
        layer = int(m.group(1)) if m else None
        name = key.replace("input_layernorm.", "self_attention.linear_qkv.layer_norm_")
        if layer is not None and not arch.is_moe_layer(layer):
            name = name.replace("pre_mlp_layernorm.", "mlp.linear_fc1.layer_norm_")
        e = _EXPERT.search(name)
        expert = int(e.group(1)) if e else None
        name = _EXPERT.sub("mlp.experts.experts.", name)
        index = (expert,) if expert is not None else ()
        if stacked and layer is not None:
            name = _LAYER.sub("decoder.layers.", name)
            index = (layer, *index)
        if halves and name.endswith("mlp.linear_fc1.weight"):
            gate, up = t.chunk(2)
            grouped.setdefault(name + "_w", {})[index] = gate
            grouped.setdefault(name + "_v", {})[index] = up
            continue
        grouped.setdefault(name, {})[index] = t
    out = {}
    for name, pieces in grouped.items():
        lead = len(next(iter(pieces)))
        first = next(iter(pieces.values()))
        dims = tuple(max(i[d] for i in pieces) + 1 for d in range(lead))
        full = torch.empty((*dims, *first.shape), dtype=first.dtype)
        for idx, t in pieces.items():
            full[idx] = t
        out[name] = (full, lead)
    return out


def megatron_chunks(full: torch.Tensor, lead: int) -> ShardedTensor:
    """One chunk per layer/expert and per TP-like half of each data dim, as Megatron's ranks write them."""
    grids = [[(i, 1) for i in range(n)] for n in full.shape[:lead]]
    for n in full.shape[lead:][:2]:
        grids.append([(0, n // 2), (n // 2, n - n // 2)] if n % 2 == 0 and n > 1 else [(0, n)])
    shards, metas = [], []
    for cell in _product(grids):
        offsets = [o for o, _ in cell] + [0] * (full.dim() - len(cell))
        sizes = [n for _, n in cell] + list(full.shape[len(cell) :])
        data = full[tuple(slice(o, o + n) for o, n in zip(offsets, sizes, strict=True))].clone()
        shards.append(Shard.from_tensor_and_offsets(data, offsets, 0))
        metas.append(ShardMetadata(offsets, sizes, "rank:0/cpu"))
    meta = ShardedTensorMetadata(metas, full.shape, TensorProperties(dtype=full.dtype))
    return ShardedTensor._init_from_local_shards_and_global_metadata(shards, sharded_tensor_metadata=meta)


def _product(grids):
    if not grids:
        yield ()
        return
    for head in grids[0]:
        for rest in _product(grids[1:]):
            yield (head, *rest)


def write_torch_dist(
    arch,
    weights,
    root: Path,
    *,
    stacked: bool = True,
    common: str = "common.pt",
    namespace: bool = False,
    halves: bool = False,
    extra: dict | None = None,
    marker: Path | None = None,
    edit=None,
    planner=MegatronSavePlanner,
) -> Path:
    """A Megatron torch_dist checkpoint of ``weights`` (trained at TP=2), with optimizer state and objects."""
    args = arch.to_args(Layout(tp=2))
    tensors = dist_tensors(arch, weights, stacked=stacked, padded=args["padded_vocab_size"], halves=halves)
    if edit is not None:
        edit(tensors)
    state: dict = {name: megatron_chunks(t, lead) for name, (t, lead) in tensors.items()}
    for name, (t, _) in list(tensors.items())[:3]:
        state[f"optimizer.state.exp_avg.{name}"] = torch.zeros_like(t, dtype=torch.float32)
    state["rng_state/shard_0.0_1.1"] = io.BytesIO(evil_bytes(marker or root / "never"))
    state["decoder.layers.self_attention.linear_qkv._extra_state/shard_0_4"] = io.BytesIO(b"\x80\x04junk")
    state.update(extra or {})
    common_state = {
        "args": argparse.Namespace(**args) if namespace else args,
        "iteration": ITER,
        "checkpoint_version": 3.0,
    }
    if common == "common_state":
        buf = io.BytesIO()
        torch.save([common_state], buf)
        state["common_state/shard_0_1"] = io.BytesIO(buf.getvalue())
    it = root / ITER_DIR
    dcp.save(state, storage_writer=dcp.FileSystemWriter(it), planner=planner())
    config = {"sharded_backend": "torch_dist", "sharded_backend_version": 1}
    if common == "common.pt":
        config.update(common_backend="torch", common_backend_version=1)
        torch.save(common_state, it / "common.pt")
    (it / "metadata.json").write_text(json.dumps(config))
    (root / "latest_checkpointed_iteration.txt").write_text(f"{ITER}\n")
    return root


def hf_tensors(path: Path) -> dict[str, torch.Tensor]:
    src = HFSource(path)
    return {k: src.hf_tensor(k).clone() for k in src._where}


def assert_identical(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor], what: str) -> None:
    __tracebackhide__ = True
    problems = sorted(set(got) ^ set(want))
    problems += [
        k for k in sorted(set(got) & set(want)) if got[k].dtype != want[k].dtype or not torch.equal(got[k], want[k])
    ]
    assert not problems, f"{what}: differing or missing tensors {problems[:8]}"


def read_metadata(iter_dir: Path) -> Metadata:
    """The test's own (trusted) metadata, read the plain DCP way to edit it."""
    return FileSystemReader(iter_dir).read_metadata()


CASES = {
    "llama-stacked-bf16": dict(arch=lambda: llama(), dtype=torch.bfloat16, stacked=True),
    "moe-interleaved-per-layer": dict(arch=lambda: moe(every=2), dtype=torch.float32, stacked=False),
    "moe-every-layer-stacked-common-state": dict(
        arch=lambda: moe(every=1), dtype=torch.bfloat16, stacked=True, common="common_state"
    ),
    "qk-layernorm-stacked": dict(arch=lambda: llama(qk_layernorm=True), dtype=torch.bfloat16, stacked=True),
    "moe-qk-layernorm-per-layer": dict(
        arch=lambda: moe(every=2, qk_layernorm=True), dtype=torch.float32, stacked=False
    ),
    "shared-expert-per-layer": dict(
        arch=lambda: moe(every=2, moe_shared_expert_intermediate_size=24, moe_shared_expert_gate=True),
        dtype=torch.float32,
        stacked=False,
    ),
    "qkv-bias-stacked": dict(arch=lambda: llama(add_qkv_bias=True), dtype=torch.float32, stacked=True),
    "gpt2-tied-namespace-args": dict(arch=lambda: gpt2(), dtype=torch.float32, stacked=True, namespace=True),
    # DCP's default save planner packs objects once more than Megatron's does
    "llama-singleton-swiglu-halves-dcp-packed-common-state": dict(
        arch=lambda: llama(),
        dtype=torch.float32,
        stacked=False,
        halves=True,
        common="common_state",
        planner=DefaultSavePlanner,
    ),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_merge_is_bit_identical_to_torch_format_and_hf(case, tmp_path):
    """merge(torch_dist) == merge(torch format of the same weights) == the original HF weights."""
    spec = dict(CASES[case])
    arch, dtype = spec.pop("arch")(), spec.pop("dtype")
    weights = write_model(arch, tmp_path / "hf0", dtype=dtype)
    write_torch_dist(arch, weights, tmp_path / "dist", marker=tmp_path / "pwned", **spec)
    reshard(tmp_path / "hf0", tmp_path / "torch", tp=2, fsync=False)
    merge(tmp_path / "dist", tmp_path / "hf_dist", fsync=False)
    merge(tmp_path / "torch", tmp_path / "hf_torch", fsync=False)
    original = hf_tensors(tmp_path / "hf0")
    assert_identical(hf_tensors(tmp_path / "hf_dist"), original, "torch_dist merge vs original")
    assert_identical(hf_tensors(tmp_path / "hf_dist"), hf_tensors(tmp_path / "hf_torch"), "torch_dist vs torch")
    assert not (tmp_path / "pwned").exists()


@pytest.fixture(scope="module")
def dense(tmp_path_factory):
    arch = llama()
    hf0 = tmp_path_factory.mktemp("dense") / "hf0"
    return arch, write_model(arch, hf0), hf0


@pytest.fixture(scope="module")
def pristine(dense, tmp_path_factory):
    """A dense torch_dist checkpoint; its rng_state object would create ``../pwned`` if unpickled."""
    arch, weights, _ = dense
    base = tmp_path_factory.mktemp("pristine")
    return write_torch_dist(arch, weights, base / "dist", marker=base / "pwned")


@pytest.fixture
def ckpt(pristine, tmp_path):
    return Path(shutil.copytree(pristine, tmp_path / "dist"))


def test_source_interface(ckpt, dense):
    """Opened at the root or the iteration, it presents MegatronSource's interface and canonical tensors."""
    arch, weights, _ = dense
    for path in (ckpt, ckpt / ITER_DIR):
        src = TorchDistSource.open(path)
        assert (src.format, src.iteration, src.checkpoint_version) == ("torch_dist", ITER, 3.0)
        assert src.path == ckpt / ITER_DIR
        assert src.layout == Layout(tp=2)
        assert src.keys() == canonical_keys(src.arch)
        info = src.describe()
        assert info["format"] == "torch_dist" and info["files"] == ["__0_0.distcp"]
        assert info["dialects"] == ["mcore", "te"]
    for key in src.keys():
        meta = src.get(key, meta=True)
        rows = src.get(key)
        assert meta.shape == rows.shape == tuple(weights[key].shape), key
        assert torch.equal(rows.tensor(), weights[key]), key
        src.release(rows)


def test_only_model_tensors_are_read(ckpt, pristine, tmp_path, monkeypatch):
    """Optimizer state and objects in the same .distcp files are never read; layers are read one at a time."""
    reads: list[tuple[str, tuple[int, ...]]] = []
    original = FileSystemReader.read_data

    def recording(self, plan, planner):
        reads.extend((i.storage_index.fqn, tuple(i.lengths)) for i in plan.items)
        return original(self, plan, planner)

    monkeypatch.setattr(FileSystemReader, "read_data", recording)
    merge(ckpt, tmp_path / "out", fsync=False)
    keys = {k for k, _ in reads}
    assert not [k for k in keys if k.startswith("optimizer.") or "/" in k]
    stored = set(read_metadata(ckpt / ITER_DIR).state_dict_metadata)
    assert keys == {k for k in stored if not k.startswith("optimizer.") and "/" not in k}
    stacked = [lengths for k, lengths in reads if k.startswith("decoder.layers.")]
    assert stacked and all(lengths[0] == 1 for lengths in stacked)
    assert not (pristine.parent / "pwned").exists()


@pytest.mark.parametrize("payload", ["os.system", "builtins.print"])
def test_metadata_pickle_that_runs_code_is_refused_unexecuted(ckpt, tmp_path, capsys, payload):
    """A .metadata naming any global outside DCP's classes is refused before anything runs."""
    marker = tmp_path / "pwned"
    obj = RunsCode(marker) if payload == "os.system" else Prints()
    (ckpt / ITER_DIR / ".metadata").write_bytes(pickle.dumps({"state_dict_metadata": obj}))
    name = r"(posix|os)\.system" if payload == "os.system" else r"builtins\.print"
    with pytest.raises(UnsafeCheckpointError, match=rf"would call {name}; refused without loading \[.*/\.metadata\]"):
        TorchDistSource.open(ckpt)
    assert not marker.exists()
    assert "pwned" not in capsys.readouterr().out


def test_common_state_that_runs_code_is_refused_unexecuted(dense, tmp_path):
    """The common_state object is loaded under the .pt allow-list, never with a plain unpickler."""
    arch, weights, _ = dense
    marker = tmp_path / "pwned"
    # DCP's default save planner packs the object once more, as Megatron's loader also accepts
    root = write_torch_dist(
        arch,
        weights,
        tmp_path / "dist",
        common="none",
        planner=DefaultSavePlanner,
        extra={"common_state/shard_0_1": io.BytesIO(evil_bytes(marker))},
    )
    with pytest.raises(UnsafeCheckpointError, match=r"would call (posix|os)\.system.*__0_0\.distcp:common_state"):
        TorchDistSource.open(root)
    assert not marker.exists()


def test_megatron_metadata_class_is_stood_in(ckpt, dense, monkeypatch):
    """core <= 0.15 pickles MCoreMetadata (a Metadata subclass); it loads without Megatron."""
    _, weights, _ = dense
    name = "megatron.core.dist_checkpointing.strategies.torch"

    @dataclasses.dataclass
    class MCoreMetadata(Metadata):
        mcore_data: dict | None = None

    MCoreMetadata.__module__, MCoreMetadata.__qualname__ = name, "MCoreMetadata"
    parts = name.split(".")
    for i in range(1, len(parts) + 1):
        monkeypatch.setitem(sys.modules, ".".join(parts[:i]), types.ModuleType(".".join(parts[:i])))
    sys.modules[name].MCoreMetadata = MCoreMetadata
    md = read_metadata(ckpt / ITER_DIR)
    fields = {f.name: getattr(md, f.name) for f in dataclasses.fields(Metadata)}
    data = pickle.dumps(MCoreMetadata(**fields, mcore_data={"k": {"nd_reformulated_orig_global_shape": None}}))
    monkeypatch.undo()
    (ckpt / ITER_DIR / ".metadata").write_bytes(data)
    src = TorchDistSource.open(ckpt)
    key = "decoder.layers.1.mlp.linear_fc1.weight"
    assert torch.equal(src.get(key).tensor(), weights[key])


def test_truncated_distcp_names_it(ckpt):
    file = ckpt / ITER_DIR / "__0_0.distcp"
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])
    with pytest.raises(MalformedFileError, match=r"truncated: \d+ bytes.*__0_0\.distcp\]"):
        TorchDistSource.open(ckpt)


def test_corrupt_tensor_bytes_name_file_and_key(ckpt, tmp_path):
    md = read_metadata(ckpt / ITER_DIR)
    key = "decoder.layers.mlp.linear_fc2.weight"
    info = next(v for k, v in md.storage_data.items() if k.fqn == key)
    file = ckpt / ITER_DIR / info.relative_path
    data = bytearray(file.read_bytes())
    data[info.offset : info.offset + info.length] = b"\0" * info.length
    file.write_bytes(bytes(data))
    src = TorchDistSource.open(ckpt)
    pattern = rf"cannot read the stored bytes from __0_0\.distcp \(UnpicklingError\).*__0_0\.distcp:{key}\]"
    with pytest.raises(MalformedFileError, match=pattern):
        src.get("decoder.layers.0.mlp.linear_fc2.weight")


def test_storage_path_leaving_the_directory_is_refused(ckpt):
    md = read_metadata(ckpt / ITER_DIR)
    for info in md.storage_data.values():
        info.relative_path = "../../etc/passwd"
    (ckpt / ITER_DIR / ".metadata").write_bytes(pickle.dumps(md))
    with pytest.raises(MalformedFileError, match=r"storage file '\.\./\.\./etc/passwd' is not a file name"):
        TorchDistSource.open(ckpt)


def _drop(name):
    return lambda tensors: tensors.pop(name)


def _add(name, shape):
    lead = 0 if re.match(r"decoder\.layers\.\d", name) else len(shape) - 2
    return lambda tensors: tensors.__setitem__(name, (torch.zeros(shape), lead))


def _shrink_layers(name):
    def edit(tensors):
        t, lead = tensors[name]
        tensors[name] = (t[:-1].clone(), lead)

    return edit


LAYOUT_ERRORS = {
    "missing-key": (
        _drop("decoder.final_layernorm.weight"),
        {},
        LayoutError,
        r"missing decoder\.final_layernorm\.weight",
    ),
    "unexpected-key": (
        _add("decoder.layers.mlp.router.weight", (4, 4, 32)),
        {},
        LayoutError,
        r"unexpected decoder\.layers\.0\.mlp\.router\.weight.*first stored as decoder\.layers\.mlp",
    ),
    "unknown-key": (
        _add("decoder.layers.self_attention.mystery.weight", (4, 3, 32)),
        {},
        LayoutError,
        r"unknown key.*\.metadata:decoder\.layers\.self_attention\.mystery\.weight",
    ),
    "stored-twice": (
        _add("decoder.layers.2.self_attention.linear_proj.weight", (32, 32)),
        {},
        LayoutError,
        r"stored twice, under decoder\.layers\.2\.self_attention\.linear_proj\.weight and "
        r"decoder\.layers\.self_attention\.linear_proj\.weight",
    ),
    "swiglu-half-missing": (
        _drop("decoder.layers.1.mlp.linear_fc1.weight_v"),
        dict(stacked=False, halves=True),
        LayoutError,
        r"SwiGLU halves stored as decoder\.layers\.1\.mlp\.linear_fc1\.weight_w;",
    ),
    "layer-axis-contradicts-args": (
        _shrink_layers("decoder.layers.mlp.linear_fc2.weight"),
        {},
        ShardMismatchError,
        r"leading axes \(layers\) are \(3,\), the args give \(4,\).*linear_fc2\.weight",
    ),
}


@pytest.mark.parametrize("case", LAYOUT_ERRORS, ids=list(LAYOUT_ERRORS))
def test_tensors_contradicting_args_name_the_key(dense, tmp_path, case):
    """Stored tensors that the recorded args do not describe fail at open, naming the key."""
    arch, weights, _ = dense
    edit, kwargs, error, pattern = LAYOUT_ERRORS[case]
    root = write_torch_dist(arch, weights, tmp_path / "dist", edit=edit, **kwargs)
    with pytest.raises(error, match=pattern):
        TorchDistSource.open(root)


def _edit_chunks(ckpt: Path, key: str, edit) -> None:
    md = read_metadata(ckpt / ITER_DIR)
    edit(md.state_dict_metadata[key].chunks)
    (ckpt / ITER_DIR / ".metadata").write_bytes(pickle.dumps(md))


def test_chunks_missing_from_metadata(ckpt):
    _edit_chunks(ckpt, "decoder.final_layernorm.weight", lambda chunks: chunks.pop())
    with pytest.raises(MalformedFileError, match=r"chunks hold 16 elements, the tensor 32.*final_layernorm\.weight"):
        TorchDistSource.open(ckpt)


def test_overlapping_chunks_never_leave_rows_unread(ckpt):
    """Chunks that overlap (and so leave a gap) are refused rather than returning uninitialised memory."""
    key = "decoder.final_layernorm.weight"
    _edit_chunks(
        ckpt, key, lambda chunks: chunks.__setitem__(1, ChunkStorageMetadata(torch.Size([8]), chunks[1].sizes))
    )
    src = TorchDistSource.open(ckpt)
    with pytest.raises(MalformedFileError, match=rf"stored chunks overlap.*\.metadata:{key}\]"):
        src.get(key)


def test_missing_distcp_names_it(ckpt):
    (ckpt / ITER_DIR / "__0_0.distcp").unlink()
    with pytest.raises(LayoutError, match=r"missing, but \.metadata places tensors in it \[.*__0_0\.distcp\]"):
        TorchDistSource.open(ckpt)


def test_shape_contradicting_args(ckpt):
    it = ckpt / ITER_DIR
    common = torch.load(it / "common.pt", weights_only=True)
    common["args"]["ffn_hidden_size"] = 48
    torch.save(common, it / "common.pt")
    pattern = r"stored shape \(128, 32\) contradicts the args, which give \(96, 32\).*:decoder\.layers\.mlp\.linear_fc1"
    with pytest.raises(ShardMismatchError, match=pattern):
        TorchDistSource.open(ckpt)


def test_other_sharded_backend_is_refused(ckpt):
    (ckpt / ITER_DIR / "metadata.json").write_text(json.dumps({"sharded_backend": "zarr"}))
    with pytest.raises(LayoutError, match=r"sharded_backend is 'zarr', not 'torch_dist'.*metadata\.json"):
        TorchDistSource.open(ckpt)


def test_torch_format_is_refused(dense, tmp_path):
    reshard(dense[2], tmp_path / "torch", fsync=False)
    with pytest.raises(LayoutError, match=r"torch-format checkpoint; open it with MegatronSource"):
        TorchDistSource.open(tmp_path / "torch")


@pytest.mark.parametrize(
    "content, pattern",
    [
        (pickle.dumps({"state_dict_metadata": {}}), r"holds dict, not torch\.distributed\.checkpoint Metadata"),
        (b"\x80\x04\x95garbage", r"cannot unpickle the DCP metadata"),
    ],
    ids=["not-metadata", "garbage"],
)
def test_malformed_metadata_names_it(ckpt, content, pattern):
    (ckpt / ITER_DIR / ".metadata").write_bytes(content)
    with pytest.raises(MalformedFileError, match=pattern + r".*/\.metadata\]"):
        TorchDistSource.open(ckpt)


def _drop(obj, name):
    delattr(obj, name)  # what a pickle whose BUILD sets other attributes leaves


NORM = "decoder.final_layernorm.weight"


def _storage_of(md, fqn):
    return next(info for index, info in md.storage_data.items() if index.fqn == fqn)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda md: _drop(_storage_of(md, NORM), "relative_path"), "storage location is not a file name"),
        (lambda md: setattr(_storage_of(md, NORM), "offset", -4), "storage location is not a file name"),
        (lambda md: setattr(md.state_dict_metadata[NORM], "size", "64"), "size is not a tuple of sizes"),
        (lambda md: setattr(md.state_dict_metadata[NORM].properties, "dtype", "bf16"), "not a torch dtype"),
        (lambda md: setattr(md.state_dict_metadata[NORM], "chunks", None), "chunks are not a list"),
        (lambda md: setattr(md.state_dict_metadata[NORM].chunks[0], "offsets", [0]), "chunks are not a list"),
        (lambda md: md.state_dict_metadata.update({NORM: 7}), "holds int, neither tensor nor bytes metadata"),
    ],
    ids=["no-file-name", "negative-offset", "size-a-string", "dtype-a-string", "no-chunks", "offsets-a-list", "int"],
)
def test_metadata_fields_of_another_type_name_the_entry(ckpt, edit, message):
    md = read_metadata(ckpt / ITER_DIR)
    edit(md)
    (ckpt / ITER_DIR / ".metadata").write_bytes(pickle.dumps(md))
    with pytest.raises(MalformedFileError, match=rf"{message}.* \[.*/\.metadata:{re.escape(NORM)}\]"):
        TorchDistSource.open(ckpt)


def test_metadata_storage_index_of_another_type_names_the_file(ckpt):
    md = read_metadata(ckpt / ITER_DIR)
    md.storage_data["x"] = next(iter(md.storage_data.values()))
    (ckpt / ITER_DIR / ".metadata").write_bytes(pickle.dumps(md))
    with pytest.raises(MalformedFileError, match=r"storage entry 'x' is malformed \[.*/\.metadata\]"):
        TorchDistSource.open(ckpt)


def test_missing_metadata_names_the_directory(ckpt):
    (ckpt / ITER_DIR / ".metadata").unlink()
    with pytest.raises(LayoutError, match=r"no \.metadata beside metadata\.json \[.*iter_0000007\]"):
        TorchDistSource.open(ckpt)


def test_no_arguments_anywhere(ckpt):
    (ckpt / ITER_DIR / "common.pt").unlink()
    with pytest.raises(LayoutError, match=r"no training arguments found and there is no arguments\.json"):
        TorchDistSource.open(ckpt)


def test_tied_head_copy_must_match(tmp_path):
    """A stored output_layer.weight beside a tied embedding must equal it."""
    arch = gpt2()
    weights = random_weights(arch)

    def add_head(tensors):
        emb, lead = tensors["embedding.word_embeddings.weight"]
        tensors["output_layer.weight"] = (emb + 1, lead)

    src = TorchDistSource.open(write_torch_dist(arch, weights, tmp_path / "dist", edit=add_head))
    with pytest.raises(ShardMismatchError, match=r"copy of the tied embedding differs.*:output_layer\.weight\]"):
        src.get("embedding.word_embeddings.weight")
