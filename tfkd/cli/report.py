"""What the ``tfkd`` command reports: the table, ``results.json`` and the plot.

``results.json`` (strict JSON: no NaN or Infinity; undefined numbers are null)::

    env, seed, eval_seeds, episodes, agreement, interrupted,
    config:   the whole configuration of the run,
    versions: tfkd, tensorflow, keras, gymnasium, git_commit (null outside a git checkout),
    random:   mean_return, std_return, ci95, num_episodes,
    teacher, student: params, mean_return, std_return, ci95 [lo, hi],
                      normalized_score, num_episodes   (student: null for a teacher alone)

plus, after ``distill``, ``mode``, ``kept_round``, ``history`` and ``wall_time_s``.

A multi-task ``distill`` (teachers of several envs) writes ``envs`` (the list)
instead of ``env``, and per env under ``tasks``: ``agreement``, ``random``,
``teacher`` and ``student`` (``params``: the student's network for that env,
shared trunk included); ``combined`` holds ``student_params`` (the whole
student), ``teachers_params`` (all teachers together), and the mean and the
minimum of the students' normalised scores.
Returns are measured on the held-out seeds ``eval_seeds``; the normalised
score is (R − R_random) / (R_teacher − R_random), the random policy measured on
the same seeds, null where it is undefined (R_teacher = R_random).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
from dataclasses import dataclass
from typing import Any, Sequence

from tfkd.provenance import versions
from tfkd.rl.evaluation import ReturnStats
from tfkd.rl.plotting import plot_history

RESULTS_FILE = "results.json"
PLOT_FILE = "distillation.png"


@dataclass(frozen=True)
class Row:
    """One policy in a report: its size, its returns and its normalised score."""

    name: str
    params: int | None
    stats: ReturnStats | None
    normalized_score: float | None

    def as_dict(self) -> dict:
        """The JSON record of this row (returns are null where not measured)."""
        stats = self.stats
        return {
            "params": self.params,
            "mean_return": stats.mean if stats else None,
            "std_return": stats.std if stats else None,
            "ci95": list(stats.ci95) if stats else None,
            "normalized_score": self.normalized_score,
            "num_episodes": stats.num_episodes if stats else 0,
        }


def print_table(env_id: str, rows: Sequence[Row], agreement: float | None = None,
                seconds: float | None = None, note: str | None = None, file=None) -> None:
    """Prints the rows as an aligned table: mean ± std, n, 95% CI, % of teacher (normalised)."""
    file = file or sys.stdout
    lines = [("network", "params", "return (mean ± std)", "n", "95% CI",
              "% of teacher (normalised)")]
    for row in rows:
        stats = row.stats
        lines.append((
            row.name,
            f"{row.params:,}" if row.params is not None else "",
            f"{stats.mean:.1f} ± {stats.std:.1f}" if stats else "not measured",
            str(stats.num_episodes) if stats else "0",
            f"[{stats.ci95[0]:.1f}, {stats.ci95[1]:.1f}]" if stats else "n/a",
            _percent(row.normalized_score),
        ))
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    print(f"\n{env_id}", file=file)
    for index, line in enumerate(lines):
        print(" | ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip(),
              file=file)
        if index == 0:
            print("-+-".join("-" * width for width in widths), file=file)
    sized = {row.name: row.params for row in rows if row.params}
    if "teacher" in sized and "student" in sized:
        print(f"student / teacher parameters: {sized['student'] / sized['teacher']:.3f}",
              file=file)
    if agreement is not None:
        print(f"action agreement on the student's states: {100 * agreement:.1f}%", file=file)
    if seconds is not None:
        print(f"wall time: {seconds:.0f} s", file=file)
    if note:
        print(note, file=file)


def _percent(score: float | None) -> str:
    if score is None or not math.isfinite(score):
        return "n/a"
    return f"{100 * score:.0f}%".replace("-0%", "0%")


def results_dict(env_id: str, seed: int, eval_seeds: Sequence[int], config: dict,
                 rows: dict[str, Row | None], random: ReturnStats | None,
                 agreement: float | None, interrupted: bool = False, **extra: Any) -> dict:
    """The ``results.json`` record (see the module docstring)."""
    return {
        "env": env_id,
        "seed": seed,
        "eval_seeds": list(eval_seeds),
        "episodes": len(eval_seeds),
        "config": config,
        "versions": versions(),
        **task_dict(rows, random, agreement),
        "interrupted": interrupted,
        **extra,
    }


def task_dict(rows: dict[str, Row | None], random: ReturnStats | None,
              agreement: float | None) -> dict:
    """One env's measurements: ``agreement``, ``random``, ``teacher``, ``student``."""
    return {
        "agreement": agreement,
        "random": {
            "mean_return": random.mean if random else None,
            "std_return": random.std if random else None,
            "ci95": list(random.ci95) if random else None,
            "num_episodes": random.num_episodes if random else 0,
        },
        "teacher": rows["teacher"].as_dict() if rows.get("teacher") else None,
        "student": rows["student"].as_dict() if rows.get("student") else None,
    }


