"""Reproduction assets: the config matrix, the launch script, the environment record."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from vla_reference.converter import Layout
from vla_reference.repro import (
    MATRIX,
    check_environment,
    check_matrix,
    check_script_args,
    check_script_runs,
    compare_config_args,
    expected_flags,
    read_config,
    script_flags,
    select_config,
)

from builders import llama, moe

FULL = {
    "num-layers": 4,
    "hidden-size": 32,
    "ffn-hidden-size": 64,
    "num-attention-heads": 4,
    "global-batch-size": 64,
    "lr-decay-style": "cosine",
    "lr": 3.0e-4,
    "tensor-model-parallel-size": 2,
    "pipeline-model-parallel-size": 2,
    "precision": "bf16",
}


def write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def test_matrix_names_unique():
    names = [n for k in MATRIX for n in (k.name, *k.aliases)]
    assert len(names) == len(set(names))
    assert all(k.arch or k.layout or k.args for k in MATRIX)


def test_read_config_yaml_nested_underscores(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("model:\n  num_layers: 4\n  moe_num_experts: N/A\ntraining:\n  --lr: 0.0003\n")
    assert read_config(f) == {"num-layers": 4, "moe-num-experts": "N/A", "lr": 0.0003}


def test_check_matrix(tmp_path):
    write(tmp_path / "a.json", FULL)
    assert check_matrix(tmp_path) == []
    write(tmp_path / "b.json", {**FULL, "num-experts": 8})
    write(tmp_path / "c.json", {k: v for k, v in FULL.items() if k not in ("lr", "precision")})
    (tmp_path / "d.yaml").write_text("num-layers: [")
    found = [(p.path.name, p.what) for p in check_matrix(tmp_path)]
    assert found == [
        ("b.json", "config lacks moe-router-topk"),
        ("c.json", "config lacks lr"),
        ("c.json", "config lacks the precision"),
        ("c.json", "two config files for one model size"),
        ("d.yaml", "config unreadable"),
    ]
    (tmp_path / "empty").mkdir()
    assert check_matrix(tmp_path / "empty")[0].what == "no config files"


@pytest.mark.parametrize("value", [[1, "a"], {"a": 1}, True])
def test_check_matrix_with_a_size_that_is_no_number(tmp_path, value):
    """A list where a model dimension belongs is no size to compare (the config-vs-model check
    reports the value); it used to raise TypeError (unhashable) comparing sizes."""
    write(tmp_path / "a.json", FULL)
    write(tmp_path / "b.json", {**FULL, "num-attention-heads": value})
    # a nested object is read as nested keys: then the dimension is missing, and said so
    problems = [(p.path.name, p.key) for p in check_matrix(tmp_path)]
    assert problems == ([("b.json", "num-attention-heads")] if isinstance(value, dict) else [])


def test_select_config(tmp_path):
    configs = tmp_path / "configs"
    write(configs / "small.json", FULL)
    write(configs / "big.json", {**FULL, "num-layers": 48})
    assert select_config(configs, {}, llama(hidden_size=32), root=tmp_path)[0] == configs / "small.json"
    path, problems = select_config(configs, {"config": "configs/none.json"}, llama(), root=tmp_path)
    assert path is None and problems[0].what == "release.json names a config that is not there"
    path, problems = select_config(configs, {}, llama(num_layers=2), root=tmp_path)
    assert path is None and problems[0].what == "no config for this release's size"


def test_compare_with_args():
    arch = moe(hidden_size=32, params_dtype=torch.bfloat16)
    config = {
        **FULL,
        "num-experts": 4,
        "moe-router-topk": 2,
        "moe-layer-freq": 2,
        "expert-model-parallel-size": 2,
        "global-batch-size": 64 * 256,
    }
    args = {"global_batch_size": 64, "seq_length": 256, "lr": 3e-4, "lr_decay_style": "cosine", "bf16": True}
    assert compare_config_args(config, arch, Layout(tp=2, pp=2, ep=2), args, path=Path("c.json"), source="args") == []
    config.update({"lr-decay-style": "linear", "precision": "fp16", "moe-layer-freq": [1, 1, 1, 1]})
    found = [
        p.what
        for p in compare_config_args(config, arch, Layout(tp=2, pp=2, ep=2), args, path=Path("c.json"), source="args")
    ]
    assert found == ["moe-layer-freq differs", "lr-decay-style differs", "precision differs"]


SCRIPT = """#!/usr/bin/env bash
set -euo pipefail
TP=2
export PP=${PP_OVERRIDE:-2}
: "${EP:=1}"
# --tensor-model-parallel-size 8 in a comment does not count
torchrun pretrain.py \\
    --num-layers 4 --tensor-model-parallel-size $TP \\
    --pipeline-model-parallel-size=${PP} --expert-model-parallel-size "$EP" \\
    --hidden-size $HIDDEN
"""


def test_script_flags():
    found = script_flags(
        SCRIPT,
        ["tensor-model-parallel-size", "pipeline-model-parallel-size", "expert-model-parallel-size", "hidden-size"],
    )
    assert found == {
        "tensor-model-parallel-size": [("2", 7)],
        "pipeline-model-parallel-size": [("2", 7)],
        "expert-model-parallel-size": [("1", 7)],
        "hidden-size": [(None, 7)],
    }


def test_check_script_args(tmp_path):
    script = tmp_path / "run.sh"
    script.write_text(SCRIPT)
    expected = expected_flags(llama(), Layout(tp=2, pp=4))
    found = [(p.what, p.observed) for p in check_script_args(script, expected, source="args")]
    assert found == [
        ("--hidden-size comes from the environment", "a value the script does not define"),
        ("--pipeline-model-parallel-size differs", "2"),
    ]
    script.write_text("torchrun pretrain.py --num-layers 4\n")
    found = [p.what for p in check_script_args(script, expected_flags(llama(), Layout(tp=2, pp=1)), source="args")]
    assert found == ["launch script does not set --tensor-model-parallel-size"]


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
def test_check_script_runs(tmp_path):
    script = tmp_path / "run.sh"
    assert check_script_runs(script)[0].what == "launch script missing"
    script.write_text("#!/bin/bash\necho ok\n")
    script.chmod(0o755)
    assert check_script_runs(script) == []
    script.write_text("#!/bin/bash\nif then\n")
    script.chmod(0o644)
    found = check_script_runs(script)
    assert [p.what for p in found] == ["launch script not executable", "launch script has a syntax error"]
    assert found[1].line == 2


def test_check_environment(tmp_path):
    f = write(
        tmp_path / "environment.json",
        {"python": "3.10.12", "PyTorch": "2.3.0a0+6ddf5cf85e", "cuda_version": "12.4", "nccl": [2, 20, 5]},
    )
    assert check_environment(f) == []
    write(f, {"python": "3.10", "torch": "TBD", "cuda": "twelve"})
    assert [p.key for p in check_environment(f)] == ["torch", "cuda", "nccl"]
    y = tmp_path / "environment.yaml"
    y.write_text("versions:\n  python: '3.11.7'\n  torch: '2.3.0'\n  cuda: '12.1'\n  nccl: '2.18.1'\n")
    assert check_environment(y) == []
