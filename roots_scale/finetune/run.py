"""`roots-train finetune --config CONFIG`: a fine-tuning run on the pretraining engine (DeepSpeed, TP, ZeRO, the same
checkpoints, resume, monitoring), built from the `finetune:` section once `prepare` has settled it: the task
model, the pretrained weights loaded into it on a fresh start, the task's samples and its validation.
"""

from __future__ import annotations

import sys
from functools import partial
from pathlib import Path

import torch
from megatron.core import parallel_state
from torch import nn

from roots_core.tokenizer import Tokenizer
from roots_scale import pretrain
from roots_scale.checkpoint.consolidated import LayoutFreeReader
from roots_scale.checkpoint.files import CONSOLIDATED, resolve_checkpoint
from roots_scale.config import BatchPlan, Config
from roots_scale.distributed import LaunchEnv
from roots_scale.finetune import examples
from roots_scale.finetune.errors import FinetuneError
from roots_scale.finetune.evaluation import Evaluation, Shard, task_evaluator
from roots_scale.finetune.models import HEAD_PREFIX, build_task_model
from roots_scale.finetune.records import fingerprint
from roots_scale.finetune.prepare import prepare
from roots_scale.finetune.validation import Selection, TaskValidation
from roots_scale.models.layers import padded_vocab_size
from roots_scale.models.tensor_parallel import local_slice
from roots_scale.posttrain.hf.load import init_model_from_hf
from roots_scale.run import Run, RunData, build_trainer, initialize_engine, make_run_directory, open_checkpoints
from roots_scale.run import seed_everything
from roots_scale.training.trainer import Callback, Trainer

def load_pretrained(model: nn.Module, folder: Path) -> None:
    """The checkpoint's weights into every parameter of `model` but a task head it lacks (this rank's TP slices);
    FinetuneError if the checkpoint and the model do not share their body."""
    reader = LayoutFreeReader(folder / CONSOLIDATED)
    saved = set(reader.names)
    names = [name for name, _ in model.named_parameters()]
    missing = [name for name in names if name not in saved and not name.startswith(HEAD_PREFIX)]
    unexpected = sorted(saved - set(names))
    if missing or [name for name in unexpected if not name.startswith(HEAD_PREFIX)]:
        raise FinetuneError(f"finetune.init {folder} does not hold this model: it lacks {missing[:3]} and has "
                            f"{unexpected[:3]} the model has no place for (another architecture or size?)")
    tp_rank = parallel_state.get_tensor_model_parallel_rank()
    tp_size = parallel_state.get_tensor_model_parallel_world_size()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name in saved:
                param.copy_(local_slice(param, reader.full(name), name, tp_rank, tp_size))


def build_finetune_run(cfg: Config, plan: BatchPlan, launch: LaunchEnv, started_at: float | None = None,
                       extra_callbacks: tuple[Callback, ...] = ()) -> Run:
    """The task's samples, model (pretrained weights on a fresh start), engine and trainer, on an initialized
    world."""
    ft = cfg.finetune
    run_dir = make_run_directory(cfg, launch)
    tokenizer = Tokenizer(ft.tokenizer)
    train = examples.encode_file(ft.train_path, cfg, tokenizer)
    valid = examples.encode_file(ft.valid_path, cfg, tokenizer, ft.eval_samples) if ft.valid_path else None
    if launch.rank == 0 and (train.truncated or (valid and valid.truncated)):
        print(f"roots-train finetune: {train.truncated} training and {valid.truncated if valid else 0} validation "
              f"rows were cut to the context of {cfg.model.seq_length} tokens (model.seq_length)")
    vocab = padded_vocab_size(cfg.model.vocab_size or tokenizer.vocab_size, cfg.model.make_vocab_size_divisible_by)
    checkpoints = open_checkpoints(cfg, plan, launch, {
        "finetune": {"data": fingerprint(ft.train_path), "tokenizer": tokenizer.fingerprint}})
    fresh = checkpoints.latest_tag() is None
    model = build_task_model(cfg.model, ft, vocab, cfg.parallel.tensor, cfg.train.seed)
    seed_everything(cfg.train.seed)
    if fresh and ft.init is not None:
        load_pretrained(model, resolve_checkpoint(ft.init))
    elif fresh and cfg.model.init_from_hf:
        init_model_from_hf(model, cfg.model.init_from_hf, cfg.model)
    engine = initialize_engine(model, cfg, plan)
    validation = []
    if valid is not None:
        shard = Shard(parallel_state.get_data_parallel_rank(), parallel_state.get_data_parallel_world_size(),
                      parallel_state.get_data_parallel_group())
        evaluate = task_evaluator(cfg, valid, tokenizer, shard, plan.micro_batch_size)
        validation.append(TaskValidation(partial(_through_engine, evaluate), cfg.train.eval_interval,
                                         Selection(ft.metric, ft.patience), checkpoints,
                                         run_dir / "evaluations" if launch.rank == 0 else None))
    dataset = examples.Shuffled(train.samples, cfg.train.iters * plan.global_batch_size, cfg.train.seed)
    trainer = build_trainer(cfg, plan, launch, engine, dataset, checkpoints, vocab, validation, started_at,
                            extra_callbacks)
    return Run(trainer, model, engine, checkpoints, RunData(None, dataset, None))


def _through_engine(evaluate, trainer: Trainer) -> Evaluation:
    return evaluate(trainer.engine, trainer.engine.device)


FINETUNING = pretrain.Job("roots-train finetune", "Fine-tune a pretrained GPT or BERT on labelled files "
                          "(classification, or text-to-text for a GPT), with DeepSpeed ZeRO × tensor parallelism.",
                          prepare, build_finetune_run)


def main(argv: list[str] | None = None) -> int:
    """`roots-train finetune`: train under any launcher, like pretraining."""
    return pretrain.main(sys.argv[1:] if argv is None else argv, job=FINETUNING)