def combined_dict(tasks: dict[str, dict], student_params: int) -> dict:
    """The multi-task view: sizes, and the mean and minimum normalised score over envs."""
    scores = [task["student"]["normalized_score"] for task in tasks.values()]
    defined = None not in scores
    return {
        "student_params": student_params,
        "teachers_params": sum(task["teacher"]["params"] or 0 for task in tasks.values()),
        "mean_normalized_score": sum(scores) / len(scores) if defined else None,
        "min_normalized_score": min(scores) if defined else None,
    }


def print_combined(combined: dict, seconds: float, note: str, file=None) -> None:
    """Prints the multi-task view under the per-env tables."""
    file = file or sys.stdout
    ratio = combined["student_params"] / max(combined["teachers_params"], 1)
    print(f"\nall envs: one student of {combined['student_params']:,} parameters, "
          f"{ratio:.3f} of the teachers' {combined['teachers_params']:,}", file=file)
    print(f"normalised score: mean {_percent(combined['mean_normalized_score'])}, "
          f"lowest {_percent(combined['min_normalized_score'])}", file=file)
    print(f"wall time: {seconds:.0f} s", file=file)
    print(note, file=file)


def multi_task_results_dict(env_ids: Sequence[str], seed: int, eval_seeds: Sequence[int],
                            config: dict, tasks: dict[str, dict], combined: dict,
                            interrupted: bool, **extra: Any) -> dict:
    """The ``results.json`` record of a multi-task run (see the module docstring)."""
    return {
        "envs": list(env_ids),
        "seed": seed,
        "eval_seeds": list(eval_seeds),
        "episodes": len(eval_seeds),
        "config": config,
        "versions": versions(),
        "tasks": tasks,
        "combined": combined,
        "interrupted": interrupted,
        **extra,
    }


def json_safe(value: Any) -> Any:
    """Strict-JSON form: NaN / inf become null, numpy scalars numbers, tuples lists,
    dataclasses dicts, anything else without a JSON form its ``repr``."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, dict):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        value = value.item()  # a numpy scalar
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return repr(value)


def write_results(folder: str, results: dict) -> str:
    """Writes ``results.json`` (strict JSON) into ``folder``; returns its path."""
    path = os.path.join(folder, RESULTS_FILE)
    text = json.dumps(json_safe(results), indent=2, allow_nan=False)
    with open(path, "w", encoding="utf-8") as file:
        file.write(text + "\n")
    return path


def write_plot(folder: str, history, title: str) -> str | None:
    """Plots the student's return and agreement per round (a multi-task run:
    each env's normalised score); None without rounds."""
    if history is None or not history.num_rounds:
        return None
    path = os.path.join(folder, PLOT_FILE)
    if hasattr(history, "tasks"):
        plot_history(history.tasks, path, title=title, normalized=True)
    else:
        plot_history({"student": history}, path, title=title)
    return path
