"""Prometheus metrics of the policy service, in the text exposition format.

Every series carries a ``worker`` label (0 for a single process). With
``--workers N`` each worker writes a snapshot of its numbers to a shared
folder once a second, and ``GET /metrics`` on any worker returns the series
of all live workers: its own as they are, the others' at most one second
old. Sum over ``worker`` for the service's totals.

Series: ``tfkd_requests_total{endpoint,code}``, ``tfkd_request_seconds``
(histogram of the time from a request's arrival to its answer, /v1/act),
``tfkd_batch_rows`` (histogram of rows per model run),
``tfkd_model_reloads_total``, ``tfkd_model_reload_failures_total``,
``tfkd_queued_rows`` and ``tfkd_model_info{version}``.
"""

from __future__ import annotations

import bisect
import json
import os

from tfkd import files

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Histogram:
    """Cumulative-bucket histogram, as Prometheus counts it."""

    def __init__(self, bounds):
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    def to_dict(self) -> dict:
        return {"bounds": list(self.bounds), "counts": list(self.counts), "sum": self.sum}


class Metrics:
    """The numbers of one worker process."""

    def __init__(self, worker: int = 0):
        self.worker = worker
        self.requests: dict[tuple[str, int], int] = {}
        self.latency = Histogram(LATENCY_BUCKETS)
        self.batch_rows = Histogram(BATCH_BUCKETS)
        self.reloads = 0
        self.reload_failures = 0
        self.queued_rows = 0
        self.version = ""

    def count(self, endpoint: str, code: int) -> None:
        key = (endpoint, code)
        self.requests[key] = self.requests.get(key, 0) + 1

    def snapshot(self) -> dict:
        """This worker's numbers as strict JSON."""
        return {"worker": self.worker, "pid": os.getpid(),
                "requests": [[endpoint, code, n] for (endpoint, code), n in
                             sorted(self.requests.items())],
                "latency": self.latency.to_dict(), "batch_rows": self.batch_rows.to_dict(),
                "reloads": self.reloads, "reload_failures": self.reload_failures,
                "queued_rows": self.queued_rows, "version": self.version}

    def publish(self, folder: str) -> None:
        """Writes the snapshot to ``folder`` for the other workers' /metrics."""
        files.write_json(os.path.join(folder, f"worker-{self.worker}.json"), self.snapshot())


def gather(own: Metrics, folder: str | None) -> list[dict]:
    """Snapshots of this worker (live) and of the other live workers in ``folder``."""
    snapshots = {own.worker: own.snapshot()}
    for name in sorted(os.listdir(folder)) if folder else []:
        if not (name.startswith("worker-") and name.endswith(".json")):
            continue
        try:
            with open(os.path.join(folder, name), encoding="utf-8") as file:
                snapshot = json.load(file)
        except (OSError, ValueError):  # being replaced right now: next scrape has it
            continue
        if snapshot["worker"] not in snapshots and _alive(snapshot["pid"]):
            snapshots[snapshot["worker"]] = snapshot
    return [snapshots[worker] for worker in sorted(snapshots)]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def exposition(snapshots: list[dict]) -> str:
    """Prometheus text format (version 0.0.4) of the workers' snapshots."""
    lines = []

    def family(name: str, kind: str, text: str) -> None:
        lines.extend((f"# HELP {name} {text}", f"# TYPE {name} {kind}"))

    family("tfkd_requests_total", "counter", "HTTP requests answered, by endpoint and status")
    for s in snapshots:
        for endpoint, code, n in s["requests"]:
            lines.append(f'tfkd_requests_total{{worker="{s["worker"]}",endpoint="{endpoint}",'
                         f'code="{code}"}} {n}')
    for key, name, text in (
            ("latency", "tfkd_request_seconds", "time from a /v1/act request's arrival to its "
             "answer"),
            ("batch_rows", "tfkd_batch_rows", "observations per model run")):
        family(name, "histogram", text)
        for s in snapshots:
            _histogram_lines(lines, name, s["worker"], s[key])
    for key, name, kind, text in (
            ("reloads", "tfkd_model_reloads_total", "counter", "new model versions swapped in"),
            ("reload_failures", "tfkd_model_reload_failures_total", "counter",
             "new versions that did not load (the old one kept serving)"),
            ("queued_rows", "tfkd_queued_rows", "gauge", "observations waiting for a batch")):
        family(name, kind, text)
        lines.extend(f'{name}{{worker="{s["worker"]}"}} {s[key]}' for s in snapshots)
    family("tfkd_model_info", "gauge", "the model version each worker serves")
    lines.extend(f'tfkd_model_info{{worker="{s["worker"]}",version="{_escape(s["version"])}"}} 1'
                 for s in snapshots)
    return "\n".join(lines) + "\n"


def _histogram_lines(lines: list[str], name: str, worker: int, histogram: dict) -> None:
    total = 0
    bounds = [*map(_number, histogram["bounds"]), "+Inf"]
    for bound, count in zip(bounds, histogram["counts"]):
        total += count
        lines.append(f'{name}_bucket{{worker="{worker}",le="{bound}"}} {total}')
    lines.append(f'{name}_sum{{worker="{worker}"}} {histogram["sum"]!r}')
    lines.append(f'{name}_count{{worker="{worker}"}} {total}')


def _number(value) -> str:
    return repr(float(value))


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
