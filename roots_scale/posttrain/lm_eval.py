"""`roots-train lm-eval RUN_OR_CHECKPOINT --tasks T1,T2`: lm-evaluation-harness on a checkpoint, through its export.

The checkpoint is exported as `export-hf` does into RUN/lm_eval/hf_<tag>/, evaluated there by the harness's `hf`
model (transformers, on CPU unless --device says otherwise) through its Python API, and the harness's results are
written to RUN/lm_eval/<tag>-<tasks>.json and printed as its metrics table. Tasks are the harness's own plus those
under --include-path, by default the ones that ship in `lm_eval_tasks/`, which read local files and download nothing.
"""

from __future__ import annotations

import argparse
import difflib
import importlib.util
import json
import shutil
from pathlib import Path
from typing import Any

from roots_core.atomic import write_text_atomic
from roots_scale.checkpoint.consolidated import FullState, read_full_state
from roots_scale.checkpoint.files import resolve_checkpoint
from roots_scale.posttrain.errors import InferenceError
from roots_scale.posttrain.hf.export import export_hf
from roots_scale.posttrain.load import run_tokenizer

TASKS_DIR = Path(__file__).resolve().parent / "lm_eval_tasks"  # the tasks that ship with roots_scale
OUTPUT_DIR = "lm_eval"  # inside the run directory: the exports and the results


def require_lm_eval() -> None:
    """InferenceError naming the extra to install when lm-evaluation-harness is missing, before anything is read."""
    if importlib.util.find_spec("lm_eval") is None:
        raise InferenceError("lm-evaluation-harness is not installed: pip install 'roots_scale[eval]'")


def task_manager(tasks: list[str], include_path: Path) -> Any:
    """The harness's task index plus `include_path`'s tasks; InferenceError naming a task in `tasks` it lacks."""
    from lm_eval.tasks import TaskManager

    if not include_path.is_dir():
        raise InferenceError(f"--include-path {include_path} is not a directory of lm-evaluation-harness task YAMLs")
    manager = TaskManager(include_path=str(include_path), include_defaults=False)
    if not set(tasks) <= set(manager.all_tasks):  # indexing the harness's own ~15,000 tasks takes seconds
        manager = TaskManager(include_path=str(include_path))
    for task in tasks:
        if task not in manager.all_tasks:
            close = difflib.get_close_matches(task, manager.all_tasks, n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise InferenceError(f"--tasks: unknown task {task!r}{hint}; valid tasks are lm-evaluation-harness's and "
                                 f"those under {include_path} (`lm-eval ls tasks --include_path {include_path}`)")
    return manager


def run_directory(checkpoint: Path) -> Path:
    """Where a checkpoint's evaluations go: its run directory, or the checkpoint folder itself when it stands alone."""
    return checkpoint.parents[1] if checkpoint.parent.name == "checkpoints" else checkpoint


def export_for_harness(checkpoint: Path, state: FullState, tokenizer: Path | None) -> Path:
    """Export `state` (a causal LM) with `export_hf` into RUN/lm_eval/hf_<tag>/, replacing an older export whole."""
    if state.config.model.arch == "bert":
        raise InferenceError(f"{checkpoint} is a BERT (model.arch=bert, a masked LM): lm-evaluation-harness's hf "
                             f"model evaluates causal LMs, i.e. GPT-2 or Llama style checkpoints")
    output = run_directory(checkpoint) / OUTPUT_DIR / f"hf_{checkpoint.name}"
    partial = output.with_name(output.name + ".partial")  # a killed export never passes for a complete one
    shutil.rmtree(partial, ignore_errors=True)
    export_hf(state.params, state.config.model, run_tokenizer(state.config, tokenizer).path, partial)
    shutil.rmtree(output, ignore_errors=True)
    partial.rename(output)
    return output


def results_path(checkpoint: Path, tasks: list[str], limit: int | None, num_fewshot: int | None) -> Path:
    """RUN/lm_eval/<tag>-<task+task>[-limitN][-Kshot].json: a limited or few-shot run never overwrites a full one."""
    name = f"{checkpoint.name}-{'+'.join(tasks)}"
    name += f"-limit{limit}" if limit is not None else ""
    name += f"-{num_fewshot}shot" if num_fewshot is not None else ""
    return run_directory(checkpoint) / OUTPUT_DIR / f"{name}.json"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="roots-train lm-eval",
        description="Evaluate a checkpoint (any TP size, any ZeRO stage; GPT-2 or Llama style) with "
                    "lm-evaluation-harness: export it to RUN/lm_eval/hf_<tag>/, run the harness's hf model on it, "
                    "write the results to RUN/lm_eval/<tag>-<tasks>.json and print the metrics table.")
    parser.add_argument("checkpoint", type=Path,
                        help="run directory, its checkpoints/ folder, or one iter_NNNNNNN folder")
    parser.add_argument("--tasks", required=True, help="comma-separated harness task names, e.g. roots_python_stdlib")
    parser.add_argument("--include-path", type=Path, default=TASKS_DIR,
                        help=f"a directory of extra task YAMLs (default: the tasks shipped with roots_scale, "
                             f"{TASKS_DIR})")
    parser.add_argument("--limit", type=int, help="evaluate only the first N documents of each task (for testing)")
    parser.add_argument("--batch-size", type=int, default=1, help="documents per forward pass (default 1)")
    parser.add_argument("--num-fewshot", type=int, help="few-shot examples per prompt (default: each task's own)")
    parser.add_argument("--device", default="cpu", help="torch device for the model (default cpu), e.g. cuda:0")
    parser.add_argument("--tokenizer", type=Path,
                        help="the run's sentencepiece .model (default: the one the run's store manifest names)")
    args = parser.parse_args(argv)
    for flag, value, least in (("--limit", args.limit, 1), ("--batch-size", args.batch_size, 1),
                               ("--num-fewshot", args.num_fewshot, 0)):
        if value is not None and value < least:
            raise InferenceError(f"{flag} {value} is invalid: it must be at least {least}")
    args.tasks = [task.strip() for task in args.tasks.split(",") if task.strip()]
    if not args.tasks:
        raise InferenceError("--tasks is empty: name one or more tasks, comma-separated, e.g. roots_python_stdlib")
    return args


def main(argv: list[str] | None = None) -> int:
    """The `roots-train lm-eval` command."""
    args = parse_args(argv)
    require_lm_eval()
    manager = task_manager(args.tasks, args.include_path)  # a typo fails before the export, not after
    checkpoint = resolve_checkpoint(args.checkpoint)
    state = read_full_state(checkpoint)
    export = export_for_harness(checkpoint, state, args.tokenizer)

    from lm_eval import simple_evaluate
    from lm_eval.utils import handle_non_serializable, make_table

    results = simple_evaluate(model="hf", model_args={"pretrained": str(export), "dtype": "float32"},
                              tasks=args.tasks, num_fewshot=args.num_fewshot, batch_size=args.batch_size,
                              device=args.device, limit=args.limit, task_manager=manager, log_samples=False)
    results["roots_scale"] = {"checkpoint": str(checkpoint), "step": state.step, "export": str(export)}
    path = results_path(checkpoint, args.tasks, args.limit, args.num_fewshot)
    write_text_atomic(path, json.dumps(results, indent=2, default=handle_non_serializable) + "\n")
    print(f"{checkpoint} (step {state.step}), exported to {export}:")
    print(make_table(results))
    if results.get("groups"):
        print(make_table(results, "groups"))
    print(f"wrote {path}")
    return 0
