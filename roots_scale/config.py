"""Typed run configuration: YAML presets plus dotted command-line overrides, validated early.

Everything that can be checked before a process group forms is checked in `validate`, so a
typo or an impossible layout fails in a second on the login node, not after a queue wait.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import yaml

from roots_core.atomic import write_text_atomic
from roots_core.errors import RootsError


class ConfigError(RootsError):
    """A configuration key, value or combination that cannot work; the message says what would."""


@dataclass
class RunConfig:
    """Where the run writes and what it is called."""

    output_dir: str = "runs/default"
    name: str = "roots_scale"
    tensorboard: bool = True
    # Weights & Biases beside tensorboard, optional (pip install roots_scale[wandb]): {project: NAME, mode: online
    # | offline | disabled, entity: TEAM}; empty = off.
    wandb: dict[str, str] = field(default_factory=dict)


@dataclass
class ModelConfig:
    """Transformer shape; `arch` picks GPT-2 style defaults or Llama style (RoPE, RMSNorm, SwiGLU)."""

    arch: Literal["gpt", "bert", "rnn", "lstm", "gru"] = "gpt"  # rnn/lstm/gru: recurrent baselines
    num_layers: int = 2
    hidden_size: int = 64
    num_attention_heads: int = 4
    num_kv_heads: int | None = None  # None = multi-head attention; fewer = grouped-query
    ffn_hidden_size: int | None = None  # None = 4 * hidden (GELU) or Llama's 8/3 rule (SwiGLU)
    seq_length: int = 128
    position_embedding: Literal["learned", "rope"] = "learned"
    rope_theta: float = 10000.0
    normalization: Literal["layernorm", "rmsnorm"] = "layernorm"
    norm_eps: float = 1e-5
    activation: Literal["gelu", "swiglu"] = "gelu"
    bias: bool = True
    tie_embeddings: bool = True
    dropout: float = 0.0
    attention_dropout: float = 0.0
    init_std: float = 0.02
    activation_checkpointing: bool = False
    vocab_size: int | None = None  # None = taken from the token store's tokenizer
    make_vocab_size_divisible_by: int = 128
    init_from_hf: str | None = None  # a transformers model directory to start from (continued pretraining)

    @property
    def kv_heads(self) -> int:
        return self.num_kv_heads or self.num_attention_heads

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def ffn_size(self) -> int:
        if self.ffn_hidden_size is not None:
            return self.ffn_hidden_size
        if self.activation == "swiglu":
            return 256 * math.ceil(int(8 * self.hidden_size / 3) / 256)
        return 4 * self.hidden_size


@dataclass
class ParallelConfig:
    """How the world is split: tensor × pipeline × data parallel, and the ZeRO stage."""

    tensor: int = 1
    pipeline: int = 1
    zero_stage: Literal[0, 1, 2, 3] = 1
    # How GPT's layers are cut into pipeline stages: `uniform` gives every stage num_layers / pipeline
    # transformer blocks (the embedding joins the first, the final norm and output layer the last);
    # `parameters` balances the stages' parameter counts, for any pipeline size up to num_layers.
    pipeline_partition: Literal["uniform", "parameters"] = "uniform"
    # Megatron's sequence parallelism: norms, dropout and residuals on 1/tensor of the sequence, which divides
    # the activations the tensor-parallel layers do not split by the tensor-parallel size.
    sequence_parallel: bool = False
    # How long a collective waits for a peer before the run fails with reason `peer_failed` (a dead or hung
    # process or node): 10 minutes, as Megatron-LM, not PyTorch's 30. Longer than any one rank's lone work
    # between collectives (building a sample index, writing its checkpoint shard).
    collective_timeout_s: float = 600


@dataclass
class OptimizerConfig:
    """AdamW and the learning-rate schedule."""

    lr: float = 3e-4
    min_lr: float = 3e-5
    warmup_iters: int = 0
    decay_style: Literal["cosine", "linear", "inverse_sqrt", "exponential", "constant"] = "cosine"
    weight_decay: float = 0.1
    no_decay_on_embeddings: bool = True
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    clip_grad: float = 1.0


@dataclass
class TrainConfig:
    """Length, batch arithmetic, precision and the logging / checkpoint cadence."""

    iters: int = 100
    tokens: int | None = None  # train length in tokens; when set, iters = ceil(tokens / (global batch × seq))
    seed: int = 1234
    micro_batch_size: int = 4
    global_batch_size: int | None = None  # None = micro × accumulation × data-parallel size
    gradient_accumulation_steps: int | None = None  # None = derived from the global batch
    precision: Literal["fp32", "bf16", "fp16"] = "bf16"
    log_interval: int = 10
    save_interval: int = 1000
    exit_interval: int | None = None  # save and exit after a step divisible by this (simulates preemption)
    exit_duration_minutes: float | None = None  # save and exit before the next step would pass this wall time
    eval_interval: int | None = None  # validation loss every this many steps; None = never
    eval_iters: int = 10  # validation micro-batches per data-parallel rank per evaluation
    peak_tflops: float | None = None  # peak TFLOP/s of one device for MFU; None = look up the device type
    max_nonfinite_steps: int = 3  # this many consecutive non-finite losses stop the run (each one is skipped)
    loss_spike_zscore: float | None = None  # skip the update when the loss is this many std above the window
    loss_spike_window: int = 100  # steps of loss history the spike guard compares against


@dataclass
class CheckpointConfig:
    """What a checkpoint keeps and what a resume accepts."""

    keep_last: int | None = 5  # newest checkpoints kept; None = keep all
    keep_every: int | None = None  # also keep every checkpoint whose step is a multiple of this, forever
    layout_free: bool = True  # also save full weights + moments per TP rank: resume on another layout, export
    allow_data_change: bool = False  # resume even if the data or tokenizer fingerprints differ from the checkpoint
    allow_config_change: bool = False  # resume even if the model or the data order differs from the checkpoint's


@dataclass
class DataConfig:
    """Where the tokens come from: a token store directory or a blend file (YAML)."""

    path: str = ""
    split: str = "969,30,1"  # train,valid,test document ratios
    num_epochs: int | None = None  # None = as many epochs as train.iters needs
    cache_dir: str | None = None  # sample-index cache; None = <run.output_dir>/index_cache
    num_workers: int = 2  # loader worker processes per rank


@dataclass
class FinetuneConfig:
    """Fine-tuning on labelled files (`roots-train finetune`): the task, its files, and where the weights start."""

    task: Literal["classification", "seq2seq"] | None = None
    train_path: str = ""  # JSONL, CSV, Parquet, or a directory saved by datasets' save_to_disk
    valid_path: str = ""
    init: str | None = None  # a run or checkpoint directory to start from; or set model.init_from_hf
    tokenizer: str | None = None  # a sentencepiece .model; None = the one the init run trained with
    text_field: str = "text"  # classification: one text, or the pair below when the file has both
    text_pair_fields: list[str] = field(default_factory=lambda: ["text_a", "text_b"])
    label_field: str = "label"
    labels: list[str] | None = None  # the classes in order; None = the sorted distinct labels of train_path
    source_field: str = "source"  # seq2seq
    target_field: str = "target"
    prompt_template: str = "{source}\n"  # seq2seq: what the model reads before it writes the target
    max_target_tokens: int = 64  # seq2seq: the longest target decoded (greedily) at validation
    bleu_tokenize: str = "13a"  # sacrebleu's tokenizer for BLEU: '13a', 'zh' (Chinese), 'ja-mecab', 'intl', ...
    metric: str | None = None  # picks the best checkpoint and early stopping; None = valid_accuracy / valid_bleu
    patience: int | None = None  # stop after this many evaluations without improvement; None = never
    eval_samples: int | None = None  # validation rows per evaluation; None = all


@dataclass
class Config:
    """The whole run: one YAML file, sections mirroring the classes above."""

    run: RunConfig = field(default_factory=RunConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    deepspeed: dict[str, Any] = field(default_factory=dict)  # passthrough, merged over the derived config

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------- loading


def load_config(path: str | Path | None, overrides: Sequence[str] = ()) -> Config:
    """Read a YAML preset (or the defaults when `path` is None) and apply `key=value` overrides."""
    raw: dict[str, Any] = {}
    origin = "defaults"
    if path is not None:
        raw, origin = read_yaml_mapping(path, "config file"), str(path)
    cfg = build_typed(Config, raw, origin)
    for item in parse_overrides(overrides):
        apply_override(cfg, *item)
    return cfg


def read_yaml_mapping(path: str | Path, what: str, error: type[RootsError] = ConfigError) -> dict[str, Any]:
    """The mapping a YAML file holds (empty for an empty file); `error` naming the file if it has none."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{what} {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise error(f"{path} is not valid YAML: {err}") from err
    if not isinstance(raw, dict):
        raise error(f"{path} must hold a mapping of keys, got {type(raw).__name__}")
    return raw


