"""Micro-batching: concurrent requests share one run of the model.

A request puts its observations on a queue and awaits a future. One batching
task per process takes the queued requests in arrival order until they hold
``max_batch`` rows, or until ``max_wait`` has passed since the oldest of them
arrived, stacks them, runs the model once and hands each request its own
rows back. With ``C`` clients each waiting for its answer, throughput is
bounded by ``C / latency`` (Little's law); one model run per batch instead
of per request is what keeps the latency low as ``C`` grows (the dynamic
batching of TensorFlow Serving and Triton, Crankshaw et al. 2017, "Clipper").

A request with more rows than ``max_batch`` runs as a batch of its own; a
batch never splits a request.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import time
from typing import Awaitable, Callable

import numpy as np

# (observations [rows, *obs]) -> (actions [rows], logits [rows, A], model version)
RunBatch = Callable[[np.ndarray], Awaitable[tuple[np.ndarray, np.ndarray, str]]]


@dataclasses.dataclass
class _Request:
    observations: np.ndarray
    future: asyncio.Future
    arrival: float


class MicroBatcher:
    """Batches the observations of concurrent :meth:`submit` calls.

    Args:
        run: the model call on a stacked batch; returns actions, logits and
            the version of the model that ran (one model per batch, so a
            model swapped in meanwhile applies from the next batch).
        max_batch: most rows per model run (a single larger request excepted).
        max_wait_s: the longest the oldest queued request waits for others.
        on_batch: called with the number of rows of each batch (metrics).
    """

    def __init__(self, run: RunBatch, max_batch: int = 64, max_wait_s: float = 0.002,
                 on_batch: Callable[[int], None] | None = None):
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if not max_wait_s >= 0:
            raise ValueError(f"max_wait_s must be >= 0, got {max_wait_s}")
        self.max_batch, self.max_wait_s = max_batch, max_wait_s
        self._run, self._on_batch = run, on_batch
        self._queue: collections.deque[_Request] = collections.deque()
        self._rows = 0
        self._task: asyncio.Task | None = None
        self._closing = False
        self._arrived = asyncio.Event()  # the queue is not empty
        self._full = asyncio.Event()  # the queue holds max_batch rows or more

    def start(self) -> None:
        """Starts the batching task on the running event loop."""
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def close(self) -> None:
        """Answers every queued request, then stops (graceful shutdown)."""
        self._closing = True
        self._arrived.set()
        self._full.set()
        if self._task is not None:
            await self._task

    @property
    def queued_rows(self) -> int:
        """Rows waiting for a batch."""
        return self._rows

    async def submit(self, observations: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
        """(actions, logits, model version) of ``observations`` [rows, *obs], rows >= 1."""
        if self._closing:
            raise RuntimeError("the batcher is shutting down")
        future = asyncio.get_running_loop().create_future()
        self._queue.append(_Request(observations, future, time.monotonic()))
        self._rows += len(observations)
        self._arrived.set()
        if self._rows >= self.max_batch:
            self._full.set()
        return await future

    async def _loop(self) -> None:
        while True:
            await self._arrived.wait()
            if not self._queue:
                if self._closing:
                    return
                self._arrived.clear()
                continue
            wait = self._queue[0].arrival + self.max_wait_s - time.monotonic()
            if self._rows < self.max_batch and wait > 0 and not self._closing:
                try:
                    await asyncio.wait_for(self._full.wait(), wait)
                except TimeoutError:
                    pass
            batch = self._take()
            await self._answer(batch)

    def _take(self) -> list[_Request]:
        """The oldest requests, up to max_batch rows (at least one request)."""
        batch, rows = [self._queue.popleft()], 0
        rows = len(batch[0].observations)
        while self._queue and rows + len(self._queue[0].observations) <= self.max_batch:
            request = self._queue.popleft()
            batch.append(request)
            rows += len(request.observations)
        self._rows -= rows
        if self._rows < self.max_batch:
            self._full.clear()
        if not self._queue and not self._closing:
            self._arrived.clear()
        return batch

    async def _answer(self, batch: list[_Request]) -> None:
        observations = (batch[0].observations if len(batch) == 1 else
                        np.concatenate([request.observations for request in batch]))
        if self._on_batch is not None:
            self._on_batch(len(observations))
        try:
            actions, logits, version = await self._run(observations)
        except Exception as error:  # every request of the batch gets the model's error
            for request in batch:
                if not request.future.done():
                    request.future.set_exception(error)
            return
        start = 0
        for request in batch:
            stop = start + len(request.observations)
            if not request.future.done():  # a client that went away cancelled its future
                request.future.set_result((actions[start:stop], logits[start:stop], version))
            start = stop
