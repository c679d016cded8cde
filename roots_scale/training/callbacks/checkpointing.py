"""Restore the latest checkpoint before the first step; save on the configured cadence and before any stop."""

from __future__ import annotations

from roots_scale.checkpoint.manager import CheckpointManager
from roots_scale.training.trainer import Callback, Trainer, TrainState


class Checkpointing(Callback):
    def __init__(self, manager: CheckpointManager, save_interval: int) -> None:
        self.manager = manager
        self.save_interval = save_interval

    def on_fit_start(self, trainer: Trainer) -> None:
        saved = self.manager.load_latest(trainer.engine)
        if saved is None:
            return
        trainer.state = TrainState(step=int(saved["step"]), consumed_samples=int(saved["consumed_samples"]),
                                   skipped_steps=int(saved.get("skipped_steps", 0)))
        trainer.resumed_from = trainer.state.step

    def after_step(self, trainer: Trainer, step: int, stop: str | None) -> None:
        if step % self.save_interval == 0 or step == trainer.settings.iters or stop:
            self.manager.save(trainer.engine, step, self.train_state(trainer))

    @staticmethod
    def train_state(trainer: Trainer) -> dict[str, object]:
        """The train state plus the samples consumed from each dataset of a blend."""
        consumed = trainer.state.consumed_samples
        per_dataset = getattr(trainer.dataset, "consumed_per_dataset", None)
        return {**trainer.state.to_dict(), "consumed_per_dataset": per_dataset(consumed) if per_dataset else [consumed]}