def build_typed(cls: type, raw: Mapping[str, Any], origin: str, error: type[RootsError] = ConfigError,
                prefix: str = "", **fixed: Any) -> Any:
    """A `cls` dataclass from a YAML mapping, nested dataclasses from nested mappings, every value checked
    against its annotation (`check_value`). `fixed` fields are set by the caller, never read from `raw`.
    Any mistake is an `error` naming `origin`, the dotted key and the value; an unknown key names the
    closest valid one. The one typed loader for configs and cluster profiles."""
    hints = typing.get_type_hints(cls)
    names = [name for name in _field_names(cls) if name not in fixed]
    kwargs: dict[str, Any] = dict(fixed)
    for key, value in raw.items():
        if key not in names:
            raise error(_unknown_key_message(prefix + str(key), names, prefix, origin))
        kind = hints[key]
        if dataclasses.is_dataclass(kind):
            if not isinstance(value, Mapping):
                raise error(f"{origin}: '{prefix}{key}' must be a mapping of keys, got {value!r}")
            kwargs[key] = build_typed(kind, value, origin, error, f"{prefix}{key}.")
        else:
            kwargs[key] = check_value(value, kind, f"{origin}: '{prefix}{key}' = {value!r}", error)
    return cls(**kwargs)


def parse_overrides(args: Sequence[str]) -> list[tuple[str, str]]:
    """Accept `a.b=v`, `--a.b=v` and `--a.b v`; return (dotted key, raw value) pairs in order."""
    pairs: list[tuple[str, str]] = []
    i = 0
    while i < len(args):
        arg = args[i]
        key = arg[2:] if arg.startswith("--") else arg
        if "=" in key:
            name, value = key.split("=", 1)
        elif arg.startswith("--") and i + 1 < len(args):
            name, value = key, args[i + 1]
            i += 1
        else:
            raise ConfigError(f"override {arg!r} must look like section.key=value (e.g. train.iters=50)")
        pairs.append((name, value))
        i += 1
    return pairs


