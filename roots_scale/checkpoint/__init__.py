"""Checkpoints: the folder layout and its names, the consolidated (layout-free) format, RNG state, and
the manager that saves, publishes, retains and restores them. DeepSpeed's private API is used in one
module only, `deepspeed_state`."""
