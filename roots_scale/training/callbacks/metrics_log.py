"""Each step's record to metrics.jsonl, tensorboard, wandb (when set) and the console (rank 0); on resume,
records of steps past the checkpoint (logged by a killed run) are dropped first."""

from __future__ import annotations

from roots_scale.training.metrics import MetricsLogger
from roots_scale.training.trainer import Callback, FitResult, Trainer


class MetricsLog(Callback):
    """Put it after the callback that restores checkpoints: it needs to know the step resumed from."""

    def __init__(self, logger: MetricsLogger) -> None:
        self.logger = logger

    def on_fit_start(self, trainer: Trainer) -> None:
        if trainer.resumed_from is not None:
            self.logger.truncate_after(trainer.resumed_from)

    def on_record(self, trainer: Trainer, step: int, record: dict) -> None:
        self.logger.log(step, trainer.settings.iters, record)

    def on_fit_end(self, trainer: Trainer, result: FitResult | None) -> None:
        self.logger.close(failed=result is None)