def apply_override(cfg: Config, dotted: str, raw_value: str) -> None:
    """Set one dotted key on `cfg`, with the same type checks as a YAML value."""
    parts = dotted.split(".")
    origin = f"override {dotted}={raw_value}"
    if parts[0] == "deepspeed":
        target: dict[str, Any] = cfg.deepspeed
        for part in parts[1:-1]:
            target = target.setdefault(part, {})
        target[parts[-1]] = yaml.safe_load(raw_value)
        return
    if len(parts) != 2:
        raise ConfigError(f"{origin}: keys are section.key, e.g. train.iters; sections: {_field_names(Config)}")
    section_name, key = parts
    section = _lookup(cfg, section_name, "", origin)
    hints = typing.get_type_hints(type(section))
    _lookup(section, key, section_name + ".", origin)
    try:
        value = yaml.safe_load(raw_value)
    except yaml.YAMLError:
        raise ConfigError(f"{origin}: the value is not valid YAML; quote it, e.g. {dotted}='{raw_value}'") from None
    setattr(section, key, check_value(value, hints[key], f"{origin}: '{section_name}.{key}' = {value!r}"))


def _lookup(obj: Any, key: str, prefix: str, origin: str) -> Any:
    names = _field_names(type(obj))
    if key not in names:
        raise ConfigError(_unknown_key_message(prefix + key, names, prefix, origin))
    return getattr(obj, key)


