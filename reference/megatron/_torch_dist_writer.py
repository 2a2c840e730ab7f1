"""Write canonical parameters as a Megatron ``torch_dist`` checkpoint (PyTorch Distributed Checkpoint).

What megatron-core's ``dist_checkpointing.save`` writes, and ``dist_checkpointing.load`` reads
back at any TP/PP/EP: every tensor stored *global*, under megatron-core's sharded keys::

    embedding.word_embeddings.weight                               [V_padded, h]
    decoder.layers.self_attention.linear_qkv.weight                [L, qkv, h]        layers stacked
    decoder.layers.self_attention.linear_qkv.layer_norm_weight     [L, h]             input_layernorm
    decoder.layers.mlp.linear_fc1.layer_norm_weight                [L, h]             pre_mlp_layernorm
    decoder.layers.mlp.experts.experts.linear_fc1.weight           [L, E, 2F, h]      [gate; up]
    decoder.layers.3.mlp.router.weight                             [E, h]             MoE every k-th layer:
                                                                                      layers keyed one by one
    decoder.layers.self_attention.linear_qkv._extra_state/shard_0_4   (an object)     one per linear and layer

One chunk per layer (and expert), as megatron-core saves them, so no stacked tensor is ever held
whole; each chunk is read from the source when DCP's writer asks for it. ``common.pt`` holds
``args`` (an ``argparse.Namespace``, as Megatron-LM saves it), ``checkpoint_version``,
``iteration`` and ``content_metadata``; ``metadata.json`` names the backends.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.default_planner import DefaultSavePlanner
from torch.distributed.checkpoint.filesystem import FileSystemWriter
from torch.distributed.checkpoint.metadata import ChunkStorageMetadata, MetadataIndex, TensorProperties
from torch.distributed.checkpoint.planner import SavePlan, TensorWriteData, WriteItem, WriteItemType

from .._fs import atomic_dir
from ..converter._model import Arch, Layout
from ..converter._rows import Rows
from ..converter._sourcebase import Source
from ..converter._split_rules import EXTRA_STATE, FUSED_NORMS, LINEAR_MODULES, Scope, canonical_keys, rule_for
from ..errors import UnsupportedModelError
from ._checkpoint_dir import TRACKER
from ._rank_writer import CHECKPOINT_VERSION, check_layout, stored_for_split

__all__ = ["write_torch_dist", "BACKENDS"]

BACKENDS: Final = {
    "sharded_backend": "torch_dist",
    "sharded_backend_version": 1,
    "common_backend": "torch",
    "common_backend_version": 1,
}
_LAYERS: Final = "decoder.layers."
_LOCAL_EXPERT: Final = "mlp.experts.local_experts.{expert}."
_EXPERTS: Final = "mlp.experts.experts."
# what Megatron-LM 0.16 records of the sharded layout it saved (read back when it loads)
_CONTENT_METADATA: Final = {"singleton_local_shards": False, "chained_optim_avoid_prefix": True}


@dataclass(frozen=True)
class _Chunk:
    """One stored chunk: the canonical key it holds, or an ``_extra_state`` object (``key=None``)."""

    fqn: str
    offsets: tuple[int, ...]  # on the stored tensor's leading (layer, expert) axes; then zeros
    key: str | None


def _stacked(arch: Arch) -> bool:
    """megatron-core stacks the layers on a leading axis unless they differ (MoE every k-th layer)."""
    return not arch.num_experts or all(arch.moe_layers)


def _stored_name(key: str, arch: Arch) -> tuple[str, tuple[int, ...], tuple[int, ...]]:
    """A canonical key's torch_dist name, its indices on the leading axes and those axes' sizes."""
    rule, layer, expert = rule_for(key)
    if layer is None:
        return key, (), ()
    rest = rule.template.removeprefix(_LAYERS + "{layer}.")
    for fused, norm in FUSED_NORMS.items():
        rest = rest.replace(norm, fused)
    index: list[int] = []
    axes: list[int] = []
    if _stacked(arch):
        name = _LAYERS + rest
        index, axes = [layer], [arch.num_layers]
    else:
        name = f"{_LAYERS}{layer}.{rest}"
    if expert is not None:
        name = name.replace(_LOCAL_EXPERT, _EXPERTS)
        index.append(expert)
        axes.append(arch.num_experts)
    return name, tuple(index), tuple(axes)


def _extra_state(name: str, index: tuple[int, ...], axes: tuple[int, ...]) -> str | None:
    """The ``_extra_state`` object of the linear module owning ``name`` (megatron-core's
    ShardedObject key: offsets and shape on the leading axes), None for other parameters."""
    module = name.rpartition(".")[0]
    if module.rpartition(".")[2] not in LINEAR_MODULES or module == "output_layer" or not name.startswith(_LAYERS):
        return None
    offsets, shape = (".".join(map(str, index)), ".".join(map(str, axes))) if axes else ("0", "1")
    return f"{module}.{EXTRA_STATE}/shard_{offsets}_{shape}"


def _plan(arch: Arch, padded: int, shape_of: Callable[[str], tuple[int, ...]], dtype_of: Callable[[str], torch.dtype]):
    """The write items of the whole checkpoint and, by chunk, what each holds."""
    items: list[WriteItem] = []
    chunks: dict[MetadataIndex, _Chunk] = {}
    extra: dict[str, None] = {}
    for key in canonical_keys(arch):
        rule, _, _ = rule_for(key)
        if rule.scope is Scope.LAST and key == "output_layer.weight" and arch.tied:
            continue  # tied: megatron-core keys the output layer as the embedding
        name, index, axes = _stored_name(key, arch)
        shape = shape_of(key)
        offsets = torch.Size((*index, *(0 for _ in shape)))
        size = torch.Size((*axes, *shape))
        chunk = ChunkStorageMetadata(offsets=offsets, sizes=torch.Size((*(1 for _ in index), *shape)))
        at = MetadataIndex(name, offsets)
        items.append(
            WriteItem(
                index=at,
                type=WriteItemType.SHARD,
                tensor_data=TensorWriteData(chunk=chunk, properties=TensorProperties(dtype=dtype_of(key)), size=size),
            )
        )
        chunks[at] = _Chunk(name, index, key)
        obj = _extra_state(name, index, axes)
        if obj is not None:
            extra[obj] = None
    for obj in extra:
        at = MetadataIndex(obj)
        items.append(WriteItem(index=at, type=WriteItemType.BYTE_IO))
        chunks[at] = _Chunk(obj, (), None)
    return items, chunks


class _StreamingPlanner(DefaultSavePlanner):
    """DCP's default planner, handed its write items instead of a state dict: each chunk's tensor
    is produced when the storage writer reaches it, and the previous one is given back."""

    def __init__(self, items: list[WriteItem], produce: Callable[[WriteItem], torch.Tensor | io.BytesIO]) -> None:
        super().__init__(flatten_state_dict=False, flatten_sharded_tensors=False)
        self._items = items
        self._produce = produce

    def set_up_planner(self, state_dict: Any, storage_meta: Any = None, is_coordinator: bool = False) -> None:
        super().set_up_planner({}, storage_meta, is_coordinator)

    def create_local_plan(self) -> SavePlan:
        self.plan = SavePlan(list(self._items))
        return self.plan

    def resolve_data(self, write_item: WriteItem) -> torch.Tensor | io.BytesIO:
        return self._produce(write_item)


def _none_object() -> io.BytesIO:
    buf = io.BytesIO()
    torch.save([None], buf)  # megatron-core saves a list of its ShardedObjects' data
    buf.seek(0)
    return buf


def write_torch_dist(
    src: Source,
    dst: Path,
    layout: Layout,
    *,
    iteration: int | None = None,
    make_vocab_size_divisible_by: int | None = None,
    overwrite: bool = False,
    fsync: bool = True,
) -> dict[str, Any]:
    """Write ``src`` at ``dst`` as a torch_dist checkpoint recorded at ``layout``; returns the args.

    The tensors are layout-free (megatron-core reshards them when it loads); ``layout`` sets the
    recorded parallel sizes and the vocabulary padding (``make_vocab_size_divisible_by * tp``).

    Example:
        >>> write_torch_dist(HFSource(Path("hf")), Path("ckpt"), Layout(tp=2))  # doctest: +SKIP
    """
    src.finish()
    arch = src.arch
    if layout.ep > 1 and not arch.num_experts:
        raise UnsupportedModelError("EP>1 for a model without experts", key="expert_model_parallel_size")
    check_layout(arch, layout)
    if make_vocab_size_divisible_by is not None:
        arch = dataclasses.replace(arch, make_vocab_size_divisible_by=make_vocab_size_divisible_by)
    args = {**arch.to_args(layout), "ckpt_format": "torch_dist"}
    padded = args["padded_vocab_size"]
    if iteration is not None:
        args["iteration"] = iteration

    def meta(key: str) -> Rows:
        return stored_for_split(src.get(key, meta=True), padded, key)

    items, chunks = _plan(arch, padded, lambda k: tuple(meta(k).shape), lambda k: meta(k).dtype)
    held: list[Rows] = []

    def produce(item: WriteItem) -> torch.Tensor | io.BytesIO:
        for rows in held:
            src.release(rows)
        held.clear()
        chunk = chunks[item.index]
        if chunk.key is None:
            return _none_object()
        rows = stored_for_split(src.get(chunk.key), padded, chunk.key)
        held.append(rows)
        tensor = rows.tensor()
        return tensor.reshape((1,) * len(chunk.offsets) + tuple(tensor.shape))

    iter_name = "release" if iteration is None else f"iter_{iteration:07d}"
    with atomic_dir(dst, overwrite=overwrite, fsync=fsync) as tmp:
        iter_dir = tmp / iter_name
        iter_dir.mkdir()
        writer = FileSystemWriter(iter_dir, single_file_per_rank=True, sync_files=fsync, thread_count=1)
        with warnings.catch_warnings():  # one process by design: DCP's "torch.distributed is disabled"
            warnings.filterwarnings("ignore", message=".*torch.distributed is disabled")
            dcp.save({}, storage_writer=writer, planner=_StreamingPlanner(items, produce), no_dist=True)
        for rows in held:
            src.release(rows)
        common = {
            "args": argparse.Namespace(**args),
            "checkpoint_version": CHECKPOINT_VERSION,
            "iteration": 0 if iteration is None else iteration,
            "content_metadata": dict(_CONTENT_METADATA),
        }
        torch.save(common, iter_dir / "common.pt")
        (iter_dir / "metadata.json").write_text(json.dumps(BACKENDS))
        (tmp / TRACKER).write_text(("release" if iteration is None else str(iteration)) + "\n")
    return args
