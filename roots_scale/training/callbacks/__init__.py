"""The trainer's callbacks, one concern each: checkpointing, preemption, the update guard, throughput and
MFU, validation, and metrics logging (`training.trainer.Callback` is the interface)."""