def _field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def _unknown_key_message(key: str, valid: list[str], prefix: str, origin: str) -> str:
    leaf = key.rsplit(".", 1)[-1]
    close = difflib.get_close_matches(leaf, valid, n=1, cutoff=0.6)
    hint = f"; did you mean '{prefix}{close[0]}'?" if close else ""
    return f"{origin}: unknown key '{key}'{hint} Valid keys here: {', '.join(valid)}"


def _scalar(value: Any) -> bool:
    """A YAML value that may stand in a list or map of strings (numbers are written as strings)."""
    return isinstance(value, (str, int, float)) and not isinstance(value, bool)


def check_value(value: Any, kind: Any, where: str, error: type[RootsError] = ConfigError) -> Any:
    """`value` checked against the annotation `kind`, converted only where nothing is lost (a number to a
    float; numbers in a list or map of strings to strings); otherwise `error` saying what was expected."""
    origin_type = typing.get_origin(kind)
    if origin_type in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(kind) if a is not type(None)]
        if value is None:
            return None
        return check_value(value, options[0], where, error)
    if value is None:
        raise error(f"{where}: a value is required")
    if origin_type is Literal:
        choices = typing.get_args(kind)
        if value not in choices:
            raise error(f"{where} is not one of {', '.join(map(repr, choices))}")
        return value
    if origin_type is list:
        if not isinstance(value, list) or not all(map(_scalar, value)):
            raise error(f"{where}: expected a list of strings")
        return [str(item) for item in value]
    if origin_type is dict and typing.get_args(kind)[1] is str:
        if not isinstance(value, dict) or not all(isinstance(k, str) and _scalar(v) for k, v in value.items()):
            raise error(f"{where}: expected a mapping of names to strings or numbers")
        return {k: str(v) for k, v in value.items()}
    if origin_type is dict or kind is dict:
        if not isinstance(value, dict):
            raise error(f"{where}: expected a mapping")
        return value
    if kind is bool:
        if not isinstance(value, bool):
            raise error(f"{where}: expected true or false")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise error(f"{where}: expected an integer")
        return value
    if kind is float:
        if isinstance(value, bool):
            raise error(f"{where}: expected a number")
        try:
            return float(value)  # YAML reads 3e-4 (no dot) as a string
        except (TypeError, ValueError):
            raise error(f"{where}: expected a number") from None
    if kind is str:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            raise error(f"{where}: expected a string; quote it (YAML reads an unquoted 24:00:00 as a number)")
        if not isinstance(value, str):
            raise error(f"{where}: expected a string")
        return value
    raise error(f"{where}: unsupported type {kind}")  # a new field type needs a rule here


# --------------------------------------------------------------------------- validation


@dataclass(frozen=True)
class BatchPlan:
    """The batch arithmetic resolved for a world size: global = micro × accumulation × DP."""

    micro_batch_size: int
    gradient_accumulation_steps: int
    data_parallel_size: int

    @property
    def global_batch_size(self) -> int:
        return self.micro_batch_size * self.gradient_accumulation_steps * self.data_parallel_size


