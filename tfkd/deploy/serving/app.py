"""The ASGI application of the policy service (Starlette).

    POST /v1/act      {"observations": [[...], ...]}
                      -> {"actions": [...], "logits": [[...], ...], "model_version": "..."}
    POST /v1/reload   load the folder's newest version now (loopback clients only)
    GET  /healthz     the process answers
    GET  /readyz      a model is loaded and the service is not shutting down
    GET  /metrics     Prometheus text (:mod:`tfkd.deploy.serving.metrics`)

Every error is JSON ``{"error": "<one line>"}``: malformed JSON 400, a body
over the limit 413 (counted while it is read, before any parsing), a wrong
shape, dtype or a non-finite number 422, wrong method 405, unknown path 404,
503 while shutting down. Only a model that fails answers 500.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import signal
import time

import numpy as np
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from tfkd.deploy.serving import metrics as metrics_lib
from tfkd.deploy.serving.batcher import MicroBatcher
from tfkd.deploy.serving.models import ModelStore

CONFIG_ENV = "TFKD_SERVE_CONFIG"  # how uvicorn's worker processes get the configuration
LOOPBACK = {"127.0.0.1", "::1", "localhost"}
log = logging.getLogger("tfkd.serve")


@dataclasses.dataclass(frozen=True)
class ServeConfig:
    """What ``tfkd serve`` serves and how.

    Attributes:
        model_dir: the export folder.
        format: the artefact to serve (:data:`tfkd.deploy.runtime.FORMATS`).
        max_batch: most observations per model run.
        max_wait_ms: the longest a request waits for others to share its run.
        max_body_bytes: larger request bodies are refused with 413.
        poll_seconds: how often the folder is checked for a new version (0: never).
        metrics_dir: folder where workers share their metrics (None: one process).
    """

    model_dir: str
    format: str = "tflite"
    max_batch: int = 64
    max_wait_ms: float = 2.0
    max_body_bytes: int = 1 << 20
    poll_seconds: float = 1.0
    metrics_dir: str | None = None

    def to_env(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_env(cls) -> "ServeConfig":
        text = os.environ.get(CONFIG_ENV)
        if not text:
            raise RuntimeError(f"{CONFIG_ENV} is not set: start the service with `tfkd serve`")
        return cls(**json.loads(text))


class BadRequest(Exception):
    """A client error: status and one-line message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def _json(body: dict, status: int = 200) -> Response:
    return Response(json.dumps(body, allow_nan=False, separators=(",", ":")), status,
                    media_type="application/json")


def _error(status: int, message: str) -> Response:
    return _json({"error": message}, status)


def parse_observations(body: bytes, observation_shape: tuple[int, ...]) -> np.ndarray:
    """float32 observations [rows, *observation_shape] of a /v1/act body.

    Raises:
        BadRequest: 400 for a body that is not a JSON object with
            ``observations``; 422 for a wrong shape, dtype or a non-finite value.
    """
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError) as error:  # UnicodeDecodeError is a ValueError
        raise BadRequest(400, f"the body is not valid JSON ({type(error).__name__})") from None
    if not isinstance(payload, dict) or "observations" not in payload:
        raise BadRequest(400, 'expected a JSON object {"observations": [[...], ...]}')
    expected = f"[rows, {', '.join(map(str, observation_shape))}]"
    try:
        array = np.asarray(payload["observations"])
    except (ValueError, TypeError, OverflowError, RecursionError):  # ragged or unconvertible
        raise BadRequest(422, f"observations must be a numeric array of shape {expected}") from None
    if array.dtype.kind not in "iuf":
        raise BadRequest(422, f"observations must be numbers, got {_kind(array)}")
    if array.ndim != 1 + len(observation_shape) or array.shape[1:] != observation_shape \
            or array.shape[0] == 0:
        raise BadRequest(422, f"observations must have shape {expected}, got {list(array.shape)}")
    with np.errstate(over="ignore"):  # beyond float32 becomes inf, refused just below
        observations = array.astype(np.float32)
    if not np.isfinite(observations).all():
        raise BadRequest(422, "observations must be finite (NaN or infinity in the input, or a "
                              "number beyond float32)")
    return observations


