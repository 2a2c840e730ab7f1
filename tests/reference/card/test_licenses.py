"""License identifiers as cards write them, and LICENSE texts recognised."""

from __future__ import annotations

import pytest

from vla_reference.card import LICENSES, identify_text, lookup, parse_expression, suggest


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("apache-2.0", "Apache-2.0"),
        ("Apache-2.0", "Apache-2.0"),
        ("Apache 2.0", "Apache-2.0"),
        ("MIT", "MIT"),
        ("bsd-3-clause", "BSD-3-Clause"),
        ("cc-by-nc-4.0", "CC-BY-NC-4.0"),
        ("CC-BY-NC-SA-4.0", "CC-BY-NC-SA-4.0"),
        ("gpl-3.0", "GPL-3.0-only"),
        ("AGPL-3.0-only", "AGPL-3.0-only"),
        ("llama2", "llama2"),
        ("llama3.1", "llama3.1"),
        ("openrail++", "openrail++"),
        ("bigscience-openrail-m", "BigScience-OpenRAIL-M"),
        ("gemma", "gemma"),
    ],
)
def test_lookup(text, name):
    assert lookup(text).name == name


def test_identifiers_unique():
    ids = [n for lic in LICENSES for n in {x.lower() for x in (lic.spdx, lic.hub) if x}]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize(
    "hub",
    """apache-2.0 mit openrail bigscience-openrail-m creativeml-openrail-m bigscience-bloom-rail-1.0
    bigcode-openrail-m afl-3.0 artistic-2.0 bsl-1.0 bsd bsd-2-clause bsd-3-clause bsd-3-clause-clear c-uda cc
    cc0-1.0 cc-by-2.0 cc-by-2.5 cc-by-3.0 cc-by-4.0 cc-by-sa-3.0 cc-by-sa-4.0 cc-by-nc-2.0 cc-by-nc-3.0
    cc-by-nc-4.0 cc-by-nd-4.0 cc-by-nc-nd-3.0 cc-by-nc-nd-4.0 cc-by-nc-sa-2.0 cc-by-nc-sa-3.0 cc-by-nc-sa-4.0
    cdla-sharing-1.0 cdla-permissive-1.0 cdla-permissive-2.0 wtfpl ecl-2.0 epl-1.0 epl-2.0 etalab-2.0 eupl-1.1
    eupl-1.2 agpl-3.0 gfdl gpl gpl-2.0 gpl-3.0 lgpl lgpl-2.1 lgpl-3.0 isc h-research intel-research lppl-1.3c
    ms-pl apple-ascl apple-amlr mpl-2.0 odc-by odbl openrail++ osl-3.0 postgresql ofl-1.1 ncsa unlicense zlib
    pddl lgpl-lr deepfloyd-if-license llama2 llama3 llama3.1 llama3.2 llama3.3 llama4 gemma""".split(),
)
def test_every_hub_license_is_known(hub):
    assert lookup(hub) is not None and lookup(hub.upper()) is not None


def test_expressions():
    found, unknown = parse_expression("(Apache-2.0 OR MIT) AND LicenseRef-acme")
    assert [f.name for f in found] == ["Apache-2.0", "MIT"] and unknown == []
    found, unknown = parse_expression("GPL-2.0-or-later WITH Classpath-exception-2.0")
    assert [f.name for f in found] == ["GPL-2.0-only"] and unknown == []
    assert parse_expression("apache2") == ([], ["apache2"])
    assert suggest("apache2") == "apache-2.0"


APACHE = "Apache License\nVersion 2.0, January 2004\nhttp://www.apache.org/licenses/\nTERMS AND CONDITIONS"
MIT = "MIT License\n\nPermission is hereby granted, free of charge, to any person obtaining a copy"
BSD = "Redistribution and use in source and binary forms, with or without modification, are permitted"


@pytest.mark.parametrize(
    ("text", "name"),
    [
        (APACHE, "Apache-2.0"),
        (MIT, "MIT"),
        (BSD + "\n3. Neither the name of the copyright holder", "BSD-3-Clause"),
        (BSD, "BSD-2-Clause"),
        ("Attribution-NonCommercial 4.0 International", "CC-BY-NC-4.0"),
        ("Attribution 4.0 International\n\nCreative Commons", "CC-BY-4.0"),
        ("GNU LESSER GENERAL PUBLIC LICENSE\nVersion 3, 29 June 2007", "LGPL-3.0-only"),
        ("GNU GENERAL PUBLIC LICENSE\nVersion 3, 29 June 2007", "GPL-3.0-only"),
        ("LLAMA 2 COMMUNITY LICENSE AGREEMENT\nLlama 2 Version Release Date: July 18, 2023", "llama2"),
        ("// SPDX-License-Identifier: MIT\nsome custom words", "MIT"),
        ("All rights reserved. Custom terms.", None),
    ],
)
def test_identify_text(text, name):
    found = identify_text(text)
    assert (found.name if found else None) == name
