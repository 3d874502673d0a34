"""Measuring an exported policy the way it is deployed: size, speed, return, agreement.

Every number comes from one :class:`~tfkd.deploy.runtime.Artefact` call, the
call a user's program or ``tfkd serve`` makes (``observations -> (actions,
logits)``, argmax included):

- ``bytes`` (the file, or the folder's files summed) and ``bytes_gzip`` (each
  file gzip-compressed at level 9: what a download or a pruned model costs);
- ``latency_us_b1``: median microseconds of one call at batch 1 over
  ``repeats`` calls after a warm-up (:func:`tfkd.rl.evaluation.median_call_seconds`);
- ``throughput_b256``: actions per second at batch 256, ``256 / median call``;
- ``mean_return``, ``std_return``, ``ci95``: the artefact playing the held-out
  episodes itself (:func:`tfkd.rl.evaluation.evaluate_policy`), so a
  quantisation error that changes an action changes the return;
- ``normalized_score``: ``(R − R_random) / (R_teacher − R_random)`` on the same
  seeds (None without a teacher);
- ``agreement``: the fraction of the artefact's own visited states on which it
  picks the float student's action.
"""

from __future__ import annotations

import gzip
import math
import os
import sys
from typing import Sequence

import numpy as np

from tfkd.deploy.runtime import Artefact
from tfkd.rl.evaluation import (ReturnStats, evaluate_policy, median_call_seconds,
                                normalized_score)
from tfkd.rl.policies import Policy

#: Keys of every entry of report.json's "formats" (the fixed interface).
ENTRY_KEYS = ("format", "path", "bytes", "latency_us_b1", "throughput_b256", "mean_return",
              "ci95", "normalized_score", "agreement")
THROUGHPUT_BATCH = 256


class ArtefactPolicy(Policy):
    """An artefact acting greedily, counting agreement with a reference artefact.

    Args:
        artefact: the policy network that acts.
        reference: the float student, or None (no agreement counted).
    """

    def __init__(self, artefact: Artefact, reference: Artefact | None = None):
        self.artefact, self.reference = artefact, reference
        self.matches = self.count = 0

    def __call__(self, observations: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        actions, _ = self.artefact(observations)
        if self.reference is not None:
            self.matches += int(np.sum(actions == self.reference(observations)[0]))
            self.count += len(actions)
        return actions

    @property
    def agreement(self) -> float | None:
        return self.matches / self.count if self.count else None


def size_bytes(path: str) -> tuple[int, int]:
    """``(bytes, gzip-compressed bytes)`` of a file, or of a folder's files summed."""
    paths = [path] if os.path.isfile(path) else sorted(
        os.path.join(root, name) for root, _, names in os.walk(path) for name in names)
    raw = packed = 0
    for file_path in paths:
        with open(file_path, "rb") as file:
            content = file.read()
        raw += len(content)
        packed += len(gzip.compress(content, compresslevel=9, mtime=0))
    return raw, packed


def speed(artefact: Artefact, observations: np.ndarray, repeats: int) -> tuple[float, float]:
    """``(latency_us_b1, throughput_b256)`` of ``artefact`` on real observations.

    Batch 1 is ``observations[:1]``; batch 256 repeats ``observations`` as
    needed. Both are medians over ``repeats`` calls after ``repeats // 20``
    warm-up calls.
    """
    single = np.ascontiguousarray(observations[:1], dtype=np.float32)
    batch = np.ascontiguousarray(np.resize(observations, (THROUGHPUT_BATCH,
                                                          *observations.shape[1:])),
                                 dtype=np.float32)
    warmup = max(10, repeats // 20)
    latency = median_call_seconds(artefact, single, repeats, warmup)
    batch_seconds = median_call_seconds(artefact, batch, repeats, warmup)
    return 1e6 * latency, THROUGHPUT_BATCH / batch_seconds


def measure(name: str, artefact: Artefact, *, env_id: str, seeds: Sequence[int],
            observations: np.ndarray, repeats: int, params: int | None,
            reference: Artefact | None, random_return: ReturnStats,
            teacher_return: ReturnStats | None, runtime: str, path: str | None = None,
            **extra) -> dict:
    """One entry of report.json for ``artefact`` (see the module docstring).

    Args:
        name: the entry's "format" (e.g. "tflite-int8", "teacher").
        artefact: what is measured.
        env_id, seeds: the held-out episodes it plays.
        observations: real observations for the timing calls.
        repeats: timed calls per batch size (at least 1000 for a report).
        params: parameter count of the network behind it.
        reference: the float student, for agreement (None: not counted).
        random_return, teacher_return: on the same seeds (teacher None: no score).
        runtime: what ran it, in words (e.g. "LiteRT interpreter").
        path: the file or folder reported (default: ``artefact.path``).
        **extra: further keys of the entry.
    """
    path = artefact.path if path is None else path
    size, packed = size_bytes(path) if os.path.exists(path) else (None, None)
    latency, throughput = speed(artefact, observations, repeats)
    policy = ArtefactPolicy(artefact, reference)
    stats = evaluate_policy(env_id, policy, seeds)
    score = None if teacher_return is None else normalized_score(
        stats.mean, random_return.mean, teacher_return.mean)
    return {"format": name, "path": path, "bytes": size, "bytes_gzip": packed, "params": params,
            "latency_us_b1": latency, "throughput_b256": throughput,
            "mean_return": stats.mean, "std_return": stats.std, "ci95": list(stats.ci95),
            "num_episodes": stats.num_episodes, "normalized_score": score,
            "agreement": policy.agreement, "runtime": runtime, **extra}


def print_table(env_id: str, entries: Sequence[dict], random_return: dict, file=None) -> None:
    """The artefact table: size, speed, return and agreement of each entry.

    ``random_return`` is report.json's "random" record (mean_return, ci95).
    """
    file = file or sys.stdout
    header = ("artefact", "runtime", "bytes", "gzip", "params", "µs/action (b1)",
              "actions/s (b256)", "return (mean [95% CI])", "score", "agreement")
    lines = [header]
    for entry in entries:
        lines.append((
            entry["format"], entry["runtime"], _count(entry["bytes"]),
            _count(entry.get("bytes_gzip")), _count(entry.get("params")),
            f"{entry['latency_us_b1']:.1f}", _count(round(entry["throughput_b256"])),
            f"{entry['mean_return']:.1f} [{entry['ci95'][0]:.1f}, {entry['ci95'][1]:.1f}]",
            _fixed(entry["normalized_score"], 3), _fixed(entry["agreement"], 3)))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    print(f"\n{env_id}: {entries[0]['num_episodes'] if entries else 0} held-out episodes per "
          f"artefact; random play {random_return['mean_return']:.1f} "
          f"[{random_return['ci95'][0]:.1f}, {random_return['ci95'][1]:.1f}]", file=file)
    for index, line in enumerate(lines):
        print(" | ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip(),
              file=file)
        if index == 0:
            print("-+-".join("-" * width for width in widths), file=file)


def _count(value) -> str:
    return "" if value is None else f"{value:,}"


def _fixed(value, digits: int) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"
