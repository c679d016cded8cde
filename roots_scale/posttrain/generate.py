"""`roots-train generate CHECKPOINT --prompt "..."`: continue a prompt with a GPT (or RNN / LSTM / GRU) checkpoint,
to eyeball training.

One process: the checkpoint's full weights (any TP size, any ZeRO stage) in a TP=1 model, on CPU or the
first GPU, and the tokenizer the run's store manifest names. Greedy by default (`--temperature 0`); with a
temperature, sampling from the top-k / top-p (nucleus) tokens, seeded. Padding rows of the vocabulary are
never produced. Each step runs the whole context (at most `model.seq_length` tokens, the last ones): simple,
and fast enough for a look at a small model. An empty prompt starts after an end-of-document token.
"""

from __future__ import annotations

import argparse
import json

import torch
from torch import nn

from roots_scale.posttrain.errors import InferenceError
from roots_scale.posttrain.load import load_checkpoint_model, run_tokenizer, single_process_world


def next_token(logits: torch.Tensor, temperature: float, top_k: int | None, top_p: float | None,
               generator: torch.Generator) -> int:
    """The next token from last-position logits [vocab]: the argmax at temperature 0, else a filtered sample."""
    if temperature <= 0:
        return int(logits.argmax())
    logits = logits / temperature
    if top_k is not None:
        kth = torch.topk(logits, min(top_k, logits.numel())).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None:
        ordered, order = logits.sort(descending=True)
        probs = ordered.softmax(-1)
        outside = probs.cumsum(-1) - probs >= top_p  # the nucleus is complete before these tokens
        logits = logits.scatter(0, order[outside], float("-inf"))
    return int(torch.multinomial(logits.softmax(-1), 1, generator=generator))


@torch.no_grad()
def generate(model: nn.Module, prompt: list[int], max_new_tokens: int, vocab_size: int, stop_id: int,
             temperature: float = 0.0, top_k: int | None = None, top_p: float | None = None,
             seed: int = 0) -> list[int]:
    """New token ids after `prompt` (ids below `vocab_size` only), ending early after `stop_id`."""
    device = next(model.parameters()).device
    generator = torch.Generator(device="cpu").manual_seed(seed)
    ids = list(prompt) or [stop_id]
    context = model.cfg.seq_length
    new: list[int] = []
    for _ in range(max_new_tokens):
        logits = model(torch.tensor([ids[-context:]], device=device))[0, -1, :vocab_size].float().cpu()
        token = next_token(logits, temperature, top_k, top_p, generator)
        ids.append(token)
        new.append(token)
        if token == stop_id:
            break
    return new


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"{text} is not in (0, 1]")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer")
    return value


def main(argv: list[str] | None = None) -> int:
    """The `roots-train generate` command."""
    parser = argparse.ArgumentParser(
        prog="roots-train generate",
        description="Continue prompts with a GPT, RNN, LSTM or GRU checkpoint (one process, TP=1).")
    parser.add_argument("checkpoint", help="run directory, its checkpoints/ folder, or one iter_NNNNNNN folder")
    parser.add_argument("--prompt", action="append", required=True, help="text to continue; repeat for several")
    parser.add_argument("--max-new-tokens", type=_positive, default=64)
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default); >0 = sample")
    parser.add_argument("--top-k", type=_positive, help="sample among the k likeliest tokens")
    parser.add_argument("--top-p", type=_fraction, help="sample within the smallest set of probability ≥ p")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed")
    parser.add_argument("--tokenizer", help="sentencepiece .model (default: the one the run's store names)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", action="store_true", help="one JSON object per prompt, with token ids")
    args = parser.parse_args(argv)
    with single_process_world():
        model, state = load_checkpoint_model(args.checkpoint)
        if state.config.model.arch == "bert":
            raise InferenceError(f"{args.checkpoint} is a BERT checkpoint; generate continues text with a causal "
                                 f"language model (model.arch gpt, rnn, lstm or gru)")
        tokenizer = run_tokenizer(state.config, args.tokenizer)
        model.to(args.device)
        for prompt in args.prompt:
            prompt_ids = tokenizer.encode(prompt)
            new = generate(model, prompt_ids, args.max_new_tokens, tokenizer.vocab_size,
                           tokenizer.special_tokens["eod"], args.temperature, args.top_k, args.top_p, args.seed)
            completion = tokenizer.decode(new)
            if args.json:
                print(json.dumps({"step": state.step, "prompt": prompt, "completion": completion,
                                  "prompt_ids": prompt_ids, "completion_ids": new}, ensure_ascii=False))
            else:
                print(f"--- step {state.step} ---\n{prompt}{completion}")
    return 0
