"""A Hugging Face config.json as data: one declared table of fields per family, read and written.

Each field ties config.json keys to :class:`~vla_reference.arch.Arch` fields, with the default
transformers takes when a key is absent, the conversion each way and the values no Megatron
model computes (refused, naming the key). Writing config.json, reading it back, naming the key
behind an Arch field in a message, and the docs all derive from the one table::

    Scalar("num_key_value_heads", "num_query_groups", default=lambda got: got["num_attention_heads"])
    Const("use_sliding_window", False, "sliding-window attention has no Megatron counterpart here")
    Fixed("normalization", "RMSNorm")       # what the class itself fixes (named as model_type)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

import torch

from ..errors import LayoutError, UnsupportedModelError
from ._model import Arch
from ._params import MAX_COUNT, Params

__all__ = [
    "Part",
    "Scalar",
    "Const",
    "Fixed",
    "Derived",
    "Rope",
    "MoeLayers",
    "DType",
    "Vocab",
    "Mirror",
    "Choice",
    "write_config",
    "read_config",
    "config_keys",
    "LLAMA3_ROPE",
]

_REQUIRED: Final = object()
_DT: Final = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# Megatron's Llama 3.x scaling fixes everything but the factor (RotaryEmbedding._apply_scaling).
LLAMA3_ROPE: Final = {"low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}


class Part(Protocol):
    """One piece of a family's config table."""

    def write(self, arch: Arch, dtype: torch.dtype) -> dict[str, Any]:
        """The config.json keys this part writes for ``arch``."""

    def read(self, c: Params, got: dict[str, Any]) -> dict[str, Any]:
        """The Arch fields this part reads (``got``: the fields read by the parts before it)."""

    def keys(self) -> dict[str, str]:
        """Arch field -> the config.json key that carries it (for messages)."""


def _typed(c: Params, key: str, kind: str, default: Any) -> Any:
    """``c[key]`` checked as ``kind``: int, count (up to MAX_COUNT), size (>= 0), float, eps, bool, str."""
    if kind == "int":
        return c.int(key, default)
    if kind == "count":
        return c.int(key, default, maximum=MAX_COUNT)
    if kind == "size":
        return c.int(key, default, minimum=0)
    if kind == "float":
        return c.float(key, default, positive=True)
    if kind == "eps":
        return c.float(key, default)
    if kind == "bool":
        return c.bool(key, default)
    if kind == "str":
        return c.str(key, default)
    raise ValueError(f"unknown kind {kind!r}")


@dataclass(frozen=True)
class Scalar:
    """One key carrying one Arch field, as is (or through ``to_hf``/``from_hf``)."""

    key: str
    arch: str
    kind: str = "int"
    default: Any = _REQUIRED  # a value, or a function of the fields read so far
    to_hf: Callable[[Any], Any] | None = None
    from_hf: Callable[[Any], Any] | None = None
    maximum_of: str | None = None  # an Arch field already read that bounds this value

    def write(self, arch: Arch, dtype: torch.dtype) -> dict[str, Any]:
        value = getattr(arch, self.arch)
        return {self.key: self.to_hf(value) if self.to_hf else value}

    def read(self, c: Params, got: dict[str, Any]) -> dict[str, Any]:
        default = self.default(got) if callable(self.default) else self.default
        default = None if default is _REQUIRED else default
        if self.maximum_of is not None:
            value: Any = c.int(self.key, default, maximum=got[self.maximum_of])
        else:
            value = _typed(c, self.key, self.kind, default)
        return {self.arch: self.from_hf(value) if self.from_hf else value}

    def keys(self) -> dict[str, str]:
        return {self.arch: self.key}


@dataclass(frozen=True)
class Const:
    """A key the class needs at one value: written so; any other value read is refused, ``why``.

    ``default`` is the class's own value when the key is absent (Mistral's 4096-token window, say).
    """

    key: str
    value: Any
    why: str = ""
    default: Any = _REQUIRED
    fix: str | None = None

    def write(self, arch: Arch, dtype: torch.dtype) -> dict[str, Any]:
        return {self.key: self.value}

    def read(self, c: Params, got: dict[str, Any]) -> dict[str, Any]:
        if not self.why:
            return {}
        present = self.key in c.raw
        if not present and self.default is _REQUIRED:
            return {}
        found = c.raw.get(self.key) if present else self.default
        if found != self.value:
            raise UnsupportedModelError(
                f"{self.key}={found!r}{'' if present else ' (the class default)'}: {self.why}",
                path=c.source,
                key=self.key,
                fix=self.fix or f"set {self.key} to {self.value!r} if the model was trained so",
            )
        return {}

    def keys(self) -> dict[str, str]:
        return {}


