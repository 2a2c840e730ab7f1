"""Reproduction assets: the config matrix, the launch script, the environment record, the Dockerfile."""

from ._dockerfile import check_dockerfile, parse_dockerfile, pinned_requirement
from ._environment import ENVIRONMENT_FILES, check_environment, environment_record
from ._launch import check_script_args, check_script_runs, expected_flags, launch_script, script_flags
from ._matrix import MATRIX, check_matrix, compare_config_arch, compare_config_args, read_config, select_config

__all__ = [
    "check_dockerfile",
    "parse_dockerfile",
    "pinned_requirement",
    "ENVIRONMENT_FILES",
    "MATRIX",
    "check_environment",
    "check_matrix",
    "check_script_args",
    "check_script_runs",
    "compare_config_arch",
    "compare_config_args",
    "environment_record",
    "expected_flags",
    "launch_script",
    "read_config",
    "script_flags",
    "select_config",
]
