"""What changed between two releases, and the bump each change requires."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from vla_reference.errors import MalformedFileError
from vla_reference.hf import HFSource, write_hf
from vla_reference.release import (
    ARCHITECTURE_KEYS,
    REQUIRED_BUMP,
    Bump,
    ChangeKind,
    architecture_changes,
    count_parameters,
    diff_releases,
    required_bump,
    tensor_hashes,
    weight_files,
    write_manifest,
)

from builders import llama, moe, write_model


def release(root: Path, arch, *, seed: int = 0, shard: int | None = None) -> Path:
    model = root / "model"
    write_model(arch, root / "tmp-model", seed=seed)
    if shard:
        write_hf(HFSource(root / "tmp-model"), model, max_shard_size=shard, fsync=False)
        shutil.rmtree(root / "tmp-model")
    else:
        (root / "tmp-model").rename(model)
    (model / "tokenizer_config.json").write_text('{"model_max_length": 64}\n')
    (model / "README.md").write_text("# M\n")
    write_manifest(root, name="M", version="1.0.0")
    return root


def kinds(old: Path, new: Path) -> list[str]:
    return [c.kind.value for c in diff_releases(old, new)]


def test_table():
    assert REQUIRED_BUMP == {
        ChangeKind.ARCHITECTURE: Bump.MAJOR,
        ChangeKind.WEIGHTS: Bump.MINOR,
        ChangeKind.TOKENIZER: Bump.MINOR,
        ChangeKind.PREPROCESSING: Bump.MINOR,
        ChangeKind.OTHER: Bump.PATCH,
    }
    assert {"num_hidden_layers", "hidden_size", "num_attention_heads", "vocab_size", "num_experts"} <= ARCHITECTURE_KEYS
    assert "dtype" not in ARCHITECTURE_KEYS and "transformers_version" not in ARCHITECTURE_KEYS


def test_nothing_changed(tmp_path):
    a = release(tmp_path / "a", llama())
    b = release(tmp_path / "b", llama())
    assert diff_releases(a, b) == [] and required_bump([]) is Bump.NONE


def test_resharding_is_no_weight_change(tmp_path):
    a = release(tmp_path / "a", llama())
    b = release(tmp_path / "b", llama(), shard=20_000)
    assert len(weight_files(b / "model")) > 1
    assert tensor_hashes(a / "model").keys() == tensor_hashes(b / "model").keys()
    assert {k: v[0] for k, v in tensor_hashes(a / "model").items()} == {
        k: v[0] for k, v in tensor_hashes(b / "model").items()
    }
    assert kinds(a, b) == []
    assert count_parameters(a / "model") == count_parameters(b / "model")


def test_weights(tmp_path):
    a = release(tmp_path / "a", llama())
    b = release(tmp_path / "b", llama(), seed=1)
    (change,) = diff_releases(a, b)
    assert change.kind is ChangeKind.WEIGHTS and change.bump is Bump.MINOR
    assert (
        change.summary.startswith("39 of 39 tensors differ (lm_head.weight, model.embed_tokens.weight, ")
        and change.path == "model/model.safetensors"
    )


def test_dtype_is_a_weight_change(tmp_path):
    a = release(tmp_path / "a", llama())
    b = release(tmp_path / "b", llama())
    f = b / "model" / "model.safetensors"
    tensors = load_file(f)
    tensors["model.norm.weight"] = tensors["model.norm.weight"].double()
    save_file(tensors, f)
    (change,) = diff_releases(a, b)
    assert change.kind is ChangeKind.WEIGHTS and "(model.norm.weight)" in change.summary


def test_architecture(tmp_path):
    a = release(tmp_path / "a", llama())
    b = release(tmp_path / "b", moe(), seed=0)
    changes = diff_releases(a, b)
    assert [c.kind for c in changes] == [ChangeKind.ARCHITECTURE, ChangeKind.OTHER, ChangeKind.WEIGHTS]
    assert required_bump(changes) is Bump.MAJOR
    assert "architectures ['LlamaForCausalLM'] -> " in changes[0].summary


def test_config_fields_that_do_not_compute():
    changes = architecture_changes(
        {"num_hidden_layers": 2, "transformers_version": "4"}, {"num_hidden_layers": 2, "transformers_version": "5"}
    )
    assert [(c.kind, c.summary, c.key) for c in changes] == [
        (ChangeKind.OTHER, "config.json fields transformers_version changed", "transformers_version")
    ]
    (change,) = architecture_changes({"text_config": {"hidden_size": 8}}, {"text_config": {"hidden_size": 16}})
    assert change.summary == "config.json: text_config.hidden_size 8 -> 16"


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("model/tokenizer_config.json", ChangeKind.TOKENIZER),
        ("model/processor_config.json", ChangeKind.PREPROCESSING),
        ("model/visual_codebook.safetensors", ChangeKind.PREPROCESSING),
        ("model/README.md", ChangeKind.OTHER),
        ("scripts/run_pretrain.sh", ChangeKind.OTHER),
    ],
)
def test_file_kinds(tmp_path, path, kind):
    a = release(tmp_path / "a", llama())
    b = release(tmp_path / "b", llama())
    for root, text in ((a, "one"), (b, "two")):
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(json.dumps({"v": text}))
    (change,) = diff_releases(a, b)
    assert change.kind is kind and change.path == path, change


def test_added_file_is_a_change(tmp_path):
    a = release(tmp_path / "a", llama())
    b = release(tmp_path / "b", llama())
    (b / "NOTES.md").write_text("new\n")
    (change,) = diff_releases(a, b)
    assert change.kind is ChangeKind.OTHER and change.summary == "1 file(s) differ: NOTES.md"


def test_no_weights(tmp_path):
    (tmp_path / "model").mkdir()
    with pytest.raises(MalformedFileError, match=r"no model weights .*model.safetensors.*Fix: ship model.safetensors"):
        weight_files(tmp_path / "model")
