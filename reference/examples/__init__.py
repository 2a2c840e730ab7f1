"""The release's demos (``examples/``): reading them without running them, and running them
confined (a subprocess, a temporary working directory, a time bound, the hub offline, no network,
reads confined to the release and the installed environment).
"""

from ._runner import ExampleRun, run_example
from ._static import (
    INVOCATIONS,
    REQUIRED_EXAMPLES,
    example_files,
    hand_preprocessing,
    outside_paths,
    parse_example,
    unavailable_imports,
)

__all__ = [
    "INVOCATIONS",
    "REQUIRED_EXAMPLES",
    "ExampleRun",
    "example_files",
    "hand_preprocessing",
    "outside_paths",
    "parse_example",
    "run_example",
    "unavailable_imports",
]
