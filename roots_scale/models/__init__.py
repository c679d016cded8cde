"""GPT and BERT on megatron-core's tensor-parallel layers; the recurrent baselines (RNN, LSTM, GRU) in plain torch."""

from __future__ import annotations

import torch
from torch import nn

from roots_scale.config import ModelConfig
from roots_scale.models.bert import BERT
from roots_scale.models.gpt import GPT
from roots_scale.models.recurrent import RecurrentLM, is_recurrent


def build_model(cfg: ModelConfig, vocab_rows: int, tensor_parallel_size: int = 1, seed: int = 0,
                sequence_parallel: bool = False) -> nn.Module:
    """A GPT, BERT or RecurrentLM (by `cfg.arch`) with `vocab_rows` padded vocabulary rows, this rank's TP slice
    (recurrent models: always whole), initialized from `seed`; GPT optionally sequence-parallel."""
    if is_recurrent(cfg):
        return RecurrentLM(cfg, vocab_rows, seed)
    if cfg.arch == "bert":
        torch.manual_seed(seed)
        return BERT(cfg, vocab_rows, tensor_parallel_size)
    return GPT(cfg, vocab_rows, tensor_parallel_size, seed, sequence_parallel)
