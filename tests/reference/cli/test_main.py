"""``vla-release`` exit codes and output."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

from vla_reference.cli import main

from builders import llama, write_model


def test_merge_reshard_inspect(tmp_path, capsys):
    write_model(llama(), tmp_path / "hf")
    assert main(["reshard", str(tmp_path / "hf"), str(tmp_path / "mg"), "--tp", "2", "--pp", "2", "--no-fsync"]) == 0
    assert main(["merge", str(tmp_path / "mg"), str(tmp_path / "back"), "--max-shard-size", "20KB"]) == 0
    assert (tmp_path / "back/model.safetensors.index.json").is_file()
    assert main(["inspect", str(tmp_path / "mg")]) == 0
    out = capsys.readouterr().out
    assert "TP=2 PP=2 EP=1" in out
    assert "decoder.layers.0.self_attention.linear_qkv.weight" in out and "column/qkv" in out
    assert main(["inspect", "--json", str(tmp_path / "mg")]) == 0
    info = json.loads(capsys.readouterr().out)
    fc1 = next(t for t in info["tensors"] if t["key"] == "decoder.layers.3.mlp.linear_fc1.weight")
    assert fc1["shape"] == [128, 32] and fc1["rank_shape"] == [64, 32] and fc1["split"] == "column/gated"


def test_conversion_error_exits_1_with_file_and_key(tmp_path, capsys):
    write_model(llama(), tmp_path / "hf")
    main(["reshard", str(tmp_path / "hf"), str(tmp_path / "mg"), "--tp", "2", "--pp", "1"])
    shutil.rmtree(tmp_path / "mg/release/mp_rank_01")
    assert main(["merge", str(tmp_path / "mg"), str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("vla-release: error: missing rank directories mp_rank_01")
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_usage_error_exits_2(tmp_path, capsys):
    assert main(["reshard", str(tmp_path), str(tmp_path / "x"), "--tp", "0", "--pp", "1"]) == 2
    assert main(["merge", str(tmp_path)]) == 2
    assert main(["frobnicate"]) == 2


def test_console_script_is_installed(tmp_path):
    write_model(llama(), tmp_path / "hf")
    proc = subprocess.run(
        [sys.executable, "-m", "vla_reference.cli", "inspect", str(tmp_path / "hf")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "LlamaForCausalLM" in proc.stdout


def test_inspect_and_merge_given_a_release_root_use_its_checkpoint(tmp_path, capsys):
    """A release's root is not a checkpoint, but it holds one: ``checkpoint/`` is what is meant."""
    from conftest import GOLDEN

    assert main(["inspect", str(GOLDEN / "dense")]) == 0
    assert "golden/dense/checkpoint/iter_0001000" in capsys.readouterr().out
    tokenizer = str(GOLDEN / "dense/model")
    assert main(["merge", str(GOLDEN / "dense"), str(tmp_path / "merged"), "--tokenizer", tokenizer, "--no-fsync"]) == 0
    shipped = GOLDEN / "dense/model/model.safetensors"
    assert (tmp_path / "merged/model.safetensors").read_bytes() == shipped.read_bytes()
