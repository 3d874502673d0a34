"""``tfkd serve``: the HTTP policy service of :mod:`tfkd.deploy.serving`.

Kept apart from :mod:`tfkd.cli.commands`, which imports Keras: a service of a
TFLite artefact runs on LiteRT and starts without loading TensorFlow.
"""

from __future__ import annotations

import argparse
import os

from tfkd.cli.output import CliError


def serve(args: argparse.Namespace) -> int:
    """Serves ``--model`` until SIGTERM or Ctrl-C; 0 after a graceful shutdown."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # for the formats that load TensorFlow
    from tfkd.deploy.serving import ServeConfig, check, serve as run_service

    config = ServeConfig(model_dir=os.path.abspath(args.model), format=args.format,
                         max_batch=args.max_batch, max_wait_ms=args.max_wait_ms,
                         max_body_bytes=args.max_body_bytes, poll_seconds=args.poll_seconds)
    try:
        check(config)
    except ValueError as error:
        raise CliError(str(error)) from None
    run_service(config, host=args.host, port=args.port, workers=args.workers,
                log_level=args.log_level, loop=args.loop, http=args.http)
    return 0
