"""The trainer loop and its callbacks, built by `build_run` on two real gloo ranks (forked, no launcher):
the order of the hooks, a stop decided by one callback or by a signal that reached only one rank, and the
checkpoint every stop leaves behind."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from in_process import ROOT, run_ok
from roots_scale.config import load_config, validate
from roots_scale.distributed import destroy_distributed, discover_launch_env, init_distributed
from roots_scale.run import build_run
from roots_scale.training.trainer import Callback, FitResult, Trainer
from store_helpers import write_random_store

HOOKS_PER_STEP = ["on_step_start", "before_update", "on_step_end", "on_record", "stop_reason", "after_step"]


class Recorder(Callback):
    """Writes down every hook call as (hook, step)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int | None]] = []

    def on_fit_start(self, trainer: Trainer) -> None:
        self.calls.append(("on_fit_start", None))

    def on_step_start(self, trainer: Trainer, step: int) -> None:
        self.calls.append(("on_step_start", step))

    def before_update(self, trainer: Trainer, step: int, loss: float) -> None:
        self.calls.append(("before_update", step))

    def on_step_end(self, trainer: Trainer, step: int, loss: float, record: dict) -> None:
        self.calls.append(("on_step_end", step))

    def on_record(self, trainer: Trainer, step: int, record: dict) -> None:
        self.calls.append(("on_record", step))

    def stop_reason(self, trainer: Trainer, step: int) -> str | None:
        self.calls.append(("stop_reason", step))
        return None

    def after_step(self, trainer: Trainer, step: int, stop: str | None) -> None:
        self.calls.append(("after_step", step))

    def on_fit_end(self, trainer: Trainer, result: FitResult | None) -> None:
        self.calls.append(("on_fit_end", result.step if result else None))


class StopAt(Callback):
    """Asks for a stop after `step`, on every rank."""

    def __init__(self, step: int) -> None:
        self.step = step

    def stop_reason(self, trainer: Trainer, step: int) -> str | None:
        return "asked" if step == self.step else None


class SignalOneRank(Callback):
    """Sends SIGUSR1 to rank 1's own process during `step`, as a scheduler that reached one node first would."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, trainer: Trainer, step: int, loss: float, record: dict) -> None:
        if step == self.step and int(os.environ["RANK"]) == 1:
            os.kill(os.getpid(), signal.SIGUSR1)


def fit(run_dir: str, store: str, extra: list[Callback], *overrides: str) -> tuple[FitResult, str | None, list]:
    """On each rank: build the run from the tiny GPT config, fit, and report the result, the latest
    checkpoint and what the Recorder among `extra` saw."""
    settings = [f"data.path={store}", f"run.output_dir={run_dir}", "model.seq_length=32", "train.log_interval=1",
                "train.save_interval=100", "data.num_workers=0", "optimizer.warmup_iters=1", *overrides]
    cfg = load_config(ROOT / "configs/tiny_gpt.yaml", settings)
    launch = discover_launch_env()
    plan = validate(cfg, launch.world_size)
    init_distributed(launch, cfg.parallel.tensor, cfg.parallel.pipeline)
    try:
        run = build_run(cfg, plan, launch, extra_callbacks=extra)
        result = run.trainer.fit()
        recorded = next((c.calls for c in extra if isinstance(c, Recorder)), [])
        return result, run.checkpoints.latest_tag(), recorded
    finally:
        destroy_distributed()


def assert_stopped_and_saved(ranks: list, reason: str, step: int, requeue: bool) -> None:
    """Every rank stopped after `step` for `reason`, and that step's checkpoint is the latest."""
    for rank in ranks:
        result, latest, _ = rank.value
        assert (result.reason, result.step, result.requeue) == (reason, step, requeue)
        assert latest == f"iter_{step:07d}"


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return write_random_store(tmp_path_factory.mktemp("data") / "store", num_documents=60, max_length=80)


def test_hooks_run_once_per_step_in_order_on_every_rank(tmp_path: Path, store: Path) -> None:
    ranks = run_ok(lambda: fit(str(tmp_path / "run"), str(store), [Recorder()], "train.iters=3"), 2)
    expected = [("on_fit_start", None)]
    for step in (1, 2, 3):
        expected += [(hook, step) for hook in HOOKS_PER_STEP]
    expected.append(("on_fit_end", 3))
    for rank in ranks:
        result, latest, calls = rank.value
        assert (result.reason, result.step, result.resumed_from) == ("finished", 3, None)
        assert calls == expected
        assert latest == "iter_0000003"  # the last step is always saved


def test_a_callback_can_stop_the_run_and_the_stop_is_checkpointed(tmp_path: Path, store: Path) -> None:
    ranks = run_ok(lambda: fit(str(tmp_path / "run"), str(store), [StopAt(2)], "train.iters=5"), 2)
    assert_stopped_and_saved(ranks, "asked", 2, requeue=False)

    resumed = run_ok(lambda: fit(str(tmp_path / "run"), str(store), [Recorder()], "train.iters=5"), 2)
    for rank in resumed:
        result, latest, calls = rank.value
        assert (result.reason, result.step, result.resumed_from) == ("finished", 5, 2)
        assert [step for hook, step in calls if hook == "on_step_start"] == [3, 4, 5]


def test_a_signal_that_reaches_one_rank_stops_every_rank_after_the_same_step(tmp_path: Path, store: Path) -> None:
    ranks = run_ok(lambda: fit(str(tmp_path / "run"), str(store), [SignalOneRank(2)], "train.iters=6"), 2)
    assert_stopped_and_saved(ranks, "preempted", 2, requeue=True)
