"""Dump Megatron-LM's ``parse_args`` defaults of one release as JSON (``mcore_lm_args-<version>.json``).

Megatron-LM's ``megatron/training`` is not part of the megatron-core wheel, so a release's argument
names and defaults come from its git tag. This runs that tag's ``add_megatron_arguments`` on an
empty command line (the imports it needs from ``megatron.training`` are stubbed: they are only
called by ``validate_args``) under the matching megatron-core::

    git -C Megatron-LM show core_v0.13.1:megatron/training/arguments.py > /tmp/arguments.py
    PYTHONPATH=.venv/mcore-0.13.1 .venv/bin/python tests/mcore/lm_args_dump.py /tmp/arguments.py \\
        > tests/mcore/mcore_lm_args-0.13.1.json

Enum defaults are written as ``{"enum": "AttnBackend", "name": "auto"}`` (``mcore_args`` reads
them back); every other default is JSON already.
"""

from __future__ import annotations

import argparse
import enum
import importlib.util
import json
import sys
import types
from typing import Any


def _stub_training() -> None:
    """``megatron.training.{activations,utils}``: the names arguments.py imports at module level."""
    training = types.ModuleType("megatron.training")
    training.__path__ = []  # a package, so that its submodules import
    activations = types.ModuleType("megatron.training.activations")
    activations.squared_relu = lambda x: x  # type: ignore[attr-defined]
    utils = types.ModuleType("megatron.training.utils")
    for name in ("get_device_arch_version", "update_use_dist_ckpt", "print_rank_0", "warn_rank_0", "is_rank0"):
        setattr(utils, name, lambda *a, **k: None)
    sys.modules.update(
        {"megatron.training": training, "megatron.training.activations": activations, "megatron.training.utils": utils}
    )


def _encode(value: Any) -> Any:
    """A default as JSON: enums by class and member name."""
    if isinstance(value, enum.Enum):
        return {"enum": type(value).__name__, "name": value.name}
    json.dumps(value)  # anything else must be JSON already
    return value


def main(argv: list[str] | None = None) -> int:
    """Print the defaults of the arguments.py given as JSON."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("arguments_py", help="megatron/training/arguments.py of the release's git tag")
    ns = p.parse_args(argv)
    _stub_training()
    spec = importlib.util.spec_from_file_location("megatron.training.arguments", ns.arguments_py)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    parser = module.add_megatron_arguments(argparse.ArgumentParser(allow_abbrev=False))
    defaults = vars(parser.parse_args([]))
    json.dump({k: _encode(v) for k, v in sorted(defaults.items())}, sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
