"""`tfkd serve` as a user runs it: a real uvicorn server in a subprocess, a real
HTTP client (httpx) on loopback, answers checked against the artefact run directly."""

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest

import exported
from serve_process import REPO, Server, running

CONNECTIONS = 64


async def _hammer(url: str, seconds: float, connections: int = CONNECTIONS, seed: int = 0,
                  during=None):
    """``connections`` clients post 1-3 observations each, back to back, for ``seconds``.

    Returns (observations, status, body) of every request; ``during`` (a coroutine
    function) runs alongside.
    """
    results = []
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30.0) as client:
        stop = time.monotonic() + seconds

        async def one_client(index):
            rng = np.random.default_rng([seed, index])
            while time.monotonic() < stop:
                observations = rng.normal(size=(int(rng.integers(1, 4)), 4)).astype(np.float32)
                try:
                    response = await client.post("/v1/act",
                                                 json={"observations": observations.tolist()})
                    results.append((observations, response.status_code, response.json()))
                except httpx.HTTPError as error:  # counted as a failed request
                    results.append((observations, type(error).__name__, None))

        extra = [during()] if during else []
        await asyncio.gather(*(one_client(i) for i in range(connections)), *extra)
    return results


def _check_answers(results, references: dict[str, str]):
    """Every request answered 200 with the actions and logits of the version that answered."""
    failures = [status for _, status, _ in results if status != 200]
    assert not failures, f"{len(failures)} of {len(results)} failed: {set(failures)}"
    by_version = {}
    for observations, _, body in results:
        by_version.setdefault(body["model_version"], []).append((observations, body))
    for version, answers in by_version.items():
        observations = np.concatenate([o for o, _ in answers])
        logits = np.concatenate([np.asarray(b["logits"], np.float32) for _, b in answers])
        actions = np.concatenate([b["actions"] for _, b in answers])
        expected = exported.reference_logits(references[version], observations)
        np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(actions, np.argmax(expected, axis=-1))
    return by_version


def _publish(source, target):
    """Version ``source`` into ``target``: the artefact first, export.json last, by renames."""
    for name in ("student.tflite", "export.json"):
        staged = target / f".{name}.new"
        staged.write_bytes((source / name).read_bytes())
        os.replace(staged, target / name)


def _metric(text: str, name: str) -> list[float]:
    return [float(value) for value in re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M)]


@pytest.fixture(scope="module")
def server(export_v1):
    with running(export_v1) as server:
        yield server


def test_64_connections_answer_correctly_in_batches_without_errors(server, export_v1):
    results = asyncio.run(_hammer(server.url, seconds=2.0))
    # httpx's pool, not the server, sets this pace (benchmarks/serve.py measures with wrk)
    assert len(results) >= CONNECTIONS, len(results)
    _check_answers(results, {"1": export_v1})
    metrics = httpx.get(server.url + "/metrics").text
    rows, runs = _metric(metrics, "tfkd_batch_rows_sum")[0], _metric(metrics,
                                                                       "tfkd_batch_rows_count")[0]
    assert rows == sum(len(o) for o, _, _ in results)
    assert runs < len(results), "concurrent requests share model runs"
    assert _metric(metrics, r'tfkd_requests_total\{worker="\d+",endpoint="/v1/act",code="200"\}')


