"""The data tools' layer of the error root: a corpus stage that cannot run as asked."""

from roots_core.errors import RootsError


class DataToolsError(RootsError):
    """A data-tools operation failed for a reason the user can fix; the message says what and how."""
