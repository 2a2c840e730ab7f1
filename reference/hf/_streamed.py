"""A stock transformers model that holds one module's weights at a time (the parity forward at scale).

``AutoModelForCausalLM.from_pretrained`` materialises every weight in float32: 4.8 GB for a 1.2B
model, 40 GB for 10B, in the process that compares the logits. :func:`streamed_model` builds the
same stock class from config.json with its parameters on the meta device (its buffers, e.g. the
rotary frequencies, computed as usual), checks every parameter against the safetensors files
(what ``from_pretrained`` checks, stricter: a missing or unused tensor, or a shape that
differs, is an error naming the file and key), and installs hooks so that a module's weights
are read from the memory-mapped files, as float32, just before its forward and dropped after
it. The forward is transformers' own code, unchanged; resident memory is one module's weights
(the largest is the embedding or the output layer) plus the activations.
"""

from __future__ import annotations

import contextlib
import math
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

import torch
from torch import nn

from ..errors import LayoutError, ShardMismatchError
from ._checkpoint import HFSource

__all__ = ["float32_bytes", "streamed_model"]


@contextlib.contextmanager
def _parameters_on_meta() -> Iterator[None]:
    """While constructing a module: each parameter is moved to the meta device as it is
    registered (freed at once), buffers stay where they are computed."""
    register = nn.Module.register_parameter

    def on_meta(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        register(module, name, param)
        if param is not None and param.device.type != "meta":
            module._parameters[name] = nn.Parameter(param.to("meta"), requires_grad=False)

    nn.Module.register_parameter = on_meta  # type: ignore[method-assign, assignment]
    try:
        yield
    finally:
        nn.Module.register_parameter = register  # type: ignore[method-assign]


# Parameters transformers 5 fuses at load time (its conversion mapping for the MoE families the
# converter maps): the model's one tensor per layer is every expert's stacked, gate and up
# concatenated. Each rule: the parameter's name, and for each checkpoint naming the per-expert
# tensors that make it, in order. Mixtral's checkpoints also say ``block_sparse_moe`` for ``mlp``.
_FUSED: Final = (
    (
        re.compile(r"^(?P<p>.*)\.mlp\.experts\.gate_up_proj$"),
        (
            ("{p}.mlp.experts.{e}.gate_proj.weight", "{p}.mlp.experts.{e}.up_proj.weight"),
            ("{p}.block_sparse_moe.experts.{e}.w1.weight", "{p}.block_sparse_moe.experts.{e}.w3.weight"),
        ),
    ),
    (
        re.compile(r"^(?P<p>.*)\.mlp\.experts\.down_proj$"),
        (("{p}.mlp.experts.{e}.down_proj.weight",), ("{p}.block_sparse_moe.experts.{e}.w2.weight",)),
    ),
)
_RENAMED: Final = ((re.compile(r"^(?P<p>.*)\.mlp\.(?P<rest>gate\.weight)$"), "{p}.block_sparse_moe.{rest}"),)


@dataclass(frozen=True)
class _Stored:
    """Where a parameter's value lies: one tensor, or per-expert tensors stacked (each expert's
    ``keys[e]`` concatenated along rows)."""

    keys: tuple[tuple[str, ...], ...]  # one tuple per expert (one expert: a plain tensor)
    fused: bool

    def shape(self, source: HFSource) -> tuple[int, ...]:
        shapes = [[tuple(source._where[k].shape(k)) for k in ks] for ks in self.keys]
        if not self.fused:
            return shapes[0][0]
        first = shapes[0]
        if any(s != first for s in shapes) or len({s[1:] for s in first}) != 1:
            return (-1,)  # experts of different shapes: reported as a mismatch
        return (len(shapes), sum(s[0] for s in first), *first[0][1:])

    def load(self, source: HFSource) -> torch.Tensor:
        """The value as float32 (a copy), the mapped pages it was read from given back."""
        views = [[source.hf_tensor(k) for k in ks] for ks in self.keys]
        out = (
            views[0][0].float() if not self.fused else torch.stack([torch.cat([v.float() for v in vs]) for vs in views])
        )
        for vs in views:
            for v in vs:
                source.pages.release(v)
        return out


def _where_stored(name: str, param: torch.Tensor, present: set[str]) -> _Stored | None:
    if name in present:
        return _Stored(((name,),), fused=False)
    for pattern, target in _RENAMED:
        m = pattern.match(name)
        if m and target.format(**m.groupdict()) in present:
            return _Stored(((target.format(**m.groupdict()),),), fused=False)
    for pattern, spellings in _FUSED:
        m = pattern.match(name)
        if m is None or param.dim() != 3:
            continue
        for templates in spellings:
            keys = tuple(tuple(t.format(e=e, **m.groupdict()) for t in templates) for e in range(param.shape[0]))
            if all(k in present for ks in keys for k in ks):
                return _Stored(keys, fused=True)
    return None


def float32_bytes(source: HFSource) -> int:
    """The bytes ``source``'s weights take in float32 (what ``from_pretrained`` in float32 holds)."""
    return 4 * sum(math.prod(st.shape(k)) for k, st in source._where.items())


def streamed_model(source: HFSource) -> Any:
    """The stock ``AutoModelForCausalLM`` for ``source`` (no remote code), in eval mode and
    float32, whose weights are read from ``source``'s mapped files module by module during each
    forward. Raises :class:`LayoutError` / :class:`ShardMismatchError` naming the file and key
    when a parameter has no tensor, a tensor no parameter, or the shapes differ."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(source.path, trust_remote_code=False)
    with _parameters_on_meta(), warnings.catch_warnings():
        # initialising a parameter already on the meta device is a no-op, and torch says so
        warnings.filterwarnings("ignore", message="Initializing zero-element tensors is a no-op")
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32, trust_remote_code=False)
    model.eval()
    cls = type(model).__name__
    present = set(source._where)
    # tied parameters are one object under several names; any one of them may be the stored tensor
    groups: dict[int, list[tuple[str, torch.Tensor]]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        groups.setdefault(id(p), []).append((name, p))
    stored: dict[str, _Stored] = {}
    for group in groups.values():
        found = [w for w in (_where_stored(n, p, present) for n, p in group) if w is not None]
        if not found:
            raise LayoutError(
                f"transformers' {cls} needs {group[0][0]} and no file holds it",
                path=source.path,
                key=group[0][0],
                fix="the config and the weights must describe the same model",
            )
        stored.update(dict.fromkeys((n for n, _ in group), found[0]))
    used = {k for w in stored.values() for ks in w.keys for k in ks}
    unused = sorted(present - used)
    if unused:
        raise LayoutError(
            f"transformers' {cls} has no parameter for {', '.join(unused[:6])}",
            path=source.path,
            key=unused[0],
            fix="the config and the weights must describe the same model",
        )
    for name, p in model.named_parameters(remove_duplicate=False):
        where = stored[name]
        got = where.shape(source)
        if got != tuple(p.shape):
            key = where.keys[0][0]
            raise ShardMismatchError(
                f"shape {list(got)} where transformers' {cls} has {list(p.shape)} for {name}",
                path=source._where[key].path,
                key=key,
                fix="the config and the weights must describe the same model",
            )
    for prefix, module in model.named_modules():
        own = {n: stored[f"{prefix}.{n}" if prefix else n] for n, p in module._parameters.items() if p is not None}
        if not own:
            continue
        meta = dict(module._parameters)

        def load(mod: nn.Module, _args: object, own: dict[str, _Stored] = own) -> None:
            for n, where in own.items():
                mod._parameters[n] = nn.Parameter(where.load(source), requires_grad=False)

        def drop(mod: nn.Module, _args: object, _out: object, meta: dict[str, Any] = meta) -> None:
            mod._parameters.update(meta)

        module.register_forward_pre_hook(load)
        module.register_forward_hook(drop)
    return model
