"""The golden releases' builder: ``python -m vla_reference.golden golden/``."""

from ._builder import EXAMPLES, build_all, build_fine_tune, build_release
from ._specs import COMPUTED_FILES, FINE_TUNES, GOLDEN, FineTuneSpec, GoldenSpec, computed

__all__ = [
    "EXAMPLES",
    "COMPUTED_FILES",
    "FINE_TUNES",
    "FineTuneSpec",
    "GOLDEN",
    "GoldenSpec",
    "build_all",
    "build_fine_tune",
    "build_release",
    "computed",
]