def validate(cfg: Config, world_size: int, check_data: bool = True) -> BatchPlan:
    """Check every combination that cannot work on `world_size` processes; return the batch plan.
    `check_data=False` leaves `data.path` unchecked (the layout planner needs no data).

    Also resolves the train length: `train.tokens`, when set, overrides `train.iters` with
    ceil(tokens / (global batch × seq_length)), written back so config.yaml records both.
    """
    m, p, t = cfg.model, cfg.parallel, cfg.train
    _check_recurrent(cfg)
    _require(m.hidden_size % m.num_attention_heads == 0, "model.hidden_size", m.hidden_size,
             f"a multiple of model.num_attention_heads ({m.num_attention_heads})")
    _require(m.num_attention_heads % m.kv_heads == 0, "model.num_kv_heads", m.num_kv_heads,
             f"a divisor of model.num_attention_heads ({m.num_attention_heads})")
    _require(p.tensor >= 1, "parallel.tensor", p.tensor, "at least 1")
    _require(m.num_attention_heads % p.tensor == 0, "parallel.tensor", p.tensor,
             f"a divisor of model.num_attention_heads ({m.num_attention_heads}): "
             f"{_divisors(m.num_attention_heads)}")
    _require(m.kv_heads % p.tensor == 0, "parallel.tensor", p.tensor,
             f"a divisor of the number of KV heads ({m.kv_heads}): {_divisors(m.kv_heads)}")
    _require(m.ffn_size % p.tensor == 0, "parallel.tensor", p.tensor,
             f"a divisor of the FFN size ({m.ffn_size})")
    _require(p.pipeline >= 1, "parallel.pipeline", p.pipeline, "at least 1")
    _require(p.collective_timeout_s > 0, "parallel.collective_timeout_s", p.collective_timeout_s,
             "a positive number of seconds (600 = 10 minutes)")
    if p.sequence_parallel:
        _require(p.tensor > 1, "parallel.sequence_parallel", p.sequence_parallel,
                 "false with parallel.tensor = 1: it splits the sequence over the tensor-parallel group")
        _require(m.arch == "gpt", "parallel.sequence_parallel", p.sequence_parallel,
                 "false for BERT (sequence parallelism runs GPT models)")
        _require(m.seq_length % p.tensor == 0, "model.seq_length", m.seq_length,
                 f"a multiple of parallel.tensor ({p.tensor}) with parallel.sequence_parallel=true")
    if p.pipeline > 1:
        _check_pipeline(cfg)
    if world_size % (p.tensor * p.pipeline):
        raise ConfigError(
            f"parallel.tensor × parallel.pipeline = {p.tensor} × {p.pipeline} = {p.tensor * p.pipeline} does not "
            f"divide the {world_size} processes of this job: the data-parallel size is processes / (tensor × "
            f"pipeline), so tensor × pipeline must be one of {_divisors(world_size).removeprefix('valid values are ')}")
    if m.arch == "bert":
        _require(m.position_embedding == "learned", "model.position_embedding", m.position_embedding,
                 "'learned' for BERT")
        _require(m.tie_embeddings, "model.tie_embeddings", m.tie_embeddings, "true for BERT (the MLM head is tied)")
    if m.position_embedding == "rope":
        _require(m.head_dim % 2 == 0, "model.hidden_size", m.hidden_size,
                 "such that the head dimension is even (RoPE rotates pairs)")
    _require(m.seq_length >= 1, "model.seq_length", m.seq_length, "at least 1")
    _require(0.0 <= m.dropout < 1.0, "model.dropout", m.dropout, "in [0, 1)")
    _require(0.0 <= m.attention_dropout < 1.0, "model.attention_dropout", m.attention_dropout, "in [0, 1)")
    for key in ("log_interval", "save_interval", "eval_iters"):
        _require(getattr(t, key) >= 1, f"train.{key}", getattr(t, key), "at least 1")
    _require(t.exit_interval is None or t.exit_interval >= 1, "train.exit_interval", t.exit_interval,
             "at least 1, or null")
    _require(t.micro_batch_size >= 1, "train.micro_batch_size", t.micro_batch_size, "at least 1")
    _require(t.exit_duration_minutes is None or t.exit_duration_minutes > 0, "train.exit_duration_minutes",
             t.exit_duration_minutes, "positive, or null")
    _require(t.eval_interval is None or t.eval_interval >= 1, "train.eval_interval", t.eval_interval,
             "at least 1, or null")
    _require(t.max_nonfinite_steps >= 1, "train.max_nonfinite_steps", t.max_nonfinite_steps, "at least 1")
    _require(t.loss_spike_zscore is None or t.loss_spike_zscore > 0, "train.loss_spike_zscore",
             t.loss_spike_zscore, "positive, or null")
    _require(t.loss_spike_window >= 2, "train.loss_spike_window", t.loss_spike_window, "at least 2")
    ck = cfg.checkpoint
    _require(ck.keep_last is None or ck.keep_last >= 1, "checkpoint.keep_last", ck.keep_last, "at least 1, or null")
    _require(ck.keep_every is None or ck.keep_every >= 1, "checkpoint.keep_every", ck.keep_every,
             "at least 1, or null")
    _require(m.init_from_hf is None or Path(m.init_from_hf, "config.json").is_file(), "model.init_from_hf",
             m.init_from_hf, "a Hugging Face model directory holding config.json, or null")
    _require(t.peak_tflops is None or t.peak_tflops > 0, "train.peak_tflops", t.peak_tflops, "positive, or null")
    _require(cfg.optimizer.min_lr <= cfg.optimizer.lr, "optimizer.min_lr", cfg.optimizer.min_lr,
             f"at most optimizer.lr ({cfg.optimizer.lr})")
    if check_data:
        _require(bool(cfg.data.path) and Path(cfg.data.path).exists(), "data.path", cfg.data.path,
                 "an existing token store directory (made by `roots-data tokenize`) or blend file (.yaml)")
    _require(cfg.data.num_workers >= 0, "data.num_workers", cfg.data.num_workers, "0 or more")
    _check_wandb(cfg.run.wandb)
    if t.eval_interval is not None:
        _require(_valid_share(cfg.data.split) > 0, "data.split", cfg.data.split,
                 f"a split with a valid share (e.g. '969,30,1') when train.eval_interval is set "
                 f"({t.eval_interval}); or set train.eval_interval=null")
    plan = _batch_plan(t, world_size // (p.tensor * p.pipeline))
    if t.tokens is not None:
        _require(t.tokens >= 1, "train.tokens", t.tokens, "at least 1, or null")
        t.iters = math.ceil(t.tokens / (plan.global_batch_size * m.seq_length))
    _require(t.iters >= 1, "train.iters", t.iters, "at least 1")
    _require(cfg.optimizer.warmup_iters <= t.iters, "optimizer.warmup_iters", cfg.optimizer.warmup_iters,
             f"at most train.iters ({t.iters})")
    return plan


def _check_pipeline(cfg: Config) -> None:
    """What pipeline parallelism (DeepSpeed's pipeline engine) cannot run, refused before any process starts."""
    m, p = cfg.model, cfg.parallel
    _require(m.arch == "gpt", "model.arch", m.arch,
             "gpt with parallel.pipeline > 1 (BERT trains with tensor parallelism and ZeRO: set parallel.pipeline=1)")
    _require(p.zero_stage == 1, "parallel.zero_stage", p.zero_stage,
             "1 with parallel.pipeline > 1: DeepSpeed's pipeline engine cannot shard gradients or weights "
             "(ZeRO-2/3), and ZeRO-1 is what it runs (its ZeRO-0 path miscounts the gradient norm across stages)")
    _require(m.init_from_hf is None, "model.init_from_hf", m.init_from_hf,
             "null with parallel.pipeline > 1: start from the Hugging Face model with parallel.pipeline=1, save a "
             "checkpoint, and continue from it on the pipeline layout")
    _require(p.pipeline <= m.num_layers, "parallel.pipeline", p.pipeline,
             f"at most model.num_layers ({m.num_layers}): every stage holds at least one transformer block")
    if p.pipeline_partition == "uniform":
        _require(m.num_layers % p.pipeline == 0, "parallel.pipeline", p.pipeline,
                 f"a divisor of model.num_layers ({m.num_layers}) with parallel.pipeline_partition=uniform: "
                 f"{_divisors(m.num_layers)}; or set parallel.pipeline_partition=parameters")


def _check_recurrent(cfg: Config) -> None:
    """What an RNN / LSTM / GRU cannot run (it has no tensor- or pipeline-parallel form), refused before any
    process starts: it trains with data parallelism and ZeRO 0-3 only."""
    m, p = cfg.model, cfg.parallel
    if m.arch not in ("rnn", "lstm", "gru"):
        return
    only = f"for model.arch={m.arch}: recurrent models train with data parallelism and ZeRO 0-3 only"
    _require(p.tensor == 1, "parallel.tensor", p.tensor, f"1 {only}")
    _require(p.pipeline == 1, "parallel.pipeline", p.pipeline, f"1 {only}")
    _require(not p.sequence_parallel, "parallel.sequence_parallel", p.sequence_parallel, f"false {only}")
    _require(m.init_from_hf is None, "model.init_from_hf", m.init_from_hf,
             f"null for model.arch={m.arch}: no transformers architecture holds a roots_scale recurrent model")


WANDB_KEYS = ["project", "mode", "entity"]
WANDB_MODES = ("online", "offline", "disabled")


def _check_wandb(settings: dict[str, str]) -> None:
    """run.wandb (empty = off): known keys, a project, a mode wandb knows, and wandb installed, checked before any
    process group forms rather than when rank 0 first logs."""
    if not settings:
        return
    for key in settings:
        if key not in WANDB_KEYS:
            raise ConfigError(_unknown_key_message(f"run.wandb.{key}", WANDB_KEYS, "run.wandb.", "run.wandb"))
    _require(bool(settings.get("project")), "run.wandb.project", settings.get("project"),
             "a Weights & Biases project name when run.wandb is set (or leave run.wandb empty for no wandb)")
    mode = settings.get("mode", "online")
    _require(mode in WANDB_MODES, "run.wandb.mode", mode, f"one of {', '.join(WANDB_MODES)}")
    if importlib.util.find_spec("wandb") is None:
        raise ConfigError("run.wandb is set but wandb is not installed: pip install 'roots_scale[wandb]'")


def _valid_share(split: str) -> float:
    try:
        return parse_split(split)[1]
    except ConfigError as err:
        raise ConfigError(f"data.split = {split!r} is invalid: {err}") from None


def _batch_plan(t: TrainConfig, dp: int) -> BatchPlan:
    micro = t.micro_batch_size
    if t.global_batch_size is None:
        accum = t.gradient_accumulation_steps or 1
        _require(accum >= 1, "train.gradient_accumulation_steps", accum, "at least 1")
        return BatchPlan(micro, accum, dp)
    per_step = micro * dp
    if t.global_batch_size % per_step != 0:
        raise ConfigError(
            f"train.global_batch_size = {t.global_batch_size} is not micro_batch_size ({micro}) × "
            f"gradient accumulation × data-parallel size ({dp}); valid global batch sizes are "
            f"multiples of {per_step}, e.g. {per_step * max(1, t.global_batch_size // per_step)}")
    accum = t.global_batch_size // per_step
    if t.gradient_accumulation_steps is not None and t.gradient_accumulation_steps != accum:
        raise ConfigError(
            f"train.gradient_accumulation_steps = {t.gradient_accumulation_steps} contradicts "
            f"train.global_batch_size = {t.global_batch_size} with micro_batch_size {micro} on "
            f"{dp} data-parallel ranks (that needs {accum}); set only one of the two")
    return BatchPlan(micro, accum, dp)


def _require(ok: bool, key: str, value: Any, valid: str) -> None:
    if not ok:
        raise ConfigError(f"{key} = {value!r} is invalid: it must be {valid}")


def _divisors(n: int) -> str:
    return "valid values are " + ", ".join(str(d) for d in range(1, n + 1) if n % d == 0)


SPLIT_NAMES = ("train", "valid", "test")


def parse_split(split: str) -> tuple[float, float, float]:
    """`"969,30,1"` → (0.969, 0.03, 0.001): the train, valid, test shares; missing trailing parts are 0."""
    hint = "write up to three numbers ≥ 0 for train,valid,test with a positive sum, e.g. '969,30,1'"
    parts = str(split).split(",")
    try:
        values = [float(part) for part in parts]
    except ValueError:
        raise ConfigError(f"split {split!r} is not a list of numbers; {hint}") from None
    if len(values) > len(SPLIT_NAMES):
        raise ConfigError(f"split {split!r} has {len(values)} parts; {hint}")
    if not all(math.isfinite(value) and value >= 0 for value in values) or sum(values) <= 0:
        raise ConfigError(f"split {split!r} has a negative, infinite or NaN part, or sums to 0; {hint}")
    values += [0.0] * (len(SPLIT_NAMES) - len(values))
    total = sum(values)
    return values[0] / total, values[1] / total, values[2] / total


def save_config(cfg: Config, path: Path) -> None:
    """Write the resolved config as YAML, atomically."""
    write_text_atomic(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
