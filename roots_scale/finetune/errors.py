"""The fine-tuning layer of the error root."""

from roots_core.errors import RootsError


class FinetuneError(RootsError):
    """A fine-tuning config, labelled file or starting checkpoint that cannot work; the message says what would."""
