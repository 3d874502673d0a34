"""The HTTP policy service: an exported student behind ``POST /v1/act``.

Starlette on uvicorn; concurrent requests are micro-batched
(:mod:`~tfkd.deploy.serving.batcher`), new model versions are swapped in
while serving (:mod:`~tfkd.deploy.serving.models`), Prometheus metrics at
``/metrics`` (:mod:`~tfkd.deploy.serving.metrics`), one or several worker
processes (:mod:`~tfkd.deploy.serving.server`). ``tfkd serve`` runs it;
docs/serving.md describes the API.
"""

from tfkd.deploy.serving.app import ServeConfig, create_app, parse_observations
from tfkd.deploy.serving.batcher import MicroBatcher
from tfkd.deploy.serving.server import check, serve

__all__ = ["MicroBatcher", "ServeConfig", "check", "create_app", "parse_observations", "serve"]
