"""Every `eval_interval` steps and at the last one: the task's validation metrics (`valid_accuracy`,
`valid_f1_macro`, ..., or `valid_bleu`, `valid_chrf`), a report per evaluation (the confusion matrix or the
decoded texts) under `evaluations/`, the best checkpoint by the chosen metric kept and named
(`checkpoints/best.json`), and early stopping after `patience` evaluations without improvement.

Runs in eval mode without gradients and puts the RNG state back afterwards, so a run with validation trains
exactly as one without; a resumed run knows its best checkpoint and its patience count.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from roots_core.atomic import write_text_atomic
from roots_scale.checkpoint.files import tag_for_step
from roots_scale.checkpoint.manager import CheckpointManager
from roots_scale.checkpoint.rng import capture_rng_state, restore_rng_state
from roots_scale.finetune.evaluation import Evaluation
from roots_scale.finetune.metrics import higher_is_better
from roots_scale.training.callbacks.checkpointing import Checkpointing
from roots_scale.training.trainer import Callback, Trainer

EARLY_STOPPED = "early_stopped"


@dataclass(frozen=True)
class Selection:
    """Which validation metric picks the best checkpoint, and after how many evaluations without improvement
    the run stops (None: never)."""

    metric: str
    patience: int | None


class TaskValidation(Callback):
    """Put it after `Checkpointing`: a best step that was not saved on the cadence is saved here."""

    def __init__(self, evaluate: Callable[[Trainer], Evaluation], eval_interval: int | None, selection: Selection,
                 checkpoints: CheckpointManager, report_dir: Path | None) -> None:
        self.evaluate = evaluate
        self.eval_interval = eval_interval
        self.selection = selection
        self.checkpoints = checkpoints
        self.report_dir = report_dir  # rank 0 writes the reports; None elsewhere
        self.best: tuple[float, int] | None = None  # (value, step)
        self.stale = 0  # evaluations since the best
        self._improved_at: int | None = None

    def _due(self, trainer: Trainer, step: int) -> bool:
        return step == trainer.settings.iters or (self.eval_interval is not None and step % self.eval_interval == 0)

    def on_fit_start(self, trainer: Trainer) -> None:
        best = self.checkpoints.best()
        resumed = trainer.resumed_from
        if resumed is None or best is None or best.get("metric") != self.selection.metric or best["step"] > resumed:
            return
        self.best = (float(best["value"]), int(best["step"]))
        self.stale = sum(self._due(trainer, step) for step in range(self.best[1] + 1, resumed + 1))

    def on_step_end(self, trainer: Trainer, step: int, loss: float, record: dict) -> None:
        if not self._due(trainer, step):
            return
        rng_state = capture_rng_state()
        trainer.engine.eval()
        try:
            with torch.no_grad():
                evaluation = self.evaluate(trainer)
        finally:
            trainer.engine.train()
            restore_rng_state(rng_state)
        metrics = {f"valid_{name}": value for name, value in evaluation.metrics.items()}
        record.update(metrics)
        if self.report_dir is not None:
            write_text_atomic(self.report_dir / f"step_{step:07d}.json",
                              json.dumps({"step": step, "metrics": metrics, **evaluation.details},
                                         ensure_ascii=False, indent=1) + "\n")
        self._judge(step, metrics[self.selection.metric])

    def _judge(self, step: int, value: float) -> None:
        better = self.best is None or (value > self.best[0] if higher_is_better(self.selection.metric)
                                       else value < self.best[0])
        if better:
            self.best, self.stale, self._improved_at = (value, step), 0, step
        else:
            self.stale += 1

    def stop_reason(self, trainer: Trainer, step: int) -> str | None:
        patience = self.selection.patience
        return EARLY_STOPPED if patience is not None and self.stale >= patience else None

    def after_step(self, trainer: Trainer, step: int, stop: str | None) -> None:
        if self._improved_at != step:
            return
        self._improved_at = None
        tag = tag_for_step(step)
        if self.checkpoints.latest_tag() != tag:  # not saved on the cadence: save it now (collective)
            self.checkpoints.save(trainer.engine, step, Checkpointing.train_state(trainer))
        if self.report_dir is not None:
            self.checkpoints.mark_best(tag, {"step": step, "metric": self.selection.metric, "value": self.best[0]})