@dataclass(frozen=True)
class Fixed:
    """An Arch field the class itself fixes (RMSNorm, SwiGLU...): nothing to write; named by ``key``."""

    arch: str
    value: Any
    key: str = "model_type"

    def write(self, arch: Arch, dtype: torch.dtype) -> dict[str, Any]:
        return {}

    def read(self, c: Params, got: dict[str, Any]) -> dict[str, Any]:
        return {self.arch: self.value}

    def keys(self) -> dict[str, str]:
        return {self.arch: self.key}


@dataclass(frozen=True)
class Derived:
    """An Arch field computed from fields already read (GPT-2's head width, a shared-expert gate)."""

    arch: str
    value: Callable[[dict[str, Any]], Any]
    key: str

    def write(self, arch: Arch, dtype: torch.dtype) -> dict[str, Any]:
        return {}

    def read(self, c: Params, got: dict[str, Any]) -> dict[str, Any]:
        return {self.arch: self.value(got)}

    def keys(self) -> dict[str, str]:
        return {self.arch: self.key}


@dataclass(frozen=True)
class Rope:
    """``rope_parameters`` (transformers 5; read also as ``rope_scaling`` beside ``rope_theta``):
    the base, and Megatron's Llama 3.x scaling or linear interpolation."""

    default_theta: float = 1e4  # the class's default base

    def write(self, arch: Arch, dtype: torch.dtype) -> dict[str, Any]:
        params: dict[str, Any] = {"rope_type": "default", "rope_theta": arch.rotary_base}
        if arch.rope_scaling_factor is not None:
            params.update(rope_type="llama3", factor=arch.rope_scaling_factor, **LLAMA3_ROPE)
        elif arch.rotary_seq_len_interpolation_factor is not None:
            params.update(rope_type="linear", factor=arch.rotary_seq_len_interpolation_factor)
        return {"rope_parameters": params}

    def read(self, c: Params, got: dict[str, Any]) -> dict[str, Any]:
        raw = c.get("rope_parameters") or c.get("rope_scaling") or {}
        key = "rope_parameters" if c.has("rope_parameters") else "rope_scaling"
        if not isinstance(raw, Mapping):
            raise LayoutError(f"{key} is {raw!r}, expected an object", path=c.source, key=key)
        rope = Params(raw, c.source, noun="config.json value", prefix=f"{key}.")
        theta = rope.float("rope_theta", c.float("rope_theta", self.default_theta, positive=True), positive=True)
        rope_type = rope.str("rope_type", rope.str("type", "default"))
        out: dict[str, Any] = {"rotary_base": theta}
        if rope_type == "default":
            return out
        if rope_type == "llama3" and all(k in raw and rope.float(k, 0.0) == v for k, v in LLAMA3_ROPE.items()):
            return {**out, "rope_scaling_factor": rope.float("factor", None, positive=True)}
        if rope_type == "linear":
            return {**out, "rotary_seq_len_interpolation_factor": rope.float("factor", None, positive=True)}
        raise UnsupportedModelError(
            f"rope_type {rope_type!r} with {dict(raw)} has no Megatron counterpart (default, linear, and "
            f"llama3 with {LLAMA3_ROPE} have)",
            path=c.source,
            key=key,
        )

    def keys(self) -> dict[str, str]:
        return {
            "rotary_base": "rope_parameters.rope_theta",
            "rope_scaling_factor": "rope_parameters.factor",
            "rotary_seq_len_interpolation_factor": "rope_parameters.factor",
        }


