"""What the golden releases are: their models, layouts, seeds and prompts, their release date, and
which of their files hold computed floats."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import torch

from ..converter._model import Arch, Layout
from ..preprocessing._cases import SNAPSHOT_DIR
from ..release._pack import GOLDEN_TEXTS

RELEASE_DATE: Final = "2026-11-01"

# Files that hold floats computed by a forward pass or by signal processing, by path prefix. A
# float32 reduction's last bits depend on the CPU that ran it (SIMD width, BLAS kernel, libm,
# thread count), so a rebuild reproduces these within a tolerance (the value here), not byte for
# byte; the committed copy stays what one run of the builder wrote. Every other file is rebuilt
# byte for byte on any CPU.
COMPUTED_FILES: Final[dict[str, str]] = {
    "golden/expected_logits.safetensors": "the float32 parity tolerance, with the same top-1 token",
    f"{SNAPSHOT_DIR}/": "one 8-bit level of each float output's range; integers (codes, token ids) exactly",
}


def computed(rel: str) -> bool:
    """Whether the release file ``rel`` holds computed floats (see :data:`COMPUTED_FILES`).

    >>> computed("golden/expected_logits.safetensors"), computed("model/model.safetensors")
    (True, False)
    """
    return any(rel == p or (p.endswith("/") and rel.startswith(p)) for p in COMPUTED_FILES)


@dataclass(frozen=True)
class GoldenSpec:
    dirname: str
    name: str
    arch: Arch
    layout: Layout
    seed: int
    model_type: str


def _llama(**kw: Any) -> Arch:
    base: dict[str, Any] = dict(
        num_layers=4,
        hidden_size=64,
        ffn_hidden_size=128,
        num_attention_heads=4,
        num_query_groups=2,
        kv_channels=16,
        padded_vocab_size=1,
        vocab_size=None,
        normalization="RMSNorm",
        norm_epsilon=1e-5,
        swiglu=True,
        position_embedding_type="rope",
        max_position_embeddings=256,
        rotary_base=10000.0,
        tied=False,
        add_bias_linear=False,
        activation="silu",
        params_dtype=torch.float32,
    )
    base.update(kw)
    return Arch(**base)


GOLDEN: Final[tuple[GoldenSpec, ...]] = (
    GoldenSpec("dense", "VLA-Driver-Tiny-Dense", _llama(), Layout(tp=2, pp=2), 1, "Llama-style dense decoder"),
    GoldenSpec(
        "moe",
        "VLA-Driver-Tiny-MoE",
        _llama(
            num_experts=4,
            moe_router_topk=2,
            moe_ffn_hidden_size=64,
            moe_layers=tuple(i % 2 == 0 for i in range(4)),
            params_dtype=torch.bfloat16,
        ),
        Layout(tp=2, pp=2, ep=2),
        2,
        "Llama-style decoder with a mixture of experts every 2nd layer",
    ),
)


@dataclass(frozen=True)
class FineTuneSpec:
    """A golden fine-tune: a downstream team's Hugging Face directory derived from the golden
    release ``base`` (its weights plus seeded noise of ``std``; same tokenizer and preprocessing),
    packed with ``--baseline`` at a minor bump, as docs/metadata.md asks for changed weights."""

    dirname: str
    base: str
    version: str
    date: str
    seed: int
    std: float


FINE_TUNES: Final[tuple[FineTuneSpec, ...]] = (FineTuneSpec("dense-ft", "dense", "1.1.0", "2026-11-20", 11, 0.01),)

PROMPTS: Final = GOLDEN_TEXTS  # the eval set pack makes from the tokenizer
