"""`roots-train finetune --config CONFIG`: a fine-tuning run on the pretraining engine (DeepSpeed, TP, ZeRO, the same
checkpoints, resume, monitoring), built from the `finetune:` section.

`prepare` settles, before any process group forms, what the run starts from and writes it into the config (so
config.yaml and every checkpoint record it): the model shape of `finetune.init`'s checkpoint, the tokenizer, and
the classes. `build_finetune_run` then builds the task model, loads the pretrained weights into it on a fresh
start, and hands the trainer the task's samples and validation.
"""

from __future__ import annotations

import dataclasses
import sys
from functools import partial
from pathlib import Path

import torch
from megatron.core import parallel_state
from torch import nn

from roots_core.errors import TokenizerError
from roots_core.tokenizer import Tokenizer
from roots_scale import pretrain
from roots_scale.checkpoint.consolidated import LayoutFreeReader
from roots_scale.checkpoint.files import CONFIG, CONSOLIDATED, resolve_checkpoint
from roots_scale.config import BatchPlan, Config, ModelConfig, load_config, validate
from roots_scale.distributed import LaunchEnv
from roots_scale.finetune import examples
from roots_scale.finetune.errors import FinetuneError
from roots_scale.finetune.evaluation import Evaluation, Shard, task_evaluator
from roots_scale.finetune.metrics import CLASSIFICATION, TEXT, bleu_tokenizers
from roots_scale.finetune.models import HEAD_PREFIX, build_task_model
from roots_scale.finetune.records import fingerprint, read_columns
from roots_scale.finetune.validation import Selection, TaskValidation
from roots_scale.models.layers import padded_vocab_size
from roots_scale.models.tensor_parallel import local_slice
from roots_scale.posttrain.errors import InferenceError
from roots_scale.posttrain.hf.load import init_model_from_hf
from roots_scale.posttrain.load import run_tokenizer
from roots_scale.run import Run, RunData, build_trainer, initialize_engine, make_run_directory, open_checkpoints
from roots_scale.run import seed_everything
from roots_scale.training.trainer import Callback, Trainer

ARCHS = {"classification": ("gpt", "bert"), "seq2seq": ("gpt",)}
FINETUNED_KEYS = ("dropout", "attention_dropout", "activation_checkpointing")  # model keys a fine-tune may set


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise FinetuneError(message)


def task_metrics(task: str) -> list[str]:
    """The metrics a task's validation reports (and may select the best checkpoint by)."""
    return [f"valid_{name}" for name in (CLASSIFICATION if task == "classification" else TEXT)] + ["valid_loss"]


def prepare(cfg: Config, world_size: int) -> BatchPlan:
    """Check a fine-tuning config and settle what it starts from (written back into `cfg`); then the checks every
    run gets. FinetuneError or ConfigError naming the key, file or row at fault."""
    ft = cfg.finetune
    _require(ft.task is not None, "finetune.task is required for roots-train finetune: classification or seq2seq")
    _require(bool(ft.train_path) and Path(ft.train_path).exists(),
             f"finetune.train_path = {ft.train_path!r} is not an existing file or saved dataset directory")
    _require(not ft.valid_path or Path(ft.valid_path).exists(),
             f"finetune.valid_path = {ft.valid_path!r} does not exist")
    if ft.init is not None:
        _start_from_checkpoint(cfg)
    _require(ft.init is None or cfg.model.init_from_hf is None,
             "set one of finetune.init (a roots_scale run or checkpoint) and model.init_from_hf, not both")
    if ft.tokenizer is None:
        _require(ft.init is not None, "finetune.tokenizer is required without finetune.init: the sentencepiece "
                                      ".model the model was (or will be) trained with")
    try:
        tokenizer = Tokenizer(ft.tokenizer)
    except TokenizerError as err:
        raise FinetuneError(f"finetune.tokenizer: {err}") from None
    ft.tokenizer = str(tokenizer.path)
    m, p = cfg.model, cfg.parallel
    _require(m.arch in ARCHS[ft.task], f"model.arch = {m.arch!r} cannot fine-tune for finetune.task={ft.task}: "
                                       f"it must be {' or '.join(ARCHS[ft.task])}")
    _require(p.pipeline == 1, f"parallel.pipeline = {p.pipeline} is invalid for fine-tuning: it must be 1 (fine-tune "
                              f"with tensor parallelism and ZeRO)")
    _require(not p.sequence_parallel, "parallel.sequence_parallel must be false for fine-tuning")
    if ft.task == "classification" and ft.labels is None:
        ft.labels = examples.label_names(read_columns(ft.train_path), ft.label_field)
    _require(ft.task != "classification" or len(ft.labels or ()) >= 2,
             f"{ft.train_path}: classification needs at least 2 classes, found {ft.labels}")
    if ft.task == "seq2seq":
        examples.check_template(ft.prompt_template)
        _require(ft.bleu_tokenize in bleu_tokenizers(), f"finetune.bleu_tokenize = {ft.bleu_tokenize!r} is not one "
                                                        f"of sacrebleu's: {', '.join(bleu_tokenizers())}")
        _require(ft.max_target_tokens >= 1, f"finetune.max_target_tokens = {ft.max_target_tokens} must be at least 1")
    ft.metric = ft.metric or task_metrics(ft.task)[0]
    _require(ft.metric in task_metrics(ft.task), f"finetune.metric = {ft.metric!r} is not a {ft.task} metric: "
                                                 f"{', '.join(task_metrics(ft.task))}")
    _require(ft.patience is None or (ft.patience >= 1 and bool(ft.valid_path)),
             f"finetune.patience = {ft.patience} needs finetune.valid_path and must be at least 1")
    _require(ft.eval_samples is None or ft.eval_samples >= 1,
             f"finetune.eval_samples = {ft.eval_samples} must be at least 1, or null for every row")
    return validate(cfg, world_size, check_data=False)


def _start_from_checkpoint(cfg: Config) -> None:
    """Take the model shape (and tokenizer, unless given) of `finetune.init`'s checkpoint into `cfg`."""
    ft = cfg.finetune
    folder = resolve_checkpoint(ft.init)
    saved = load_config(folder / CONFIG)
    defaults = ModelConfig()
    if cfg.model.arch != defaults.arch and cfg.model.arch != saved.model.arch:
        raise FinetuneError(f"finetune.init {ft.init} is a {saved.model.arch} checkpoint; the config says "
                            f"model.arch={cfg.model.arch}: drop model.arch (the checkpoint's shape is used)")
    cfg.model = dataclasses.replace(saved.model, **{key: getattr(cfg.model, key) for key in FINETUNED_KEYS})
    if ft.tokenizer is None:
        try:
            ft.tokenizer = str(run_tokenizer(saved).path)
        except InferenceError as err:
            raise FinetuneError(f"finetune.init {ft.init}: {err}; set finetune.tokenizer to its .model file") from None
    ft.init = str(folder)


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
