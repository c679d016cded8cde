"""The update guard: non-finite losses and loss spikes veto an optimizer update, which then moves nothing."""

from __future__ import annotations

import math

import torch

from roots_scale.training.trainer import UpdateGuard


def test_nonfinite_losses_are_vetoed_and_counted_consecutively() -> None:
    guard = UpdateGuard(max_nonfinite=3, spike_zscore=None)
    assert guard.judge(2.0, window=10) is None
    assert guard.judge(math.nan, window=10) == "nonfinite"
    assert guard.judge(math.inf, window=10) == "nonfinite" and guard.consecutive_nonfinite == 2
    assert guard.judge(2.1, window=10) is None and guard.consecutive_nonfinite == 0


def test_a_spike_over_the_window_is_vetoed_and_kept_out_of_the_history() -> None:
    guard = UpdateGuard(max_nonfinite=3, spike_zscore=4.0)
    for i in range(20):
        assert guard.judge(3.0 + 0.01 * (i % 3), window=20) is None
    assert guard.judge(3.5, window=20) == "loss_spike"
    assert 3.5 not in guard.history
    assert guard.judge(3.01, window=20) is None  # back to normal


def test_a_vetoed_step_leaves_weights_and_adam_state_untouched() -> None:
    weight = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.AdamW([weight], lr=0.1)
    guard = UpdateGuard(max_nonfinite=3, spike_zscore=None)
    guard.attach(optimizer)
    weight.grad = torch.ones(3)
    optimizer.step()  # one real update creates the state
    before, moments = weight.detach().clone(), optimizer.state[weight]["exp_avg"].clone()
    guard.judge(math.nan, window=10)
    weight.grad = torch.full((3,), math.nan)
    optimizer.step()
    assert torch.equal(weight.detach(), before)
    assert torch.equal(optimizer.state[weight]["exp_avg"], moments) and int(optimizer.state[weight]["step"]) == 1
