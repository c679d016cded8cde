"""Steps through DeepSpeed's pipeline engine: one `train_batch` runs the 1F1B schedule over every micro-batch.

The engine steps the optimizer inside its schedule, after the last backward pass; this runner puts the
trainer's `before_update` there (the update guard's veto, the gradient norm), with the loss the engine
reports: the mean over micro-batches on the last stage, averaged over data parallel and broadcast to
every stage, so every rank judges the same number.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from deepspeed.runtime.pipe import schedule
from deepspeed.runtime.pipe.engine import PipelineEngine

from roots_scale.training.trainer import EngineSteps, MicroBatchSteps, Trainer


def pipeline_batch(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs for the first stage, labels for the last stage's loss) from a GPT batch."""
    return batch["tokens"], batch["labels"]


class PipelineSteps(EngineSteps):
    def __init__(self, engine) -> None:
        self._before_update: Callable[[float], None] = lambda loss: None
        self._loss = float("nan")
        optimizer_step = type(engine)._INSTRUCTION_MAP[schedule.OptimizerStep]

        def judged_optimizer_step(pipeline_engine, lr_kwargs=None) -> None:
            self._loss = pipeline_engine._aggregate_total_loss().item()  # collective over the pipeline
            self._before_update(self._loss)
            optimizer_step(pipeline_engine, lr_kwargs)

        # The engine looks its schedule's instructions up in this map; an instance entry overrides the class's.
        engine._INSTRUCTION_MAP = {**type(engine)._INSTRUCTION_MAP, schedule.OptimizerStep: judged_optimizer_step}

    def train(self, trainer: Trainer, micro_batches: list[dict[str, torch.Tensor]],
              before_update: Callable[[float], None]) -> float:
        self._before_update = before_update
        trainer.engine.train_batch(iter([pipeline_batch(batch) for batch in micro_batches]))
        return self._loss

    def evaluate(self, trainer: Trainer, batches: Sequence[dict[str, torch.Tensor]]) -> float:
        loss = trainer.engine.eval_batch(iter([pipeline_batch(batch) for batch in batches]),
                                         num_micro_batches=len(batches))
        return float(loss)


def engine_steps(engine) -> EngineSteps:
    """The steps `engine` takes: the pipeline schedule for DeepSpeed's pipeline engine, else micro-batch by
    micro-batch."""
    return PipelineSteps(engine) if isinstance(engine, PipelineEngine) else MicroBatchSteps()
