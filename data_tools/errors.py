"""The data tools' one exception type, so callers (and the CLI) can tell our errors from bugs."""


class DataToolsError(Exception):
    """A data-tools operation failed for a reason the user can fix; the message says what and how."""
