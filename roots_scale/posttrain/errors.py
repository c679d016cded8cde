"""The post-training layer of the error root."""

from roots_core.errors import RootsError


class InferenceError(RootsError):
    """A checkpoint, tokenizer or model directory that cannot serve generate / evaluate / export / import;
    the message says what to pass."""


class HFConversionError(InferenceError):
    """Weights or a config that do not map between roots_scale and a Hugging Face architecture."""
