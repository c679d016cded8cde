"""The planner's errors."""

from roots_core.errors import RootsError


class PlanError(RootsError):
    """A planning request that cannot be answered (an unknown device, a layout that cannot run)."""