@dataclass(frozen=True)
class MoeLayers:
    """Which layers have experts: every one (``dense_key`` None, Mixtral), or all but
    ``mlp_only_layers`` at ``decoder_sparse_step`` 1 (the Qwen MoE classes)."""

    dense_key: str | None = "mlp_only_layers"

    def write(self, arch: Arch, dtype: torch.dtype) -> dict[str, Any]:
        if self.dense_key is None:
            return {}
        return {self.dense_key: [i for i, moe in enumerate(arch.moe_layers) if not moe], "decoder_sparse_step": 1}

    def read(self, c: Params, got: dict[str, Any]) -> dict[str, Any]:
        layers = got["num_layers"]
        if self.dense_key is None:
            return {"moe_layers": (True,) * layers}
        dense = set(c.ints(self.dense_key, below=layers))
        step = c.int("decoder_sparse_step", 1)
        return {"moe_layers": tuple(i not in dense and (i + 1) % step == 0 for i in range(layers))}

    def keys(self) -> dict[str, str]:
        return {"moe_layers": self.dense_key or "architectures"}


@dataclass(frozen=True)
class DType:
    """The storage dtype: ``dtype`` (transformers 5) or ``torch_dtype``."""

    def write(self, arch: Arch, dtype: torch.dtype) -> dict[str, Any]:
        return {"dtype": str(dtype).removeprefix("torch.")}

    def read(self, c: Params, got: dict[str, Any]) -> dict[str, Any]:
        return {"params_dtype": _DT.get(str(c.get("dtype") or c.get("torch_dtype") or "float32"), torch.float32)}

    def keys(self) -> dict[str, str]:
        return {"params_dtype": "dtype"}


@dataclass(frozen=True)
class Vocab:
    """``vocab_size``: the merged embedding's rows, true and padded alike."""

    def write(self, arch: Arch, dtype: torch.dtype) -> dict[str, Any]:
        return {"vocab_size": arch.rows_vocab}

    def read(self, c: Params, got: dict[str, Any]) -> dict[str, Any]:
        vocab = c.int("vocab_size")
        return {"vocab_size": vocab, "padded_vocab_size": vocab}

    def keys(self) -> dict[str, str]:
        return {"rows_vocab": "vocab_size", "vocab_size": "vocab_size", "padded_vocab_size": "vocab_size"}


@dataclass(frozen=True)
class Mirror:
    """A key that repeats an Arch field another key carries (Llama's ``mlp_bias`` beside
    ``attention_bias``): written the same; read, it must agree, else ``why``."""

    key: str
    arch: str
    why: str

    def write(self, arch: Arch, dtype: torch.dtype) -> dict[str, Any]:
        return {self.key: getattr(arch, self.arch)}

    def read(self, c: Params, got: dict[str, Any]) -> dict[str, Any]:
        if c.bool(self.key, False) != got[self.arch]:
            raise UnsupportedModelError(self.why, path=c.source, key=self.key)
        return {}

    def keys(self) -> dict[str, str]:
        return {}


@dataclass(frozen=True)
class Choice:
    """A key whose accepted values map onto an Arch field's (GPT-2's activation_function)."""

    key: str
    arch: str
    read_as: Mapping[str, Any]  # config value -> Arch value; any other value is refused
    write_as: Mapping[Any, str]  # Arch value -> config value
    default: str

    def write(self, arch: Arch, dtype: torch.dtype) -> dict[str, Any]:
        return {self.key: self.write_as[getattr(arch, self.arch)]}

    def read(self, c: Params, got: dict[str, Any]) -> dict[str, Any]:
        value = c.str(self.key, self.default)
        if value not in self.read_as:
            raise UnsupportedModelError(
                f"{self.key} {value!r} (the converter maps {', '.join(self.read_as)})", path=c.source, key=self.key
            )
        return {self.arch: self.read_as[value]}

    def keys(self) -> dict[str, str]:
        return {self.arch: self.key}


def write_config(parts: Sequence[Part], arch: Arch, dtype: torch.dtype) -> dict[str, Any]:
    """config.json's model keys for ``arch``, part by part."""
    out: dict[str, Any] = {}
    for part in parts:
        out.update(part.write(arch, dtype))
    return out


def read_config(parts: Sequence[Part], c: Params) -> Arch:
    """The Arch the config describes: every part read in order (later parts see earlier fields)."""
    got: dict[str, Any] = {}
    for part in parts:
        got.update(part.read(c, got))
    return Arch(**got)


def config_keys(parts: Sequence[Part]) -> dict[str, str]:
    """Arch field -> the config.json key behind it, for messages that name the key to fix."""
    out: dict[str, str] = {}
    for part in parts:
        for name, key in part.keys().items():
            out.setdefault(name, key)
    return out
