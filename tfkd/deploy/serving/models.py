"""The served model and its versions: find, load, and swap without dropping a request.

Versions of an export folder ``DIR`` (the layout in :mod:`tfkd.deploy`):

- ``--format savedmodel``: TensorFlow Serving's rule. Each numbered folder
  ``DIR/saved_model/<version>/`` is a version; the highest number is served.
- ``--format tflite | tflite-int8 | keras``: one file per format
  (``student.tflite``, ``student-int8.tflite``, ``student.keras``). Its
  version is ``export.json``'s ``"version"`` when that is present, else
  ``sha256:`` and the first 12 hex digits of the file's content, so a
  version always names the bytes that answer.

A new version is loaded completely first (in a thread: a SavedModel takes a
second) and then swapped in with one assignment; a batch already running
finishes on the model it started with. A version that fails to load is
reported and the old one keeps serving. Writers should put the file in place
with an atomic rename (``os.replace``), the artefact before ``export.json``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import os

import numpy as np

from tfkd.deploy import runtime

EXPORT_FILE = "export.json"
FILES = {"tflite": "student.tflite", "tflite-int8": "student-int8.tflite",
         "keras": "student.keras"}
SAVED_MODEL = "saved_model"

log = logging.getLogger("tfkd.serve")


@dataclasses.dataclass(frozen=True)
class Served:
    """A loaded model and its version."""

    artefact: runtime.Artefact
    version: str


def artefact_path(directory: str, format: str) -> tuple[str, str]:
    """(path of the artefact to serve, its version) in the export folder ``directory``.

    Raises:
        FileNotFoundError: the folder holds no artefact of ``format``.
    """
    if format == "savedmodel":
        root = os.path.join(directory, SAVED_MODEL)
        versions = sorted(int(name) for name in _listdir(root) if name.isdigit()
                          and os.path.isdir(os.path.join(root, name)))
        if not versions:
            raise FileNotFoundError(f"no numbered version folder in {root}")
        return os.path.join(root, str(versions[-1])), str(versions[-1])
    if format not in FILES:
        raise ValueError(f"unknown format {format!r}; expected one of {', '.join(runtime.FORMATS)}")
    path = os.path.join(directory, FILES[format])
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no {FILES[format]} in {directory}")
    version = read_export_info(directory).get("version")
    if version is None:
        with open(path, "rb") as file:
            version = "sha256:" + hashlib.sha256(file.read()).hexdigest()[:12]
    return path, str(version)


def read_export_info(directory: str) -> dict:
    """``export.json`` of ``directory`` ({} when there is none)."""
    try:
        with open(os.path.join(directory, EXPORT_FILE), encoding="utf-8") as file:
            info = json.load(file)
    except FileNotFoundError:
        return {}
    except ValueError as error:
        raise ValueError(f"{directory}/{EXPORT_FILE} is not valid JSON ({error})") from None
    if not isinstance(info, dict):
        raise ValueError(f"{directory}/{EXPORT_FILE} is not a JSON object")
    return info


def load(directory: str, format: str) -> Served:
    """The artefact of ``format`` in ``directory``, checked on a zero observation."""
    path, version = artefact_path(directory, format)
    artefact = runtime.load(path, format)
    expected = read_export_info(directory).get("observation_shape")
    if expected is not None and tuple(expected) != artefact.observation_shape:
        raise ValueError(f"{path} takes observations of shape {list(artefact.observation_shape)} "
                         f"but {EXPORT_FILE} says {list(expected)}")
    artefact(np.zeros((1, *artefact.observation_shape), np.float32))  # fails now, not on a request
    return Served(artefact, version)


class ModelStore:
    """Holds the served model of an export folder and swaps in new versions.

    Args:
        directory: the export folder.
        format: the artefact to serve (one of :data:`tfkd.deploy.runtime.FORMATS`).
    """

    def __init__(self, directory: str, format: str):
        self.directory, self.format = directory, format
        self._fingerprint = self._stat()
        self.current = load(directory, format)
        self.reloads = 0
        self.failed_reloads = 0
        self._lock = asyncio.Lock()

    async def refresh(self, force: bool = False) -> bool:
        """Loads the folder's newest version if it changed (or ``force``); True if swapped.

        Never raises for a bad new version: it is logged, counted in
        ``failed_reloads`` and the current model keeps serving; the next try
        comes when the folder changes again.
        """
        async with self._lock:  # one load at a time (a poll and POST /v1/reload may meet)
            fingerprint = self._stat()
            if fingerprint == self._fingerprint and not force:
                return False
            self._fingerprint = fingerprint  # a failed load is retried once the files change
            try:
                served = await asyncio.to_thread(load, self.directory, self.format)
            except Exception as error:
                self.failed_reloads += 1
                log.error("tfkd serve: kept version %s; the new one did not load: %s",
                          self.current.version, error)
                return False
            if served.version == self.current.version and not force:
                return False
            self.current = served  # one assignment: the next batch runs the new version
            self.reloads += 1
            log.info("tfkd serve: serving version %s", served.version)
            return True

    def _stat(self):
        """What changes when a new version is written: names, sizes, inodes and times."""
        if self.format == "savedmodel":
            return tuple(sorted(_listdir(os.path.join(self.directory, SAVED_MODEL))))
        return tuple(_file_stamp(os.path.join(self.directory, name))
                     for name in (FILES[self.format], EXPORT_FILE))


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except FileNotFoundError:
        return []


def _file_stamp(path: str):
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    return stat.st_ino, stat.st_size, stat.st_mtime_ns
