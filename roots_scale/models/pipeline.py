"""GPT as a DeepSpeed pipeline: the layers of models/gpt.py, listed so DeepSpeed can cut them into stages.

Each pipeline layer names its weights the way `GPT` does (a block holds `layers.<i>.…`), so a
parameter's name in the whole model is its pipeline name without the leading layer index
(models/names.py): checkpoints, reshaping and conversion see the same names whatever the number of
stages. With tied embeddings the last stage holds a copy of the token embedding that DeepSpeed keeps
equal to the first stage's (its gradients are summed over the two stages).

The stages' process groups come from the topology handed in (roots_scale.distributed builds it);
this file only says what the layers are.
"""

from __future__ import annotations

import torch
from deepspeed.pipe import LayerSpec, PipelineModule, TiedLayerSpec
from torch import nn

from roots_scale.config import ModelConfig
from roots_scale.models.gpt import add_positions, layer_count, output_layer, output_logits, position_embedding, \
    run_block, token_embedding
from roots_scale.models.names import TIED_KEY
from roots_scale.models.layers import RotaryEmbedding, TransformerBlock, make_norm, parallel_config, \
    parallel_cross_entropy, to_sequence_parallel

PARTITIONS = {"uniform": "type:^PipelineBlock$", "parameters": "parameters"}  # parallel.pipeline_partition


class TokenEmbedding(nn.Module):
    def __init__(self, cfg: ModelConfig, vocab_size: int, tensor_parallel_size: int,
                 sequence_parallel: bool = False) -> None:
        super().__init__()
        self.embedding = token_embedding(cfg, vocab_size, parallel_config(tensor_parallel_size))
        self.sequence_parallel = sequence_parallel

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.embedding(tokens)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """The tied output layer on the last stage."""
        return output_logits(None, self.embedding, hidden, self.sequence_parallel)


class Positions(nn.Module):
    """Positions and dropout; under sequence parallelism the stages then pass this rank's sequence slice."""

    def __init__(self, cfg: ModelConfig, sequence_parallel: bool = False) -> None:
        super().__init__()
        self.position_embedding = position_embedding(cfg)
        self.dropout = nn.Dropout(cfg.dropout)
        self.sequence_parallel = sequence_parallel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dropout(add_positions(x, self.position_embedding))
        return to_sequence_parallel(x) if self.sequence_parallel else x


class PipelineBlock(nn.Module):
    """Transformer block `index`, with its own RoPE angles (stages pass only the hidden states)."""

    def __init__(self, cfg: ModelConfig, tensor_parallel_size: int, index: int, sequence_parallel: bool = False) -> None:
        super().__init__()
        self.key = str(index)
        mp = parallel_config(tensor_parallel_size)
        self.layers = nn.ModuleDict({self.key: TransformerBlock(cfg, mp, sequence_parallel)})
        self.rotary = RotaryEmbedding(cfg.head_dim, cfg.rope_theta) if cfg.position_embedding == "rope" else None
        self.recompute = cfg.activation_checkpointing
        self.sequence_scale = tensor_parallel_size if sequence_parallel else 0  # x is [seq / TP, batch, hidden]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seq = x.shape[0] * self.sequence_scale if self.sequence_scale else x.shape[1]
        rope = None if self.rotary is None else self.rotary(seq, x.device)
        return run_block(self.layers[self.key], x, rope, self.recompute and self.training)


class FinalNorm(nn.Module):
    def __init__(self, cfg: ModelConfig, sequence_parallel: bool = False) -> None:
        super().__init__()
        self.final_norm = make_norm(cfg, sequence_parallel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.final_norm(x)


class OutputLayer(nn.Module):
    def __init__(self, cfg: ModelConfig, vocab_size: int, tensor_parallel_size: int,
                 sequence_parallel: bool = False) -> None:
        super().__init__()
        self.output = output_layer(cfg, vocab_size, parallel_config(tensor_parallel_size))
        self.sequence_parallel = sequence_parallel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return output_logits(self.output, None, x, self.sequence_parallel)


def _tied_logits(embedding: TokenEmbedding, hidden: torch.Tensor) -> torch.Tensor:
    return embedding.logits(hidden)


def language_model_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The last stage's loss: what `GPT.forward` returns when given labels."""
    return parallel_cross_entropy(logits, labels)


def gpt_layer_specs(cfg: ModelConfig, vocab_size: int, tensor_parallel_size: int,
                    sequence_parallel: bool = False) -> list[LayerSpec]:
    """The layers in GPT's order (the index of each is its seed offset, as in `GPT`)."""
    tp, sp = tensor_parallel_size, sequence_parallel
    tied = dict(tied_weight_attr=["embedding.weight"])
    embedding = (TiedLayerSpec(TIED_KEY, TokenEmbedding, cfg, vocab_size, tp, sp, **tied)
                 if cfg.tie_embeddings else LayerSpec(TokenEmbedding, cfg, vocab_size, tp, sp))
    specs = [embedding, LayerSpec(Positions, cfg, sp)]
    specs += [LayerSpec(PipelineBlock, cfg, tp, index, sp) for index in range(cfg.num_layers)]
    specs.append(LayerSpec(FinalNorm, cfg, sp))
    specs.append(TiedLayerSpec(TIED_KEY, TokenEmbedding, cfg, vocab_size, tp, sp, forward_fn=_tied_logits, **tied)
                 if cfg.tie_embeddings else LayerSpec(OutputLayer, cfg, vocab_size, tp, sp))
    assert len(specs) == layer_count(cfg)
    return specs


def build_pipeline_gpt(cfg: ModelConfig, vocab_size: int, tensor_parallel_size: int, topology, seed: int,
                       partition: str = "uniform", sequence_parallel: bool = False) -> PipelineModule:
    """This rank's stage of a GPT cut into `topology`'s pipeline stages, each layer seeded as `GPT` seeds it."""
    specs = gpt_layer_specs(cfg, vocab_size, tensor_parallel_size, sequence_parallel)
    with torch.no_grad():  # DeepSpeed broadcasts the tied embedding in place: keep that out of autograd's graph
        return PipelineModule(layers=specs, topology=topology,
                              loss_fn=language_model_loss, seed_layers=True, seed_fn=torch.manual_seed,
                              base_seed=seed, partition_method=PARTITIONS[partition],
                              activation_checkpoint_interval=0)
