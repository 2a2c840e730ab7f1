"""The golden releases' builder: ``python -m vla_reference.golden golden/``."""

from ._builder import build_all, build_release
from ._specs import COMPUTED_FILES, GOLDEN, GoldenSpec, computed

__all__ = [
    "COMPUTED_FILES",
    "GOLDEN",
    "GoldenSpec",
    "build_all",
    "build_release",
    "computed",
]
