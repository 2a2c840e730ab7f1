"""The megatron-core fixture generator writes what Megatron-LM writes, and what it wrote runs.

The checkpoints come from megatron-core itself (its modules, saver and pipeline schedule), so the
properties checked here are about the generator: the directory layout follows Megatron-LM's
naming, loading each checkpoint from disk into a fresh model reproduces the recorded logits, the
perturbation really moved norms, biases and experts, and it kept the sharded model consistent.
"""

from __future__ import annotations

import argparse
import doctest
import importlib
import importlib.metadata
import json
import re
import subprocess
import sys
from pathlib import Path

import filelock
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

# isort: split
from mcore_cases import (
    CASES,
    CASES_BY_NAME,
    EVAL_IDS,
    FORMATS,
    ITERATION,
    VOCAB_SIZE,
    Case,
    Layout,
    case_padded_vocab_size,
    layer_pattern,
)
from mcore_release import installed

pytest_plugins = ["mcore_fixtures"]
# Unpickling a legacy file's args imports megatron-core, which warns about every absent extra.
# One worker runs the module (scripts/test.sh uses --dist loadgroup): its fixtures run once.
pytestmark = [
    pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning"),
    pytest.mark.xdist_group("mcore-generator"),
]

CASE_IDS = [c.name for c in CASES]
ONE_RANK = Layout()


def _rank_dirs(layout: Layout) -> set[str]:
    """Megatron-LM's legacy rank directories for ``layout`` (re-derived here as the test oracle)."""
    names = set()
    for t in range(layout.tp):
        for p in range(layout.pp):
            for e in range(layout.ep):
                name = f"mp_rank_{t:02d}" + (f"_{p:03d}" if layout.pp > 1 else "")
                names.add(name + (f"_{e:03d}" if layout.ep > 1 else ""))
    return names


def _legacy(mcore_set: Path, case: Case, rank_dir: str) -> dict:
    """One legacy rank file, unpickled (args hold torch dtypes and a megatron enum)."""
    path = mcore_set / case.name / "legacy" / f"iter_{ITERATION:07d}" / rank_dir / "model_optim_rng.pt"
    return torch.load(path, map_location="cpu", weights_only=False)


def _model_states(sd: dict) -> dict[str, dict[str, torch.Tensor]]:
    """``{"model": ...}`` or ``{"model0": ..., "model1": ...}``: the tensors of each chunk."""
    return {
        k: {n: v for n, v in m.items() if torch.is_tensor(v)} for k, m in sd.items() if re.fullmatch(r"model\d*", k)
    }


@pytest.fixture(scope="session")
def forwards(
    request: pytest.FixtureRequest, mcore_set: Path, mcore_forward_batch, tmp_path_factory: pytest.TempPathFactory
) -> dict:
    """megatron-core's forward of every saved checkpoint, at its own layout and at one rank.

    Keys ``(case, "legacy" | "torch_dist" | "torch_dist@1")``; values the logits files. Run once
    per test session: xdist workers share the session's temporary root and wait on its lock.
    """
    base = tmp_path_factory.getbasetemp()
    if hasattr(request.config, "workerinput"):  # an xdist worker: its parent is the session's root
        base = base.parent
    out = base / f"mcore-forward-{mcore_set.name}"
    requests = []
    for case in CASES:
        for fmt in FORMATS:
            requests.append(((case.name, fmt), mcore_set / case.name / fmt, None))
        requests.append(((case.name, "torch_dist@1"), mcore_set / case.name / "torch_dist", ONE_RANK))
    files = {key: out / f"{key[0]}-{key[1]}.safetensors" for key, _, _ in requests}
    with filelock.FileLock(f"{out}.lock"):
        if not (out / "done").exists():
            mcore_forward_batch([(ckpt, key[0], files[key], layout) for key, ckpt, layout in requests])
            (out / "done").touch()
    return files


@pytest.mark.parametrize("module", ["mcore_cases", "mcore_args", "mcore_ckpt"])
def test_docstring_examples(module: str):
    """The examples in the generator's docstrings run and print what they show."""
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS, report=True)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {module} failed (see stdout)"