@pytest.mark.parametrize("body, status, message", [
    (b"{not json", 400, "not valid JSON"),
    (b"\xff\xfe\x00", 400, "not valid JSON"),
    (b"[" * 100_000, 400, "not valid JSON"),
    (b"[1, 2]", 400, "expected a JSON object"),
    (b'{"obs": [[1, 2, 3, 4]]}', 400, "expected a JSON object"),
    (b'{"observations": [[1, 2, 3]]}', 422, "shape [rows, 4], got [1, 3]"),
    (b'{"observations": [1, 2, 3, 4]}', 422, "shape [rows, 4], got [4]"),
    (b'{"observations": []}', 422, "shape [rows, 4], got [0]"),
    (b'{"observations": [[1, 2, 3, 4], [1, 2]]}', 422, "numeric array"),
    (b'{"observations": [["a", "b", "c", "d"]]}', 422, "got strings"),
    (b'{"observations": [[true, false, true, true]]}', 422, "got booleans"),
    (b'{"observations": [[null, 1, 2, 3]]}', 422, "mixed or nested"),
    (b'{"observations": [[NaN, 1, 2, 3]]}', 422, "must be finite"),
    (b'{"observations": [[Infinity, 1, 2, 3]]}', 422, "must be finite"),
    (b'{"observations": [[1e39, 1, 2, 3]]}', 422, "must be finite"),
    (b'{"observations": [[1e400, 1, 2, 3]]}', 422, "must be finite"),
    (b'{"observations": [[100000000000000000000000, 1, 2, 3]]}', 422, "mixed or nested"),
])
def test_bad_bodies_get_a_4xx_with_a_one_line_message(server, body, status, message):
    response = httpx.post(server.url + "/v1/act", content=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert message in error and "\n" not in error


def test_oversized_wrong_method_and_unknown_path(server):
    huge = b'{"observations": [' + b"[1.0, 2.0, 3.0, 4.0], " * 60_000 + b"[1, 2, 3, 4]]}"
    response = httpx.post(server.url + "/v1/act", content=huge)
    assert response.status_code == 413 and "larger than 1048576 bytes" in response.json()["error"]

    def chunks():  # no Content-Length: the limit holds while the body is read
        yield b'{"observations": ['
        for _ in range(100):
            yield b"[1.0, 2.0, 3.0, 4.0], " * 1000

    response = httpx.post(server.url + "/v1/act", content=chunks())
    assert response.status_code == 413
    response = httpx.get(server.url + "/v1/act")
    assert response.status_code == 405 and response.json() == {
        "error": "GET is not allowed on /v1/act"}
    response = httpx.post(server.url + "/v2/act", json={})
    assert response.status_code == 404 and "no endpoint /v2/act" in response.json()["error"]
    assert httpx.get(server.url + "/healthz").json() == {"status": "ok"}


def test_fuzzed_bodies_get_4xx_and_the_server_lives(server):
    hypothesis = pytest.importorskip("hypothesis")
    strategies = hypothesis.strategies
    junk = strategies.recursive(
        strategies.none() | strategies.booleans() | strategies.integers()
        | strategies.floats() | strategies.text(max_size=8),
        lambda inner: strategies.lists(inner, max_size=6)
        | strategies.dictionaries(strategies.text(max_size=5), inner, max_size=4),
        max_leaves=40)
    import json

    bodies = (strategies.binary(max_size=256)
              | junk.map(lambda value: json.dumps(value).encode())
              | junk.map(lambda value: json.dumps({"observations": value}).encode())
              | strategies.integers(1, 5).flatmap(lambda n: strategies.lists(
                  strategies.lists(strategies.floats(), min_size=n, max_size=n),
                  min_size=1, max_size=4).map(
                      lambda rows: json.dumps({"observations": rows}).encode())))
    with httpx.Client(base_url=server.url, timeout=10.0) as client:

        @hypothesis.settings(max_examples=200, deadline=None, database=None, phases=[
            hypothesis.Phase.explicit, hypothesis.Phase.generate],  # no shrinking: bounded time
                             suppress_health_check=list(hypothesis.HealthCheck))
        @hypothesis.given(bodies)
        def post(body):
            try:
                response = client.post("/v1/act", content=body)
            except httpx.HTTPError as error:
                raise AssertionError(f"no answer to {body!r}: {error!r}") from None
            if response.status_code == 200:  # a body that happens to be valid
                observations = np.asarray(json.loads(body)["observations"], np.float32)
                assert observations.shape[1:] == (4,) and np.isfinite(observations).all()
            else:
                assert 400 <= response.status_code < 500, (body, response.text)
                assert response.json()["error"]

        post()
        assert client.get("/healthz").status_code == 200
    metrics = httpx.get(server.url + "/metrics").text
    assert not re.search(r'code="5\d\d"', metrics), metrics


def test_a_new_version_is_swapped_in_under_load_without_a_failed_request(model_copy, export_v2,
                                                                          export_v1):
    with running(model_copy, "--poll-seconds", "0.1") as server:
        async def publish_v2():
            await asyncio.sleep(0.8)
            _publish(export_v2, model_copy)

        results = asyncio.run(_hammer(server.url, seconds=2.5, connections=32,
                                      during=publish_v2))
        metrics = httpx.get(server.url + "/metrics").text
    by_version = _check_answers(results, {"1": export_v1, "2": export_v2})
    assert set(by_version) == {"1", "2"}, set(by_version)
    assert _metric(metrics, "tfkd_model_reloads_total") == [1.0]
    assert re.search(r'tfkd_model_info\{worker="\d+",version="2"\} 1', metrics)


def test_a_version_that_does_not_load_leaves_the_old_one_serving(model_copy):
    with running(model_copy, "--poll-seconds", "0.1") as server:
        staged = model_copy / ".student.tflite.new"
        staged.write_bytes(b"not a flatbuffer" * 10)
        os.replace(staged, model_copy / "student.tflite")
        deadline = time.monotonic() + 10
        while not _metric(httpx.get(server.url + "/metrics").text,
                          "tfkd_model_reload_failures_total")[0]:
            assert time.monotonic() < deadline, "the broken version was not tried in 10 s"
            time.sleep(0.05)
        time.sleep(0.5)  # five more polls: the same files are not tried again
        answer = httpx.post(server.url + "/v1/act", json={"observations": [[0.0] * 4]})
        metrics = httpx.get(server.url + "/metrics").text
    assert answer.status_code == 200 and answer.json()["model_version"] == "1"
    assert _metric(metrics, "tfkd_model_reload_failures_total") == [1.0]
    assert _metric(metrics, "tfkd_model_reloads_total") == [0.0]


def test_sighup_reloads_a_single_process_server(model_copy, export_v2):
    with running(model_copy, "--poll-seconds", "0") as server:
        _publish(export_v2, model_copy)
        body = {"observations": [[0.1, 0.2, 0.3, 0.4]]}
        assert httpx.post(server.url + "/v1/act", json=body).json()["model_version"] == "1"
        server.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while httpx.get(server.url + "/readyz").json()["model_version"] != "2":
            assert time.monotonic() < deadline, "no reload 10 s after SIGHUP"
            time.sleep(0.05)
        assert httpx.post(server.url + "/v1/act", json=body).json()["model_version"] == "2"


@pytest.mark.slow  # the server loads TensorFlow: ~30 s on 2 shared cores
def test_savedmodel_versions_and_post_reload(model_copy, export_v2):
    with running(model_copy, "--format", "savedmodel", "--poll-seconds", "0") as server:
        body = {"observations": [[0.1, 0.2, 0.3, 0.4]]}
        assert httpx.post(server.url + "/v1/act", json=body).json()["model_version"] == "1"
        # a new version folder appears whole: copied beside, then renamed
        shutil.copytree(export_v2 / "saved_model" / "2", model_copy / "saved_model" / ".2")
        os.replace(model_copy / "saved_model" / ".2", model_copy / "saved_model" / "2")
        assert httpx.post(server.url + "/v1/act", json=body).json()["model_version"] == "1"
        reload = httpx.post(server.url + "/v1/reload", timeout=60.0).json()
        assert reload == {"model_version": "2", "reloaded": True}
        answer = httpx.post(server.url + "/v1/act", json=body).json()
    expected = exported.reference_logits(export_v2, np.asarray(body["observations"], np.float32))
    assert answer["model_version"] == "2"
    np.testing.assert_allclose(answer["logits"], expected, rtol=1e-5, atol=1e-6)


def test_sigterm_answers_every_queued_request_and_exits_0(export_v1):
    server = Server(export_v1, "--max-wait-ms", "1500", "--max-batch", "1000").wait_ready()
    try:
        async def scenario():
            async with httpx.AsyncClient(base_url=server.url, timeout=30.0) as client:
                posts = [asyncio.create_task(client.post(
                    "/v1/act", json={"observations": [[float(i), 0.0, 0.0, 0.0]]}))
                    for i in range(20)]
                deadline = time.monotonic() + 1.0
                while time.monotonic() < deadline:  # all 20 wait in the batcher's queue
                    queued = _metric((await client.get("/metrics")).text, "tfkd_queued_rows")
                    if queued == [20.0]:
                        break
                    await asyncio.sleep(0.02)
                assert queued == [20.0], queued
                server.terminate()
                return await asyncio.gather(*posts)

        start = time.monotonic()
        responses = asyncio.run(scenario())
    finally:
        status, output = server.stop(timeout=20)
    assert [r.status_code for r in responses] == [200] * 20
    observations = np.zeros((20, 4), np.float32)
    observations[:, 0] = np.arange(20)
    expected = exported.reference_logits(export_v1, observations).argmax(-1)
    assert [r.json()["actions"][0] for r in responses] == expected.tolist()
    assert status == 0, output
    assert time.monotonic() - start < 20


def test_two_workers_answer_report_metrics_per_worker_and_both_reload(model_copy, export_v1,
                                                                      export_v2):
    with running(model_copy, "--workers", "2", "--poll-seconds", "0.2") as server:
        results = asyncio.run(_hammer(server.url, seconds=1.0, connections=16))
        time.sleep(1.2)  # each worker publishes its numbers once a second
        metrics = httpx.get(server.url + "/metrics").text
        _publish(export_v2, model_copy)
        time.sleep(2.0)  # a poll, a load and a publication later
        after = httpx.get(server.url + "/metrics").text
        answers = asyncio.run(_hammer(server.url, seconds=0.5, connections=8))
    _check_answers(results, {"1": export_v1})
    workers = set(re.findall(r'tfkd_model_info\{worker="(\d+)",version="1"\} 1', metrics))
    assert len(workers) == 2, metrics
    answered = sum(_metric(metrics, r'tfkd_requests_total\{worker="\d+",endpoint="/v1/act",'
                                    r'code="200"\}'))
    assert answered == len(results)
    reloaded = set(re.findall(r'tfkd_model_info\{worker="(\d+)",version="2"\} 1', after))
    assert reloaded == workers, after
    assert set(_check_answers(answers, {"2": export_v2})) == {"2"}


@pytest.mark.parametrize("flags, message", [
    (["--model", "/nonexistent"], "--model '/nonexistent' is not a folder"),
    (["--model", ".", "--format", "savedmodel"], "no numbered version folder"),
    (["--model", ".", "--max-wait-ms", "-1"], "expected a number >= 0"),
])
def test_serve_refuses_bad_flags_in_one_line(flags, message, tmp_path):
    run = subprocess.run([sys.executable, "-m", "tfkd.cli", "serve", *flags], cwd=tmp_path,
                         env=dict(os.environ, PYTHONPATH=REPO), capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 2 and message in run.stderr, run.stderr
    assert len(run.stderr.strip().splitlines()) == 1, run.stderr


def test_serve_help_documents_every_flag():
    run = subprocess.run([sys.executable, "-m", "tfkd.cli", "serve", "--help"],
                         capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=REPO),
                         timeout=60)
    assert run.returncode == 0, run.stderr
    from tfkd import cli

    parser = cli.build_parser()._subparsers._group_actions[0].choices["serve"]
    for action in parser._actions:
        assert action.help, f"serve: {action.option_strings} has no help"
        assert action.option_strings[0] in run.stdout


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="reads /proc/PID/maps")
def test_a_tflite_server_never_loads_tensorflow(server):
    maps = open(f"/proc/{server.process.pid}/maps").read()
    assert "_pywrap_litert_interpreter_wrapper.so" in maps  # the LiteRT runtime answers
    assert "libtensorflow_framework.so" not in maps
