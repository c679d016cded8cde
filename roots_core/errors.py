"""The one error root: every error a user can cause and fix is a `RootsError`.

Each layer has its own subclass (the store, the tokenizer, the data tools, config, data, training,
checkpoints, inference, launch), and every command line catches the root alone, so a user's mistake
always ends as one line on stderr and exit code 2, never a traceback. Anything else is a bug.
"""

from __future__ import annotations


class RootsError(Exception):
    """A failure the user can fix; the message names the file, key or value at fault and what would be valid."""


class TokenStoreError(RootsError):
    """A token store (manifest or Arrow file) that is missing, malformed or does not match its manifest."""


class TokenizerError(RootsError):
    """A tokenizer model that cannot be read or does not have roots_scale's fixed special ids."""


class LockError(RootsError):
    """A directory that another live process holds exclusively (a second job on the same run directory)."""
