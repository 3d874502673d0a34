"""Plots of distillation histories."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from tfkd.rl.loops import DistillationHistory


def plot_history(histories: dict[str, "DistillationHistory"], path: str, title: str = "",
                 normalized: bool = False) -> None:
    """Plots student return (± std) and agreement against env steps to a PNG.

    Args:
        histories: label -> history, e.g. ``{"teacher-driven": h1, "student-driven": h2}``.
        path: output file (PNG).
        title: figure title.
        normalized: plot the normalised score instead of the return (histories
            of different envs, as in a multi-task run).
    """
    import matplotlib  # imported here: a headless backend must be chosen before pyplot loads

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (returns_axis, agreement_axis) = plt.subplots(1, 2, figsize=(11, 4))
    for label, history in histories.items():
        steps = np.asarray(history.env_steps)
        if normalized:
            mean = _floats(history.normalized_score)
            evaluated = ~np.isnan(mean)
            returns_axis.plot(steps[evaluated], mean[evaluated], marker="o", label=label)
        else:
            mean = _floats(history.student_return_mean)
            std = _floats(history.student_return_std)
            evaluated = ~np.isnan(mean)
            returns_axis.plot(steps[evaluated], mean[evaluated], marker="o", label=label)
            returns_axis.fill_between(
                steps[evaluated], (mean - std)[evaluated], (mean + std)[evaluated], alpha=0.2
            )
        agreement_axis.plot(steps, history.agreement, marker=".", label=label)
    what = "normalised score" if normalized else "return"
    returns_axis.set(xlabel="env steps", ylabel=f"student {what}", title=what)
    agreement_axis.set(xlabel="env steps", ylabel="agreement with teacher", title="agreement")
    for axis in (returns_axis, agreement_axis):
        axis.grid(alpha=0.3)
        axis.legend()
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _floats(values) -> np.ndarray:
    """A float array with NaN for the None of rounds that were not evaluated."""
    return np.array([np.nan if value is None else value for value in values], dtype=float)
