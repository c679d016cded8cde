"""Parameter names of the whole model, whatever holds the parameters: a GPT or BERT, or one pipeline stage.

A pipeline stage (models/pipeline.py) names a weight `<layer index>.<name in GPT>`, or
`tied_modules.<key>.<name in GPT>` for the token embedding the first and last stage share; dropping that
prefix gives the name a whole GPT uses, which is what checkpoints and conversions are keyed by. Kept apart
from pipeline.py so that the one-process tools (export, generate) need not import DeepSpeed.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from torch import nn

TIED_KEY = "embedding"  # the key of the token embedding shared by the first and last pipeline stages
_PIPELINE_PREFIX = re.compile(rf"^(\d+|tied_modules\.{TIED_KEY})\.")


def is_pipeline_stage(module: nn.Module) -> bool:
    """Whether `module` is one stage of a DeepSpeed PipelineModule (which keeps its shared layers in `tied_modules`)."""
    return isinstance(getattr(module, "tied_modules", None), nn.ModuleDict)


def model_parameters(module: nn.Module) -> Iterator[tuple[str, nn.Parameter]]:
    """(name in the whole model, parameter) for every parameter `module` holds."""
    stage = is_pipeline_stage(module)
    for name, param in module.named_parameters():
        yield (_PIPELINE_PREFIX.sub("", name) if stage else name), param
