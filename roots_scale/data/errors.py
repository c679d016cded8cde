"""The data layer of the error root: stores, splits, blends and sample indices that cannot make a dataset."""

from roots_core.errors import RootsError


class DataError(RootsError):
    """Training data that cannot be built as configured; the message names the file or key and what would work."""


class DatasetError(DataError):
    """A dataset that cannot be built from the given store and parameters."""


class SplitError(DataError):
    """A split that cannot be applied to a store (e.g. fewer documents than splits with a share)."""


class BlendError(DataError):
    """A blend file or blend parameters that cannot work; the message names the file or key and what would."""


class IndexCacheError(DataError):
    """The sample-index cache could not be built or read; the message names the directory."""
