"""The Dockerfile check: base images by tag and digest, pip packages pinned."""

from __future__ import annotations

import pytest

from vla_reference.repro import check_dockerfile, parse_dockerfile, pinned_requirement

DIGEST = "sha256:" + "a" * 64


def check(tmp_path, text, **files):
    for name, content in files.items():
        (tmp_path / name).write_text(content)
    (tmp_path / "Dockerfile").write_text(text)
    return [(p.what, p.observed, p.line) for p in check_dockerfile(tmp_path / "Dockerfile")]


def test_parse_joins_continuations_and_drops_comments():
    ins = parse_dockerfile("# c\nFROM a:1\nRUN pip install \\\n  # inner comment\n  x==1 \\\n  y==2\n")
    assert [(i.keyword, i.args, i.line) for i in ins] == [("FROM", "a:1", 2), ("RUN", "pip install x==1 y==2", 3)]


@pytest.mark.parametrize(
    ("line", "ok"),
    [
        (f"FROM nvcr.io/nvidia/pytorch:24.03-py3@{DIGEST}", True),
        (f"FROM --platform=linux/amd64 localhost:5000/img:1.0@{DIGEST} AS build", True),
        ("FROM scratch", True),
        ("FROM nvcr.io/nvidia/pytorch:24.03-py3", False),
        (f"FROM nvcr.io/nvidia/pytorch@{DIGEST}", False),
        ("FROM ubuntu", False),
    ],
)
def test_base_image(tmp_path, line, ok):
    assert (check(tmp_path, line + "\n") == []) is ok


def test_stages_and_args(tmp_path):
    text = f"ARG BASE=python:3.11-slim@{DIGEST}\nFROM $BASE AS build\nFROM build\nFROM ${{OTHER}}\n"
    assert check(tmp_path, text) == [
        ("base image not pinned by tag and digest", "FROM ${OTHER} (unresolved $OTHER)", 4)
    ]


@pytest.mark.parametrize(
    ("spec", "ok"),
    [
        ("torch==2.3.0", True),
        ("transformers[torch]==4.41.2", True),
        ("numpy===1.26.4", True),
        (".", True),
        ("./vendor/pkg", True),
        ("dist/pkg-1.0-py3-none-any.whl", True),
        ("git+https://github.com/NVIDIA/Megatron-LM.git@" + "0" * 40, True),
        ("megatron @ git+https://github.com/NVIDIA/Megatron-LM.git@core_r0.8.0", False),
        ("torch", False),
        ("torch>=2.3", False),
        ("torch==2.*", False),
        ("torch~=2.3.0", False),
        ("torch==2.3.0,<3", False),
    ],
)
def test_pinned_requirement(spec, ok):
    assert pinned_requirement(spec) is ok


def test_pip_forms(tmp_path):
    text = f"""FROM a:1@{DIGEST}
ARG TORCH=2.3.0
RUN python -m pip install --no-cache-dir -c constraints.txt torch==${{TORCH}} && pip3 install -U pip
RUN uv pip install --index-url https://x.org/simple flash-attn
RUN ["pip", "install", "einops==0.8.0"]
RUN apt-get install -y git && pip install -r requirements.txt -e . numpy==${{NUMPY}}
"""
    found = check(
        tmp_path,
        text,
        **{"requirements.txt": "# pinned\nsafetensors==0.4.3\nrich\n-r more.txt\n", "more.txt": "tqdm>=4\n"},
    )
    assert found == [
        ("pip package not pinned", "'pip'", 3),
        ("pip package not pinned", "'flash-attn'", 4),
        ("pip package not pinned", "'rich'", 3),
        ("pip package not pinned", "'tqdm>=4'", 1),
        ("pip package not pinned", "'numpy==${NUMPY}'", 6),
    ]


def test_missing_requirements_file(tmp_path):
    found = check(tmp_path, f"FROM a:1@{DIGEST}\nRUN pip install -r reqs.txt\n")
    assert found == [("requirements file not in the release", "pip install -r reqs.txt", 2)]


def test_no_from(tmp_path):
    assert check(tmp_path, "RUN echo hi\n")[0][0] == "no base image"
