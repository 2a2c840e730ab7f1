"""The sharded forward over real gloo ranks computes the model, at every layout; failures are clear."""

from __future__ import annotations

import multiprocessing
import time

import pytest
import torch

from vla_reference import reshard
from vla_reference.megatron import MegatronSource
from vla_reference.parity import ParallelRunError, plan_ranks, reference_logits, run_ranks, sharded_logits

from builders import gpt2, llama, moe, write_model

SEQS = [[1, 5, 9, 2, 7, 3], [4, 4, 8, 1, 0, 2, 6, 11, 3, 3]]

CASES = {
    "llama-tp2-pp2": (llama(), 2, 2, 1),
    "llama-groups-lt-tp": (llama(num_query_groups=2), 4, 1, 1),
    "llama-tied-pp2": (llama(tied=True), 1, 2, 1),
    "gpt2-tp2-pp2-tied": (gpt2(), 2, 2, 1),
    "moe-tp2-pp2-ep2": (moe(every=2), 2, 2, 2),
    "mixtral-ep2": (moe(every=1), 1, 1, 2),
    "shared-expert-tp2-pp2-ep2": (
        moe(every=2, moe_shared_expert_intermediate_size=24, moe_shared_expert_gate=True),
        2,
        2,
        2,
    ),
    "qk-layernorm-groups-lt-tp": (llama(num_query_groups=2, qk_layernorm=True), 4, 1, 1),
    "qkv-bias-tp2-pp2": (llama(add_qkv_bias=True), 2, 2, 1),
}


@pytest.mark.parametrize("case", CASES)
def test_sharded_forward_matches_reference(tmp_path, case):
    arch, tp, pp, ep = CASES[case]
    weights = write_model(arch, tmp_path / "hf", seed=3)
    reshard(tmp_path / "hf", tmp_path / "ckpt", tp=tp, pp=pp, ep=ep, fsync=False)
    got = sharded_logits(MegatronSource.open(tmp_path / "ckpt"), SEQS, timeout_s=60)
    for ids, logits in zip(SEQS, got, strict=True):
        want = reference_logits(arch, weights.__getitem__, torch.tensor([ids]))[0]
        torch.testing.assert_close(logits, want, atol=1e-4, rtol=1e-4)


def test_crashed_rank_is_named_and_nothing_is_left(tmp_path, monkeypatch):
    write_model(llama(), tmp_path / "hf")
    reshard(tmp_path / "hf", tmp_path / "ckpt", tp=2, pp=2, fsync=False)
    src = MegatronSource.open(tmp_path / "ckpt")
    bad = tmp_path / "ckpt/release/mp_rank_01_001/model_optim_rng.pt"
    bad.write_bytes(b"not a checkpoint")  # after planning: only that rank notices
    with pytest.raises(ParallelRunError, match=r"rank 3 \(TP=1 PP=1 EP=0\) failed: .*\[.*mp_rank_01_001/model_optim"):
        sharded_logits(src, SEQS, timeout_s=60)
    assert not multiprocessing.active_children()


def sleepy_worker(plan, me, init, sequences, out_dir, timeout_s):
    """A rank that hangs (as one stuck in a collective would)."""
    import time

    time.sleep(600)


def test_hung_ranks_are_killed_within_the_bound(tmp_path):
    write_model(llama(), tmp_path / "hf")
    reshard(tmp_path / "hf", tmp_path / "ckpt", tp=2, pp=1, fsync=False)
    src = MegatronSource.open(tmp_path / "ckpt")
    start = time.monotonic()
    with pytest.raises(
        ParallelRunError, match=r"ranks 0 \(TP=0 PP=0 EP=0\), 1 \(TP=1 PP=0 EP=0\) did not finish within 2 s"
    ):
        run_ranks(plan_ranks(src), SEQS, timeout_s=2, path=src.path, target=sleepy_worker)
    assert time.monotonic() - start < 20
    assert not multiprocessing.active_children()
