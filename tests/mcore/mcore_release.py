"""What differs between the megatron-core releases the generator runs on: one frozen record each.

Checkpoint formats, argument names and CPU-blocking calls drift between releases. Everything the
generator does differently on a release is read from its record here, never from a version test
in the code. 0.16.1 is the default (the venv's release); others run in a subprocess whose
``PYTHONPATH`` puts their ``--target`` install first (``mcore_fixtures.release_path``).
Imports nothing heavy: the launcher reads it without torch or megatron-core.
"""

from __future__ import annotations

import importlib.metadata
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

# isort: split
from mcore_cases import Case

HERE: Final = Path(__file__).resolve().parent
DEFAULT_VERSION: Final = "0.16.1"


@dataclass(frozen=True)
class Release:
    """One megatron-core release (and the Megatron-LM tag of the same name), as the generator sees it."""

    version: str
    #: Megatron-LM's ``parse_args`` defaults as a JSON file beside this module (``lm_args_dump.py``),
    #: or None: derived from the installed TransformerConfig plus ``mcore_args``' table (0.16.1).
    args_defaults: str | None = None
    #: This release's argument names for 0.16.1's (``dest`` on the Namespace), where they differ.
    arg_names: Mapping[str, str] = field(default_factory=dict)
    #: Arguments parsed with ``nargs='+'``: a list on the Namespace.
    list_args: frozenset[str] = frozenset()
    #: ``core_transformer_config_from_args`` beyond same-named fields: TransformerConfig field -> arg.
    config_from_args: Mapping[str, str] = field(default_factory=dict)
    #: ``_build_sharded_state_dict_metadata`` without the distributed optimizer; also the saved
    #: content metadata.
    sharded_metadata: Mapping[str, Any] = field(default_factory=dict)
    #: Megatron-LM adds ``dp_cp_group`` to that metadata (not saved).
    metadata_dp_cp_group: bool = False
    #: torch_dist ``rng_state`` is a ShardedObject over (pp, tp, dp) when EP > 1, else (pp, tp).
    rng_state_by_dp_with_ep: bool = False
    #: Query groups may be fewer than TP ranks (each rank then holds part of a group).
    groups_below_tp: bool = True
    #: EP with TP runs without sequence parallelism.
    ep_tp_without_sp: bool = True
    #: ``LanguageModule`` holds its embedding group (``model.embd_group``), else parallel_state does.
    model_embd_group: bool = True
    #: The pipelined schedules allocate with ``torch.tensor(0).cuda()``.
    schedules_call_tensor_cuda: bool = False
    #: ``dist_checkpointing.exchange_utils`` calls ``np.product`` (removed in NumPy 2).
    uses_np_product: bool = False

    def lm_arg(self, name: str) -> str:
        """This release's argument name for 0.16.1's ``name``."""
        return self.arg_names.get(name, name)

    def lm_defaults(self) -> dict[str, Any] | None:
        """Megatron-LM's recorded ``parse_args`` defaults (enums still encoded), or None (derived)."""
        return None if self.args_defaults is None else dict(_read_json(self.args_defaults))

    def refusal(self, case: Case) -> str | None:
        """Why ``case`` cannot be trained with this release, or None when it can."""
        m, lay = case.model, case.layout
        groups = m.num_query_groups or m.num_attention_heads
        if groups < lay.tp and not self.groups_below_tp:
            return f"TransformerConfig requires num_query_groups ({groups}) to be a multiple of TP ({lay.tp})"
        if lay.ep > 1 and lay.tp > 1 and not self.ep_tp_without_sp:
            return "TransformerConfig requires sequence parallelism with expert and tensor parallelism"
        defaults = self.lm_defaults()
        if m.moe_shared_expert_gate and defaults is not None and "moe_shared_expert_gate" not in defaults:
            return "Megatron-LM has no --moe-shared-expert-gate (the local spec builds ungated shared experts)"
        return None


@cache
def _read_json(name: str) -> Mapping[str, Any]:
    """A JSON file beside this module, read once."""
    return MappingProxyType(json.loads((HERE / name).read_text()))


RELEASES: Final[Mapping[str, Release]] = MappingProxyType(
    {
        r.version: r
        for r in (
            Release(
                "0.16.1",
                list_args=frozenset({"moe_router_load_balancing_type"}),
                config_from_args={"inference_sampling_seed": "seed", "moe_latent_size": "moe_latent_size"},
                sharded_metadata={"singleton_local_shards": False, "chained_optim_avoid_prefix": True},
                metadata_dp_cp_group=True,
                rng_state_by_dp_with_ep=True,
            ),
            Release(
                "0.13.1",
                args_defaults="mcore_lm_args-0.13.1.json",
                # 0.16 generates these arguments from TransformerConfig's fields and their names
                arg_names={"layernorm_epsilon": "norm_epsilon", "layernorm_zero_centered_gamma": "apply_layernorm_1p"},
                config_from_args={
                    "layernorm_epsilon": "norm_epsilon",
                    "layernorm_zero_centered_gamma": "apply_layernorm_1p",
                },
                groups_below_tp=False,
                ep_tp_without_sp=False,
                model_embd_group=False,
                schedules_call_tensor_cuda=True,
                uses_np_product=True,
            ),
        )
    }
)


@cache
def installed() -> Release:
    """The record of the megatron-core found first on ``sys.path`` (its dist-info's version)."""
    version = importlib.metadata.version("megatron-core")
    if version not in RELEASES:
        raise LookupError(f"megatron-core {version}: no record in mcore_release.RELEASES ({', '.join(RELEASES)})")
    return RELEASES[version]
