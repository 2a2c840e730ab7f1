"""The shipped weights as content: which files hold them, how many parameters, per-tensor hashes.

Per-tensor hashes are taken over the merged Hugging Face model (``model/``): SHA-256 of
``"<dtype>|<shape>|"`` followed by the tensor's bytes, keyed by tensor name. They do not depend on
how the model is split into shard files, so a resharded release hashes the same.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from ..errors import MalformedFileError
from ..hf._checkpoint import INDEX, SINGLE, read_weight_map
from ..hf._safetensors import DTYPE_CODES, SafetensorsFile

__all__ = ["weight_files", "count_parameters", "tensor_hashes"]


def weight_files(model_dir: Path) -> list[Path]:
    """The model's safetensors files in a Hugging Face directory: the index's shards, else model.safetensors.

    Other safetensors files (a processor's codebooks) are not the model's weights. Raises
    MalformedFileError when there are none or the index names a missing file.
    """
    index = model_dir / INDEX
    if index.is_file():
        files = sorted(set(read_weight_map(model_dir).values()))
        for f in files:
            if not f.is_file():
                raise MalformedFileError("index names a shard that is not there", path=f, fix="re-copy the shards")
        return files
    if (model_dir / SINGLE).is_file():
        return [model_dir / SINGLE]
    files = sorted(model_dir.glob("model-*-of-*.safetensors"))
    if not files:
        raise MalformedFileError(
            "no model weights", path=model_dir / SINGLE, fix="ship model.safetensors (or shards and their index)"
        )
    return files


def count_parameters(model_dir: Path) -> int:
    """Number of parameters (elements of every tensor) of the shipped model, read from headers only."""
    total = 0
    for f in weight_files(model_dir):
        st = SafetensorsFile(f)
        for key in st.keys():
            n = 1
            for s in st.shape(key):
                n *= s
            total += n
    return total


def _tensor_hash(st: SafetensorsFile, key: str) -> str:
    t = st.tensor(key)
    h = hashlib.sha256(f"{DTYPE_CODES[t.dtype]}|{list(t.shape)}|".encode())
    if t.numel():
        h.update(t.reshape(-1).view(torch.uint8).numpy().data)
    return h.hexdigest()


def tensor_hashes(model_dir: Path, *, workers: int | None = None) -> dict[str, tuple[str, Path]]:
    """Tensor name -> (content hash, file holding it), hashed in parallel.

    Example:
        >>> hashes = tensor_hashes(Path("golden/dense/model"))  # doctest: +SKIP
        >>> hashes["model.norm.weight"][0][:8]                   # doctest: +SKIP
    """
    jobs: list[tuple[SafetensorsFile, str]] = []
    seen: dict[str, Path] = {}
    for f in weight_files(model_dir):
        st = SafetensorsFile(f)
        for key in st.keys():
            if key in seen:
                raise MalformedFileError(f"tensor also stored in {seen[key].name}", path=f, key=key)
            seen[key] = f
            jobs.append((st, key))
    with ThreadPoolExecutor(max_workers=workers or min(8, os.cpu_count() or 1)) as pool:
        digests = list(pool.map(lambda job: _tensor_hash(*job), jobs))
    return {key: (d, st.path) for (st, key), d in zip(jobs, digests, strict=True)}
