"""The update guard: non-finite losses and loss spikes veto an optimizer update, which then moves nothing."""

from __future__ import annotations

import math

import torch

from roots_scale.training.callbacks.update_guard import GuardSettings, UpdateGuard


def guard_with(spike_zscore: float | None, window: int) -> UpdateGuard:
    return UpdateGuard(GuardSettings(max_nonfinite_steps=3, spike_zscore=spike_zscore, spike_window=window),
                       latest_checkpoint=lambda: None)


def test_nonfinite_losses_are_vetoed_and_counted_consecutively() -> None:
    guard = guard_with(None, 10)
    assert guard.judge(2.0) is None
    assert guard.judge(math.nan) == "nonfinite"
    assert guard.judge(math.inf) == "nonfinite" and guard.consecutive_nonfinite == 2
    assert guard.judge(2.1) is None and guard.consecutive_nonfinite == 0


def test_a_spike_over_the_window_is_vetoed_and_kept_out_of_the_history() -> None:
    guard = guard_with(4.0, 20)
    for i in range(20):
        assert guard.judge(3.0 + 0.01 * (i % 3)) is None
    assert guard.judge(3.5) == "loss_spike"
    assert 3.5 not in guard.history
    assert guard.judge(3.01) is None  # back to normal


def test_a_vetoed_step_leaves_weights_and_adam_state_untouched() -> None:
    weight = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.AdamW([weight], lr=0.1)
    guard = guard_with(None, 10)
    guard.attach(optimizer)
    weight.grad = torch.ones(3)
    optimizer.step()  # one real update creates the state
    before, moments = weight.detach().clone(), optimizer.state[weight]["exp_avg"].clone()
    guard.judge(math.nan)
    weight.grad = torch.full((3,), math.nan)
    optimizer.step()
    assert torch.equal(weight.detach(), before)
    assert torch.equal(optimizer.state[weight]["exp_avg"], moments) and int(optimizer.state[weight]["step"]) == 1
