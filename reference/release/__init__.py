"""The release: its parts, the manifest and its verification, tensor hashes, versioning (SemVer
and the bump a change requires).
"""

from ._code import CODE_SUFFIXES, remote_code
from ._manifest import (
    MANIFEST,
    FileMismatch,
    Listed,
    build_manifest,
    check_missing,
    check_paths,
    check_unlisted,
    escapes,
    find_mismatches,
    listed_files,
    listed_names,
    mismatch_problems,
    mismatch_table,
    read_manifest,
    release_files,
    scan_release,
    sha256_file,
    tokenizer_checksum,
    verify_manifest,
    write_manifest,
)
from ._pack import GOLDEN_TEXTS, PackError, pack
from ._release import PARTS, Part, Release
from ._rerecord import SnapshotsError, rerecord_snapshots
from ._semver import Bump, Version, VersionError, bump_between, next_version, parse_version, required_for
from ._tensor_hashes import count_parameters, tensor_hashes, weight_files
from ._versioning import (
    ARCHITECTURE_KEYS,
    REQUIRED_BUMP,
    ChangeKind,
    architecture_changes,
    diff_releases,
    required_bump,
)

__all__ = [
    "pack",
    "PackError",
    "rerecord_snapshots",
    "SnapshotsError",
    "GOLDEN_TEXTS",
    "CODE_SUFFIXES",
    "remote_code",
    "MANIFEST",
    "FileMismatch",
    "Listed",
    "build_manifest",
    "check_missing",
    "check_paths",
    "check_unlisted",
    "escapes",
    "find_mismatches",
    "listed_files",
    "listed_names",
    "mismatch_problems",
    "mismatch_table",
    "read_manifest",
    "release_files",
    "scan_release",
    "sha256_file",
    "tokenizer_checksum",
    "verify_manifest",
    "write_manifest",
    "PARTS",
    "Part",
    "Release",
    "Bump",
    "Version",
    "VersionError",
    "bump_between",
    "next_version",
    "parse_version",
    "required_for",
    "count_parameters",
    "tensor_hashes",
    "weight_files",
    "ARCHITECTURE_KEYS",
    "REQUIRED_BUMP",
    "ChangeKind",
    "architecture_changes",
    "diff_releases",
    "required_bump",
]
