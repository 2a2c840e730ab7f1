"""License identifiers as model cards write them, and what a LICENSE file's text says it is.

One table of common licenses: the SPDX identifier, the identifier the Hugging Face Hub writes in
``license:`` (lower case, e.g. ``apache-2.0``, ``llama2``), other spellings people use, and the
phrases that identify the license text (most specific licenses first, so that a CC BY-NC text is
not taken for CC BY). Identifiers are matched case-insensitively; SPDX expressions
(``Apache-2.0 OR MIT``) and ``LicenseRef-*`` are accepted.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final

__all__ = ["License", "LICENSES", "LICENSE_FILES", "lookup", "parse_expression", "identify_text", "suggest"]


@dataclass(frozen=True)
class License:
    """A license: its SPDX identifier (None for Hub-only ones), Hub identifier, other spellings, text phrases."""

    spdx: str | None
    hub: str | None
    aliases: tuple[str, ...] = ()
    phrases: tuple[str, ...] = ()  # all must appear in the LICENSE text (lower case, spaces collapsed)
    absent: tuple[str, ...] = ()  # none may appear (to tell a license from its variants)

    @property
    def name(self) -> str:
        return self.spdx or self.hub or "?"


def _cc(variant: str, title: str, versions: tuple[str, ...]) -> tuple[License, ...]:
    absent = tuple(a for a in ("noncommercial", "sharealike", "noderivatives") if a not in title.lower())
    return tuple(
        License(
            f"CC-{variant}-{v}",
            f"cc-{variant.lower()}-{v}",
            (f"cc {variant.lower().replace('-', ' ')} {v}",),
            (f"{title} {v}",),
            absent,
        )
        for v in versions
    )


# Most specific first: identify_text() returns the first whose phrases all appear.
LICENSES: Final[tuple[License, ...]] = (
    License(
        "Apache-2.0",
        "apache-2.0",
        ("apache 2.0", "apache 2", "apache license 2.0", "apache license, version 2.0", "apache license version 2.0"),
        ("apache license", "version 2.0"),
    ),
    License(
        "MIT", "mit", ("mit license", "the mit license", "expat"), ("permission is hereby granted, free of charge",)
    ),
    License(
        "BSD-3-Clause-Clear",
        "bsd-3-clause-clear",
        (),
        ("redistribution and use in source and binary forms", "no express or implied licenses to any party's patent"),
    ),
    License(
        "BSD-3-Clause",
        "bsd-3-clause",
        ("bsd 3 clause", "new bsd", "modified bsd"),
        ("redistribution and use in source and binary forms", "neither the name"),
    ),
    License(
        "BSD-2-Clause",
        "bsd-2-clause",
        ("bsd 2 clause", "simplified bsd", "freebsd"),
        ("redistribution and use in source and binary forms",),
        ("neither the name",),
    ),
    License(None, "bsd", ("bsd license",)),
    License("AGPL-3.0-only", "agpl-3.0", ("agpl-3.0", "agpl 3.0", "agplv3"), ("gnu affero general public license",)),
    License(
        "LGPL-3.0-only",
        "lgpl-3.0",
        ("lgpl-3.0", "lgpl 3.0", "lgplv3"),
        ("gnu lesser general public license", "version 3"),
    ),
    License(
        "LGPL-2.1-only",
        "lgpl-2.1",
        ("lgpl-2.1", "lgpl 2.1", "lgplv2.1"),
        ("gnu lesser general public license", "version 2.1"),
    ),
    License(None, "lgpl-lr"),
    License(
        "GPL-3.0-only",
        "gpl-3.0",
        ("gpl-3.0", "gpl 3.0", "gplv3", "gpl-3.0-or-later"),
        ("gnu general public license", "version 3"),
        ("lesser", "affero"),
    ),
    License(
        "GPL-2.0-only",
        "gpl-2.0",
        ("gpl-2.0", "gpl 2.0", "gplv2", "gpl-2.0-or-later"),
        ("gnu general public license", "version 2"),
        ("lesser", "affero"),
    ),
    License(None, "gpl", ("gnu gpl",)),
    License("MPL-2.0", "mpl-2.0", ("mozilla public license 2.0",), ("mozilla public license", "2.0")),
    License("EPL-2.0", "epl-2.0", (), ("eclipse public license", "2.0")),
    License("EPL-1.0", "epl-1.0", (), ("eclipse public license", "1.0")),
    License("BSL-1.0", "bsl-1.0", ("boost software license",), ("boost software license",)),
    License("ISC", "isc", ("isc license",), ("permission to use, copy, modify, and/or distribute this software",)),
    License("Zlib", "zlib", ("zlib license",), ("this software is provided 'as-is'", "altered source versions")),
    License("Artistic-2.0", "artistic-2.0", (), ("the artistic license 2.0",)),
    License("AFL-3.0", "afl-3.0", (), ("academic free license",)),
    License("OSL-3.0", "osl-3.0", (), ("open software license",)),
    License("ECL-2.0", "ecl-2.0", (), ("educational community license",)),
    License("EUPL-1.2", "eupl-1.2", (), ("european union public licence", "v. 1.2")),
    License("EUPL-1.1", "eupl-1.1", (), ("european union public licence", "v. 1.1")),
    License("MS-PL", "ms-pl", (), ("microsoft public license",)),
    License("NCSA", "ncsa", (), ("university of illinois/ncsa open source license",)),
    License("PostgreSQL", "postgresql", (), ("postgresql license",)),
    License("OFL-1.1", "ofl-1.1", (), ("sil open font license",)),
    License("LPPL-1.3c", "lppl-1.3c", (), ("latex project public license",)),
    License("WTFPL", "wtfpl", (), ("do what the fuck you want to public license",)),
    License("Unlicense", "unlicense", ("the unlicense",), ("free and unencumbered software released into the public",)),
    License("CC0-1.0", "cc0-1.0", ("cc0", "cc0 1.0"), ("cc0 1.0 universal",)),
    *_cc("BY-NC-ND", "attribution-noncommercial-noderivatives", ("4.0",)),
    *_cc("BY-NC-ND", "attribution-noncommercial-noderivs", ("3.0",)),
    *_cc("BY-NC-SA", "attribution-noncommercial-sharealike", ("2.0", "3.0", "4.0")),
    *_cc("BY-NC", "attribution-noncommercial", ("2.0", "3.0", "4.0")),
    *_cc("BY-ND", "attribution-noderivatives", ("4.0",)),
    *_cc("BY-SA", "attribution-sharealike", ("3.0", "4.0")),
    *_cc("BY", "attribution", ("2.0", "2.5", "3.0", "4.0")),
    License("ODbL-1.0", "odbl", ("odbl-1.0",), ("open database license",)),
    License("ODC-By-1.0", "odc-by", ("odc-by-1.0",), ("open data commons attribution license",)),
    License("PDDL-1.0", "pddl", ("pddl-1.0",), ("public domain dedication and license",)),
    License("CDLA-Sharing-1.0", "cdla-sharing-1.0", (), ("community data license agreement", "sharing")),
    License(
        "CDLA-Permissive-2.0", "cdla-permissive-2.0", (), ("community data license agreement", "permissive", "2.0")
    ),
    License("CDLA-Permissive-1.0", "cdla-permissive-1.0", (), ("community data license agreement", "permissive")),
    License("GFDL-1.3-only", "gfdl", ("gfdl-1.3",), ("gnu free documentation license",)),
    License(
        "CreativeML-OpenRAIL-M",
        "creativeml-openrail-m",
        ("creativeml openrail m",),
        ("creativeml open rail-m",),
    ),
    License(
        "BigScience-BLOOM-RAIL-1.0",
        "bigscience-bloom-rail-1.0",
        ("bloom rail 1.0",),
        ("bigscience rail license", "bloom"),
    ),
    License(
        "BigScience-OpenRAIL-M",
        "bigscience-openrail-m",
        ("bigscience openrail m",),
        ("bigscience open rail-m",),
    ),
    License(None, "bigcode-openrail-m", (), ("bigcode open rail-m",)),
    License(None, "openrail++", (), ("openrail++",)),
    License(None, "openrail", ("open rail",), ("open rail",)),
    License(None, "llama2", ("llama 2 community license",), ("llama 2 community license agreement",)),
    License(None, "llama3.3", ("llama 3.3 community license",), ("llama 3.3 community license agreement",)),
    License(None, "llama3.2", ("llama 3.2 community license",), ("llama 3.2 community license agreement",)),
    License(None, "llama3.1", ("llama 3.1 community license",), ("llama 3.1 community license agreement",)),
    License(None, "llama3", ("llama 3 community license",), ("meta llama 3 community license agreement",)),
    License(None, "llama4", ("llama 4 community license",), ("llama 4 community license agreement",)),
    License(None, "gemma", ("gemma terms of use",), ("gemma terms of use",)),
    License(None, "deepfloyd-if-license", (), ("deepfloyd if license agreement",)),
    License(None, "apple-ascl", (), ("apple sample code license",)),
    License(None, "apple-amlr"),
    License(None, "intel-research"),
    License(None, "h-research"),
    License("etalab-2.0", "etalab-2.0", (), ("licence ouverte", "2.0")),
    License(None, "lgpl", ("gnu lgpl",)),
    License(None, "cc", ("creative commons",)),
    License(None, "c-uda", (), ("computational use of data agreement",)),
)

LICENSE_FILES: Final = ("LICENSE", "LICENSE.txt", "LICENSE.md", "LICENCE", "LICENCE.txt", "COPYING", "COPYING.txt")

_BY_ID: Final[dict[str, License]] = {}
for _lic in LICENSES:
    for _name in (_lic.spdx, _lic.hub, *_lic.aliases):
        if _name:
            _BY_ID.setdefault(_name.lower(), _lic)
_SPDX_LINE: Final = re.compile(r"SPDX-License-Identifier:\s*([^\s*/#]+)", re.I)


def lookup(identifier: str) -> License | None:
    """The license a single identifier names (SPDX or Hub spelling, any case), else None.

    Example:
        >>> lookup("apache-2.0").spdx
        'Apache-2.0'
    """
    key = re.sub(r"\s+", " ", identifier.strip().strip("`'\"").lower())
    return _BY_ID.get(key) or _BY_ID.get(key.replace(" ", "-"))


def parse_expression(text: str) -> tuple[list[License], list[str]]:
    """The licenses of an identifier or SPDX expression, and the parts that name none.

    ``LicenseRef-*`` parts and the exception after ``WITH`` are accepted without a table entry.
    """
    found: list[License] = []
    unknown: list[str] = []
    expr = text.strip().strip("()")
    for part in re.split(r"\s+(?:OR|AND)\s+", expr, flags=re.I):
        part = re.split(r"\s+WITH\s+", part.strip().strip("()"), flags=re.I)[0].strip()
        if not part:
            continue
        if part.lower().startswith("licenseref-"):
            continue
        lic = lookup(part)
        if lic is None:
            unknown.append(part)
        else:
            found.append(lic)
    return found, unknown


def _normalized(text: str) -> str:
    return re.sub(r"\s+", " ", text.replace("’", "'").lower())


def identify_text(text: str) -> License | None:
    """Which license a LICENSE file holds: its SPDX-License-Identifier line, else the table's phrases."""
    m = _SPDX_LINE.search(text[:4096])
    if m:
        lic = lookup(m.group(1))
        if lic is not None:
            return lic
    body = _normalized(text)
    for lic in LICENSES:
        if lic.phrases and all(p in body for p in lic.phrases) and not any(a in body for a in lic.absent):
            return lic
    return None


def license_files(*dirs: Path) -> list[Path]:
    """The LICENSE-like files present in ``dirs`` (in order)."""
    return [d / name for d in dirs for name in LICENSE_FILES if (d / name).is_file()]


def suggest(identifier: str) -> str | None:
    """The closest known identifier, for a message."""
    close = difflib.get_close_matches(identifier.lower(), sorted(_BY_ID), n=1, cutoff=0.6)
    if not close:
        return None
    lic = _BY_ID[close[0]]
    return lic.hub or lic.spdx


__all__ += ["license_files"]
