"""The micro-batcher on its own: rows kept straight, max batch and max wait honoured."""

import asyncio
import time

import numpy as np
import pytest

from tfkd.deploy.serving.batcher import MicroBatcher


class Model:
    """Logits = the observations' first column (each row its own id); records batch sizes."""

    def __init__(self, fail: bool = False):
        self.batches, self.fail = [], fail

    async def __call__(self, observations):
        self.batches.append(len(observations))
        if self.fail:
            raise RuntimeError("model broke")
        logits = np.stack([observations[:, 0], -observations[:, 0]], axis=1)
        return np.argmax(logits, axis=1), logits, f"v{len(self.batches)}"


def rows(first: int, count: int) -> np.ndarray:
    observations = np.zeros((count, 4), np.float32)
    observations[:, 0] = np.arange(first, first + count)
    return observations


async def _with_batcher(model, max_batch, max_wait_s, body):
    batcher = MicroBatcher(model, max_batch, max_wait_s)
    batcher.start()
    try:
        return await body(batcher)
    finally:
        await batcher.close()


def test_each_request_gets_its_own_rows_back():
    model = Model()
    sizes = [1, 3, 2, 7, 1, 5, 4, 1, 2, 6]
    starts = np.cumsum([0, *sizes[:-1]])

    async def body(batcher):
        return await asyncio.gather(*(batcher.submit(rows(int(s), n))
                                      for s, n in zip(starts, sizes)))

    answers = asyncio.run(_with_batcher(model, 8, 0.05, body))
    for start, size, (actions, logits, _) in zip(starts, sizes, answers):
        np.testing.assert_array_equal(logits[:, 0], np.arange(start, start + size))
        np.testing.assert_array_equal(actions, (logits[:, 0] < 0).astype(int))
    assert sum(model.batches) == sum(sizes)
    assert all(batch <= 8 for batch in model.batches), model.batches
    assert len(model.batches) < len(sizes)  # requests shared runs


def test_a_full_batch_runs_at_once_and_a_lone_request_waits_max_wait():
    model = Model()

    async def body(batcher):
        start = time.monotonic()
        await asyncio.gather(*(batcher.submit(rows(i, 1)) for i in range(4)))
        full = time.monotonic() - start
        start = time.monotonic()
        await batcher.submit(rows(0, 1))
        lone = time.monotonic() - start
        return full, lone

    full, lone = asyncio.run(_with_batcher(model, 4, 0.3, body))
    assert full < 0.15, full  # four rows fill the batch: no waiting for max_wait
    assert 0.28 <= lone < 0.6, lone
    assert model.batches == [4, 1]


def test_a_request_larger_than_max_batch_runs_alone():
    model = Model()

    async def body(batcher):
        return await asyncio.gather(batcher.submit(rows(0, 2)), batcher.submit(rows(2, 10)),
                                    batcher.submit(rows(12, 3)))

    answers = asyncio.run(_with_batcher(model, 4, 0.01, body))
    assert model.batches == [2, 10, 3]
    np.testing.assert_array_equal(answers[1][1][:, 0], np.arange(2, 12))


def test_no_wait_when_max_wait_is_zero_and_versions_follow_the_batch():
    model = Model()

    async def body(batcher):
        first = await batcher.submit(rows(0, 1))
        second = await batcher.submit(rows(1, 1))
        return first[2], second[2]

    assert asyncio.run(_with_batcher(model, 64, 0.0, body)) == ("v1", "v2")


def test_a_failing_model_fails_every_request_of_its_batch_and_the_batcher_goes_on():
    model = Model(fail=True)

    async def body(batcher):
        results = await asyncio.gather(*(batcher.submit(rows(i, 1)) for i in range(3)),
                                       return_exceptions=True)
        model.fail = False
        return results, await batcher.submit(rows(5, 1))

    results, after = asyncio.run(_with_batcher(model, 8, 0.02, body))
    assert all(isinstance(r, RuntimeError) and "model broke" in str(r) for r in results)
    assert after[1][0, 0] == 5


def test_close_answers_what_is_queued():
    model = Model()

    async def body():
        batcher = MicroBatcher(model, 100, 10.0)  # would wait 10 s for more
        batcher.start()
        pending = [asyncio.ensure_future(batcher.submit(rows(i, 1))) for i in range(5)]
        await asyncio.sleep(0.05)
        start = time.monotonic()
        await batcher.close()
        answers = await asyncio.gather(*pending)
        with pytest.raises(RuntimeError, match="shutting down"):
            await batcher.submit(rows(0, 1))
        return answers, time.monotonic() - start

    answers, seconds = asyncio.run(body())
    assert [a[1][0, 0] for a in answers] == [0, 1, 2, 3, 4] and seconds < 1.0


@pytest.mark.parametrize("max_batch, max_wait_s", [(0, 0.01), (4, -1.0), (4, float("nan"))])
def test_bad_settings_are_refused(max_batch, max_wait_s):
    with pytest.raises(ValueError):
        MicroBatcher(Model(), max_batch, max_wait_s)
