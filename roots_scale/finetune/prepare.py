"""Settling a fine-tuning config before any process group forms (and in a job's preflight): what the run starts
from is written into the config, so config.yaml and every checkpoint record it — the model shape of
`finetune.init`'s checkpoint, the tokenizer, the classes, the metric — and everything that cannot work is refused
in one line naming the key, file or row. Imports no DeepSpeed: `roots-launch` checks fine-tuning jobs with it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from roots_core.errors import TokenizerError
from roots_core.tokenizer import Tokenizer
from roots_scale.checkpoint.files import CONFIG, resolve_checkpoint
from roots_scale.config import BatchPlan, Config, ModelConfig, load_config, validate
from roots_scale.finetune import examples
from roots_scale.finetune.errors import FinetuneError
from roots_scale.finetune.metrics import CLASSIFICATION, TEXT, bleu_tokenizers
from roots_scale.finetune.records import read_columns
from roots_scale.posttrain.errors import InferenceError
from roots_scale.posttrain.load import run_tokenizer

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