def _kind(array: np.ndarray) -> str:
    return {"b": "booleans", "U": "strings", "O": "mixed or nested values"}.get(
        array.dtype.kind, str(array.dtype))


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BadRequest(413, f"the body is larger than {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BadRequest(413, f"the body is larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(config: ServeConfig) -> Starlette:
    """The service of ``config``; the model is loaded here, before it accepts a request."""
    store = ModelStore(config.model_dir, config.format)
    stats = metrics_lib.Metrics(worker=os.getpid())
    stats.version = store.current.version
    # A LiteRT run of a small student takes tens of microseconds: it runs on
    # the event loop. SavedModel and Keras calls take up to a millisecond
    # through TensorFlow: a thread, so the loop keeps reading requests.
    threaded = config.format in ("savedmodel", "keras")

    async def run(observations):
        served = store.current  # this batch finishes on this model, whatever is swapped in
        if threaded:
            actions, logits = await asyncio.to_thread(served.artefact, observations)
        else:
            actions, logits = served.artefact(observations)
        return actions, logits, served.version

    batcher = MicroBatcher(run, config.max_batch, config.max_wait_ms / 1000.0,
                           on_batch=stats.batch_rows.observe)
    state = {"ready": False}

    async def act(request: Request) -> Response:
        start = time.perf_counter()
        try:
            body = await _read_body(request, config.max_body_bytes)
            observations = parse_observations(body, store.current.artefact.observation_shape)
            if not state["ready"]:
                raise BadRequest(503, "the service is shutting down")
            actions, logits, version = await batcher.submit(observations)
            response = _json({"actions": actions.tolist(), "logits": logits.tolist(),
                              "model_version": version})
        except BadRequest as error:
            response = _error(error.status, str(error))
            if error.status == 413:  # the rest of the body is not read: no reuse
                response.headers["connection"] = "close"
        except ClientDisconnect:  # nobody to answer; counted as nginx does
            response = _error(499, "the client closed the connection")
        except Exception as error:  # the model failed: the one 500
            log.exception("tfkd serve: /v1/act failed")
            response = _error(500, f"the model failed: {type(error).__name__}: {error}")
        stats.count("/v1/act", response.status_code)
        stats.latency.observe(time.perf_counter() - start)
        return response

    async def reload(request: Request) -> Response:
        if request.client is None or request.client.host not in LOOPBACK:
            response = _error(403, "/v1/reload answers loopback clients only")
        else:
            swapped = await store.refresh(force=True)
            _sync_model_stats()
            response = _json({"model_version": store.current.version, "reloaded": swapped})
        stats.count("/v1/reload", response.status_code)
        return response

    async def healthz(request: Request) -> Response:
        return _json({"status": "ok"})

    async def readyz(request: Request) -> Response:
        if not state["ready"]:
            return _error(503, "not ready")
        return _json({"status": "ready", "model_version": store.current.version})

    async def metrics(request: Request) -> Response:
        stats.queued_rows = batcher.queued_rows
        text = metrics_lib.exposition(metrics_lib.gather(stats, config.metrics_dir))
        return Response(text, media_type="text/plain; version=0.0.4; charset=utf-8")

    def _sync_model_stats():
        stats.version = store.current.version
        stats.reloads, stats.reload_failures = store.reloads, store.failed_reloads

    async def poll():
        while True:
            await asyncio.sleep(config.poll_seconds)
            try:
                await store.refresh()
            except Exception:  # e.g. DIR removed: say so, keep serving, look again
                log.exception("tfkd serve: checking %s for a new version failed",
                              config.model_dir)
            _sync_model_stats()

    async def publish():
        while True:
            stats.queued_rows = batcher.queued_rows
            await asyncio.to_thread(stats.publish, config.metrics_dir)
            await asyncio.sleep(1.0)

    async def sighup():
        await store.refresh(force=True)
        _sync_model_stats()

    @contextlib.asynccontextmanager
    async def lifespan(app):
        batcher.start()
        tasks = []
        if config.poll_seconds > 0:
            tasks.append(asyncio.create_task(poll()))
        if config.metrics_dir:
            tasks.append(asyncio.create_task(publish()))
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            # SIGHUP reloads, as daemons do (a process that is not uvicorn's
            # supervisor; the supervisor answers SIGHUP by replacing its workers).
            asyncio.get_running_loop().add_signal_handler(
                signal.SIGHUP, lambda: tasks.append(asyncio.create_task(sighup())))
        state["ready"] = True
        try:
            yield
        finally:
            # uvicorn gets here after the open requests are answered; anything
            # still queued is answered before the batcher stops.
            state["ready"] = False
            for task in tasks:
                task.cancel()
            await batcher.close()
            if config.metrics_dir:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(config.metrics_dir, f"worker-{stats.worker}.json"))

    async def http_error(request: Request, error: HTTPException) -> Response:
        message = {404: f"no endpoint {request.url.path}",
                   405: f"{request.method} is not allowed on {request.url.path}"}.get(
                       error.status_code, str(error.detail))
        stats.count("other", error.status_code)
        return _error(error.status_code, message)

    routes = [Route("/v1/act", act, methods=["POST"]),
              Route("/v1/reload", reload, methods=["POST"]),
              Route("/healthz", healthz, methods=["GET"]),
              Route("/readyz", readyz, methods=["GET"]),
              Route("/metrics", metrics, methods=["GET"])]
    return Starlette(routes=routes, lifespan=lifespan,
                     exception_handlers={HTTPException: http_error})


def create_app_from_env() -> Starlette:
    """uvicorn's app factory (``--workers``): the configuration is in ``TFKD_SERVE_CONFIG``."""
    return create_app(ServeConfig.from_env())


__all__ = ["ServeConfig", "create_app", "create_app_from_env", "parse_observations"]
