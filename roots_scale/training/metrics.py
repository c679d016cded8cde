"""Training metrics to `metrics.jsonl` (one JSON object per logged step), tensorboard and the console.

Record fields (absent when not measured, e.g. `mfu` without a known device peak):
loss, lr, grad_norm, loss_scale (fp16 only), consumed_samples, tokens_per_sec and samples_per_sec
(global), tflops_per_device and mfu (model FLOPs, see `flops.py`), mem_gb (peak accelerator memory
allocated, or the process RSS on CPU), valid_loss and valid_ppl (at train.eval_interval).
Tensorboard tags: `valid/loss` for `valid_loss` and `valid/ppl` for `valid_ppl`, `train/<field>` for the rest;
Weights & Biases (`run.wandb`, optional) gets the same values under the same names, at the same steps.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from collections.abc import Callable, Mapping
from typing import Any

from roots_core.atomic import write_text_atomic
from roots_scale.config import ConfigError

VALID_PREFIX = "valid_"

# The one-line console log: each field present in a record, in this order, formatted so.
CONSOLE_FIELDS: list[tuple[str, Callable[[float], str]]] = [
    ("loss", lambda v: f"loss {v:.3f}"),
    ("lr", lambda v: f"lr {v:.1e}"),
    ("grad_norm", lambda v: f"grad {v:.2f}"),
    ("loss_scale", lambda v: f"scale {v:g}"),
    ("tokens_per_sec", lambda v: f"{_si(v)} tok/s"),
    ("tflops_per_device", lambda v: f"{v:.4g} TFLOP/s"),
    ("mfu", lambda v: f"MFU {v:.1%}"),
    ("mem_gb", lambda v: f"mem {v:.1f} GB"),
    ("valid_loss", lambda v: f"valid loss {v:.3f}"),
    ("valid_ppl", lambda v: f"valid ppl {v:.2f}"),
    ("valid_accuracy", lambda v: f"valid acc {v:.3f}"),  # fine-tuning (roots_scale.finetune)
    ("valid_f1_macro", lambda v: f"valid F1 {v:.3f}"),
    ("valid_bleu", lambda v: f"valid BLEU {v:.1f}"),
    ("valid_chrf", lambda v: f"valid chrF {v:.1f}"),
]


def tensorboard_tag(field: str) -> str:
    """`valid_loss` → `valid/loss`, `lr` → `train/lr`: validation and training curves in their own sections."""
    if field.startswith(VALID_PREFIX):
        return "valid/" + field[len(VALID_PREFIX):]
    return "train/" + field


def format_console(step: int, total_steps: int, values: dict[str, Any]) -> str:
    """The one-line log, e.g. `step 120/1000 | loss 3.412 | lr 2.9e-04 | ... | mem 31.2 GB`."""
    parts = [f"step {step}/{total_steps}"]
    parts += [render(values[field]) for field, render in CONSOLE_FIELDS if values.get(field) is not None]
    return " | ".join(parts)


def _si(value: float) -> str:
    """41234.5 → '41.2k': rates that span laptops to clusters, in a few characters."""
    for threshold, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= threshold:
            return f"{value / threshold:.1f}{suffix}"
    return f"{value:.1f}"


WANDB_DIR = "wandb"  # under the run directory: wandb's own files, and the run id that a resume continues
WANDB_RUN_ID = "run_id"


def start_wandb(run_dir: Path, settings: Mapping[str, str], config: dict[str, Any]) -> Any:
    """A wandb run writing under `run_dir/wandb/`, with `config` as its config and the id kept there, so that a
    resumed run continues the same wandb run. `settings` is `run.wandb`, already validated."""
    import wandb

    id_file = run_dir / WANDB_DIR / WANDB_RUN_ID
    if not id_file.is_file():
        write_text_atomic(id_file, secrets.token_hex(6) + "\n")
    try:
        return wandb.init(project=settings["project"], entity=settings.get("entity"),
                          mode=settings.get("mode", "online"), dir=run_dir, id=id_file.read_text().strip(),
                          resume="allow", name=config.get("run", {}).get("name"), config=config)
    except wandb.errors.Error as err:
        raise ConfigError(f"run.wandb = {dict(settings)}: wandb could not start the run ({err}); log in with "
                          f"`wandb login`, or set run.wandb.mode=offline and `wandb sync` {run_dir / WANDB_DIR} "
                          f"later") from err


class MetricsLogger:
    """Writes on one rank only; the others hold a logger that does nothing."""

    def __init__(self, run_dir: Path, enabled: bool, tensorboard: bool, wandb: Mapping[str, str] | None = None,
                 config: dict[str, Any] | None = None) -> None:
        """`wandb` (run.wandb) non-empty also logs to Weights & Biases, with `config` (the resolved run config)."""
        self.path = Path(run_dir) / "metrics.jsonl"
        self.tensorboard_dir = Path(run_dir) / "tensorboard"
        self.enabled = enabled
        self._writer = None
        self._wandb = start_wandb(Path(run_dir), wandb, config or {}) if enabled and wandb else None
        if enabled and tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(self.tensorboard_dir))

    def truncate_after(self, step: int) -> None:
        """On resume from `step`: drop records of steps a killed run logged past its checkpoint."""
        if not self.enabled or not self.path.exists():
            return
        kept = []
        for line in self.path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a kill
            if record.get("step", 0) <= step:
                kept.append(line)
        write_text_atomic(self.path, "".join(line + "\n" for line in kept))

    def log(self, step: int, total_steps: int, values: dict[str, Any]) -> None:
        """One record for `step`: a metrics.jsonl line, tensorboard scalars, the console line; None values left out."""
        if not self.enabled:
            return
        values = {key: value for key, value in values.items() if value is not None}
        with open(self.path, "a") as handle:
            handle.write(json.dumps({"step": step, **values}) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        if self._writer is not None:
            for key, value in values.items():
                self._writer.add_scalar(tensorboard_tag(key), value, step)
            self._writer.flush()
        if self._wandb is not None:
            self._wandb.log({tensorboard_tag(key): value for key, value in values.items()}, step=step)
        print(format_console(step, total_steps, values), flush=True)

    def close(self, failed: bool = False) -> None:
        """Flush and close the writers; the wandb run is marked finished, or failed when training raised."""
        if self._writer is not None:
            self._writer.close()
        if self._wandb is not None:
            self._wandb.finish(exit_code=1 if failed else 0)
            self._wandb = None