def test_case_table_is_consistent():
    """Every case's layout is one megatron accepts, and the padding cases cover both outcomes."""
    problems = []
    assert len(CASE_IDS) == len(set(CASE_IDS)), "case names are not unique"
    for c in CASES:
        m, lay = c.model, c.layout
        groups = m.num_query_groups or m.num_attention_heads
        if m.num_attention_heads % lay.tp or (groups % lay.tp and lay.tp % groups):
            problems.append(f"{c.name}: heads {m.num_attention_heads} / groups {groups} do not split over TP {lay.tp}")
        if m.num_layers % (lay.pp * (lay.vpp or 1)):
            problems.append(f"{c.name}: {m.num_layers} layers do not split into {lay.pp} x {lay.vpp or 1} stages")
        if lay.dp % lay.ep:
            problems.append(f"{c.name}: EP {lay.ep} is not carved out of DP {lay.dp}")
        if m.num_experts and m.num_experts % lay.ep:
            problems.append(f"{c.name}: {m.num_experts} experts do not split over EP {lay.ep}")
        if len(layer_pattern(m)) != m.num_layers:
            problems.append(f"{c.name}: MoE layer pattern {layer_pattern(m)} is not {m.num_layers} long")
    padded = {case_padded_vocab_size(c) > VOCAB_SIZE for c in CASES}
    assert padded == {True, False}, f"padding outcomes over the cases: {padded}, expected both"
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("name", CASE_IDS)
def test_case_directory_layout(mcore_set: Path, name: str):
    """OUT/<case> holds case.json, eval_ids.json, logits and both checkpoints in Megatron's naming."""
    case = CASES_BY_NAME[name]
    root = mcore_set / name
    problems = []
    record = json.loads((root / "case.json").read_text())
    if record["layout"]["tp"] != case.layout.tp or record["padded_vocab_size"] != case_padded_vocab_size(case):
        problems.append(f"case.json: {record['layout']}, padded {record['padded_vocab_size']}")
    if json.loads((root / "eval_ids.json").read_text()) != {"sequences": [list(s) for s in EVAL_IDS]}:
        problems.append("eval_ids.json differs from mcore_cases.EVAL_IDS")
    with safe_open(root / "logits.safetensors", "pt") as f:
        shapes = {k: (f.get_slice(k).get_shape(), f.get_slice(k).get_dtype()) for k in f.keys()}  # noqa: SIM118
    expected = {f"seq_{i}": ([len(s), VOCAB_SIZE], "F32") for i, s in enumerate(EVAL_IDS)}
    if shapes != expected:
        problems.append(f"logits.safetensors: {shapes}, expected {expected}")
    if (root / "logits_bf16.safetensors").exists() != (case.params_dtype == "bfloat16"):
        problems.append("logits_bf16.safetensors present iff the weights are bf16")
    for fmt in FORMATS:
        tracker = root / fmt / "latest_checkpointed_iteration.txt"
        if tracker.read_text() != str(ITERATION):
            problems.append(f"{tracker}: {tracker.read_text()!r}, expected '{ITERATION}'")
    legacy = {p.name for p in (root / "legacy" / f"iter_{ITERATION:07d}").iterdir()}
    if legacy != _rank_dirs(case.layout):
        problems.append(f"legacy rank directories {sorted(legacy)}, expected {sorted(_rank_dirs(case.layout))}")
    for d in legacy:
        if not (root / "legacy" / f"iter_{ITERATION:07d}" / d / "model_optim_rng.pt").is_file():
            problems.append(f"legacy/{d}: no model_optim_rng.pt")
    dist = {p.name for p in (root / "torch_dist" / f"iter_{ITERATION:07d}").iterdir()}
    writers = {int(m.group(1)) for m in (re.fullmatch(r"__(\d+)_\d+\.distcp", n) for n in dist) if m}
    if not {"metadata.json", ".metadata", "common.pt"} <= dist or writers != set(range(case.layout.world)):
        problems.append(f"torch_dist files {sorted(dist)}: expected metadata.json, .metadata, common.pt, "
                        f"__<rank>_<n>.distcp from ranks 0..{case.layout.world - 1}")  # fmt: skip
    meta = json.loads((root / "torch_dist" / f"iter_{ITERATION:07d}" / "metadata.json").read_text())
    if meta.get("sharded_backend") != "torch_dist":
        problems.append(f"torch_dist metadata.json: {meta}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("name", CASE_IDS)
def test_legacy_state_dict_follows_megatron_lm(mcore_set: Path, name: str):
    """Each legacy file holds args (Namespace, or dict where the case says), version 3.0, iteration, model(s)."""
    case = CASES_BY_NAME[name]
    problems = []
    for d in sorted(_rank_dirs(case.layout)):
        sd = _legacy(mcore_set, case, d)
        chunks = sorted(k for k in sd if re.fullmatch(r"model\d*", k))
        want_chunks = ["model"] if case.layout.vpp is None else [f"model{i}" for i in range(case.layout.vpp)]
        args = sd["args"]
        want_type = dict if case.legacy_args_as_dict else argparse.Namespace
        a = args if isinstance(args, dict) else vars(args)
        got = {
            "type": type(args), "checkpoint_version": sd["checkpoint_version"], "iteration": sd["iteration"],
            "chunks": chunks, "tp": a["tensor_model_parallel_size"], "pp": a["pipeline_model_parallel_size"],
            "ep": a["expert_model_parallel_size"], "vpp": a["virtual_pipeline_model_parallel_size"],
            "padded_vocab_size": a["padded_vocab_size"], "ckpt_format": a["ckpt_format"],
            "num_query_groups": a["num_query_groups"], "params_dtype": a["params_dtype"],
        }  # fmt: skip
        want = {
            "type": want_type, "checkpoint_version": 3.0, "iteration": ITERATION, "chunks": want_chunks,
            "tp": case.layout.tp, "pp": case.layout.pp, "ep": case.layout.ep, "vpp": case.layout.vpp,
            "padded_vocab_size": case_padded_vocab_size(case), "ckpt_format": "torch",
            "num_query_groups": case.model.num_query_groups or 1,
            "params_dtype": torch.bfloat16 if case.params_dtype == "bfloat16" else torch.float32,
        }  # fmt: skip
        problems += [f"{d}: {k} = {got[k]!r}, expected {want[k]!r}" for k in want if got[k] != want[k]]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("name", CASE_IDS)
def test_forward_from_disk_reproduces_logits(mcore_set: Path, forwards: dict, name: str, fmt: str):
    """Loading the saved checkpoint into a fresh model at its layout gives the recorded logits."""
    ref = load_file(mcore_set / name / "logits.safetensors")
    path = forwards[(name, fmt)]
    got = load_file(path)
    with safe_open(path, "pt") as f:
        skipped = {k: json.loads(v) for k, v in f.metadata().items()}
    diff = {k: (got[k] - ref[k]).abs().max().item() for k in ref}
    assert skipped == {"missing_keys": [], "unexpected_keys": [], "megatron_core": installed().version}, (
        f"{fmt}: non-strict load skipped {skipped}"
    )
    assert max(diff.values()) <= 1e-6, f"{name}/{fmt}: max |logit difference| {diff}, expected <= 1e-6"


@pytest.mark.parametrize("name", CASE_IDS)
def test_resharded_to_one_rank_gives_same_logits(mcore_set: Path, forwards: dict, name: str):
    """megatron-core resharding the torch_dist checkpoint to one rank computes the same model.

    Holds only if every replicated parameter was perturbed identically on all of its replicas
    (dist_checkpointing keeps one) and tied embeddings stayed tied.
    """
    ref = load_file(mcore_set / name / "logits.safetensors")
    got = load_file(forwards[(name, "torch_dist@1")])
    scale = max(v.abs().max().item() for v in ref.values())
    diff = max((got[k] - ref[k]).abs().max().item() for k in ref)
    assert diff <= 1e-5 * scale, f"{name}: max |logit difference| at one rank {diff:.3g} (scale {scale:.3g})"


@pytest.mark.parametrize("name", CASE_IDS)
def test_perturbation_moved_norms_biases_and_experts(mcore_set: Path, name: str):
    """No norm weight is all ones, no bias all zeros, and no two experts (over all EP ranks) are equal."""
    case = CASES_BY_NAME[name]
    problems, experts = [], {}
    for d in sorted(_rank_dirs(case.layout)):
        tp = d.split("_")[2]  # experts are compared within one TP rank, over every EP rank
        for chunk, state in _model_states(_legacy(mcore_set, case, d)).items():
            for key, t in state.items():
                where = f"{d}/{chunk}:{key}"
                if re.search(r"norm\.weight$", key) and torch.all(t == 1):
                    problems.append(f"{where}: norm weight is all ones")
                if key.endswith("bias") and torch.all(t == 0):
                    problems.append(f"{where}: bias is all zeros")
                m = re.search(r"^(.*)\.local_experts\.\d+\.(linear_fc\d\.weight)$", key)
                if m:  # SequentialMLP: one tensor per local expert
                    experts.setdefault((tp, chunk, m[1], m[2]), []).append(t)
                m = re.search(r"^(.*)\.(weight[12])$", key)
                if m and m[1].endswith("mlp.experts"):  # GroupedMLP: the local experts back to back
                    n = case.model.num_experts // case.layout.ep
                    experts.setdefault((tp, chunk, m[1], m[2]), []).extend(t.reshape(n, -1).unbind(0))
    if case.model.num_experts and not experts:
        problems.append("no expert weights found")
    for (tp, chunk, key, w), ts in experts.items():
        flat = [t.float().flatten() for t in ts]
        if len(ts) != case.model.num_experts:
            problems.append(f"tp {tp} {chunk}:{key}.{w}: {len(ts)} experts found, expected {case.model.num_experts}")
        if any(torch.equal(a, b) for i, a in enumerate(flat) for b in flat[i + 1 :]):
            problems.append(f"tp {tp} {chunk}:{key}.{w}: two experts hold equal weights")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("name", [c.name for c in CASES if c.layout.tp > 1])
def test_replicated_params_agree_over_tp(mcore_set: Path, name: str):
    """Norms, row-parallel biases, routers and shared-expert gates are equal on every TP rank."""
    case = CASES_BY_NAME[name]
    replicated = re.compile(r"(norm\.weight|norm\.bias|linear_proj\.bias|linear_fc2\.bias|router\.weight|gate_weight)$")
    by_rank = {}
    for d in sorted(_rank_dirs(case.layout)):
        tp = int(d.split("_")[2])
        rest = "_".join(d.split("_")[3:])
        for chunk, state in _model_states(_legacy(mcore_set, case, d)).items():
            for key, t in state.items():
                if replicated.search(key) and "local_experts" not in key:
                    by_rank.setdefault((rest, chunk, key), {})[tp] = t
    assert by_rank, "no replicated parameters found"
    problems = [
        f"{k}: TP ranks disagree" for k, ts in by_rank.items() if not all(torch.equal(ts[0], t) for t in ts.values())
    ]
    assert not problems, "\n".join(problems)


def test_tied_embeddings_stay_tied_across_stages(mcore_set: Path):
    """With tied embeddings and PP 2, the last stage's output weight equals the first stage's embedding."""
    case = CASES_BY_NAME["gpt2_tied_tp2_pp2"]
    problems = []
    for t in range(case.layout.tp):
        first = _legacy(mcore_set, case, f"mp_rank_{t:02d}_000")["model"]["embedding.word_embeddings.weight"]
        last = _legacy(mcore_set, case, f"mp_rank_{t:02d}_001")["model"]["output_layer.weight"]
        if not torch.equal(first, last):
            problems.append(f"tp {t}: output_layer.weight != embedding.word_embeddings.weight")
    assert not problems, "\n".join(problems)


def _cli(runner: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run mcore_run.py and capture its output."""
    return subprocess.run([sys.executable, str(runner), *args], capture_output=True, text=True, timeout=300)


def test_failing_rank_fails_the_command_with_its_traceback(mcore_set: Path, mcore_runner: Path, tmp_path: Path):
    """A rank that raises makes ``forward`` exit 1 and print that rank's traceback."""
    done = _cli(mcore_runner, "forward", str(mcore_set / "llama_tp2" / "legacy"), "--case", "gpt2_tp2", "--tp", "2",
                "--out", str(tmp_path / "x.safetensors"))  # fmt: skip
    assert done.returncode == 1, done.stderr[-3000:]
    assert re.search(r"rank \d failed\nTraceback", done.stderr), done.stderr[-3000:]
    assert "size mismatch" in done.stderr or "Missing key" in done.stderr, done.stderr[-3000:]


def test_launch_past_its_timeout_is_killed(mcore_runner: Path, tmp_path: Path):
    """A launch running past ``--timeout`` is killed and the command fails naming the timeout."""
    done = _cli(mcore_runner, "--timeout", "1", "generate", str(tmp_path / "set"), "--case", "llama_tp2")
    assert done.returncode == 1, done.stderr[-3000:]
    assert "timed out after 1 s" in done.stderr, done.stderr[-3000:]
    assert not (tmp_path / "set" / "llama_tp2").exists()


def test_missing_megatron_core_fails_not_skips(monkeypatch: pytest.MonkeyPatch):
    """Without megatron-core the fixtures fail the test (a pinned dependency), they never skip."""
    fixtures = importlib.import_module("mcore_fixtures")

    def absent(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", absent)
    with pytest.raises(pytest.fail.Exception, match="megatron-core is not importable"):
        fixtures.cache_key()
