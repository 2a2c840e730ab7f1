"""The parity statistics: elementwise tolerance, and top-1 agreement that is not fooled by ties."""

import torch

from vla_reference.parity import Tolerance, compare_logits

TOL = Tolerance(atol=1e-4, rtol=1e-4, kl=1e-6, top1=1.0)


def _logits() -> torch.Tensor:
    return torch.tensor([[2.0, 1.0, -1.0], [0.5, 3.0, 0.0]], dtype=torch.float32)


def test_a_near_tie_that_swaps_within_the_tolerance_still_agrees():
    want = _logits()
    want[0, 1] = 2.0 - 2e-5  # token 1 trails token 0 by less than the tolerance
    got = want.clone()
    got[0, 1] += 4e-5  # as another CPU's rounding might: now token 1 leads
    assert got[0].argmax() != want[0].argmax()
    stats = compare_logits("seq", got, want, TOL)
    assert stats.top1 == 1.0 and stats.within


def test_a_swap_beyond_the_tolerance_is_a_top1_miss():
    want = _logits()
    got = want.clone()
    got[1, 0] = 3.5  # token 0 overtakes the reference's clear winner (3.0 vs 0.5)
    stats = compare_logits("seq", got, want, Tolerance(atol=1.0, rtol=0.0, kl=10.0, top1=1.0))
    assert stats.top1 == 0.5 and not stats.within


def test_elementwise_difference_and_worst_position():
    want = _logits()
    got = want.clone()
    got[1, 2] += 1e-3
    stats = compare_logits("seq", got, want, TOL)
    assert not stats.within and stats.worst == (1, 2) and abs(stats.max_abs - 1e-3) < 1e-6
