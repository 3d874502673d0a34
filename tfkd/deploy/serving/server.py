"""Runs the policy service on uvicorn: one process, or ``workers`` processes on one port.

With ``workers > 1`` uvicorn's supervisor starts that many processes, each of
which builds the app from :data:`~tfkd.deploy.serving.app.CONFIG_ENV` (an
import-string factory, as uvicorn's multi-process mode needs) and accepts
on the shared socket. Each worker loads the model, polls the folder for new
versions and batches its own requests.

SIGTERM or Ctrl-C: the socket stops accepting, every request already
received is answered (uvicorn's graceful shutdown, then the batcher's
drain), and the process exits with status 0.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import signal
import tempfile
import threading

from tfkd.deploy.serving.app import CONFIG_ENV, ServeConfig
from tfkd.deploy.serving.models import artefact_path

FACTORY = "tfkd.deploy.serving.app:create_app_from_env"


def check(config: ServeConfig) -> str:
    """The artefact that will be served; raises ValueError with a one-line reason if none."""
    if not os.path.isdir(config.model_dir):
        raise ValueError(f"--model {config.model_dir!r} is not a folder (an export folder "
                         "from `tfkd export`)")
    try:
        path, _ = artefact_path(config.model_dir, config.format)
    except FileNotFoundError as error:
        raise ValueError(f"{error}; export it first or pick another --format") from None
    return path


def serve(config: ServeConfig, host: str = "127.0.0.1", port: int = 8000, workers: int = 1,
          log_level: str = "info", loop: str = "auto", http: str = "auto") -> None:
    """Serves ``config`` until SIGTERM / SIGINT; returns after a graceful shutdown.

    ``loop`` and ``http`` are uvicorn's: "auto" takes uvloop and httptools
    when they are installed (the ``deploy`` extra), asyncio and h11 if not.
    """
    import uvicorn

    with contextlib.ExitStack() as stack:
        if workers > 1 and config.metrics_dir is None:
            folder = tempfile.mkdtemp(prefix="tfkd-serve-metrics-")
            stack.callback(shutil.rmtree, folder, True)
            config = dataclasses.replace(config, metrics_dir=folder)
        os.environ[CONFIG_ENV] = config.to_env()  # read by each worker's factory
        if workers == 1 and threading.current_thread() is threading.main_thread():
            # uvicorn re-raises SIGTERM once its graceful shutdown is done; with
            # this handler in place that ends in a return and exit status 0. It
            # stays: a second SIGTERM while the process exits asks for what is
            # already happening.
            signal.signal(signal.SIGTERM, lambda *_: None)
        # Idle connections are kept 75 s (uvicorn's default is 5 s): longer than
        # client pools keep theirs (httpx 5 s, aiohttp 15 s), so
        # the client closes first and never sends on a connection the server
        # is closing at that instant (a failed request, not retried).
        uvicorn.run(FACTORY, factory=True, host=host, port=port, workers=workers,
                    log_level=log_level, loop=loop, http=http, access_log=False, backlog=2048,
                    timeout_keep_alive=75, timeout_graceful_shutdown=30)
