"""Output folders of the ``tfkd`` command: checks, a lock, atomic commits.

A run owns its ``--out`` folder through an exclusive ``fcntl.flock`` on
``--out/.tfkd.lock``, taken before any training, so a second run into the same
folder stops at once. Everything a run writes goes first into a staging folder
inside ``--out`` (same file system) and is then renamed into place, entry by
entry, with ``results.json`` (``report.json`` for an export) last and the
previous one removed first: at any moment ``--out`` holds either a complete
set of one run's files or no ``results.json`` at all, never a 0-byte or half-written file.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
from typing import Iterator

from tfkd import files

LOCK_FILE = ".tfkd.lock"
STAGING_PREFIX = ".staging-"
RESULTS_FILE = "results.json"


class CliError(Exception):
    """A user error: printed as one line ``tfkd: <message>``, exit status 2."""


def check_writable_dir(path: str, flag: str) -> None:
    """Raises :class:`CliError` unless ``path`` is, or can become, a writable folder."""
    try:
        files.check_directory(path, flag)
    except ValueError as error:
        raise CliError(str(error)) from None


class OutputDir:
    """An ``--out`` folder held by this process for the length of a run.

    Args:
        path: the folder; created if missing.
        flag: the option that named it, for error messages.
    """

    def __init__(self, path: str, flag: str = "--out"):
        check_writable_dir(path, flag)
        self.path, self.flag = path, flag
        os.makedirs(path, exist_ok=True)
        self._lock = files.try_lock(os.path.join(path, LOCK_FILE))
        if self._lock is None:
            raise CliError(f"{flag} {path!r} is in use by another tfkd run; wait for it "
                           "to finish or choose another folder.")
        for name in os.listdir(path):  # left by a run that was killed while writing
            if name.startswith(STAGING_PREFIX):
                shutil.rmtree(os.path.join(path, name), ignore_errors=True)

    def close(self) -> None:
        """Releases the lock (the lock file stays; it is empty of meaning without a holder)."""
        self._lock.close()

    def __enter__(self) -> "OutputDir":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextlib.contextmanager
    def staging(self, last: str = RESULTS_FILE) -> Iterator[str]:
        """A fresh staging folder; on a clean exit its entries are renamed into ``--out``.

        ``last`` is the file that marks a complete run (``results.json``, an
        export's ``report.json``): removed from ``--out`` first, renamed in last.
        """
        staging = tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=self.path)
        try:
            yield staging
            self._commit(staging, last)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _commit(self, staging: str, last: str = RESULTS_FILE) -> None:
        names = sorted(os.listdir(staging), key=lambda name: name == last)
        with _sigint_deferred():
            for name in names:
                _fsync_tree(os.path.join(staging, name))
            if last in names:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(self.path, last))
            for name in names:
                _replace(os.path.join(staging, name), os.path.join(self.path, name))
            _fsync(self.path)


def _replace(source: str, target: str) -> None:
    """``os.replace`` that also replaces a non-empty folder (moved aside, then deleted)."""
    if os.path.isdir(target) and not os.path.islink(target):
        aside = tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=os.path.dirname(target))
        os.replace(target, os.path.join(aside, "old"))
        os.replace(source, target)
        shutil.rmtree(aside, ignore_errors=True)
    else:
        os.replace(source, target)


def _fsync_tree(path: str) -> None:
    if os.path.isdir(path):
        for root, _, names in os.walk(path):
            for name in names:
                _fsync(os.path.join(root, name))
            _fsync(root)
    else:
        _fsync(path)


def _fsync(path: str) -> None:
    """Flushes a file's or a folder's entries to disk (a rename is durable only then)."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


@contextlib.contextmanager
def _sigint_deferred() -> Iterator[None]:
    """Holds back Ctrl-C while files are renamed, then delivers it."""
    received = []
    try:
        previous = signal.signal(signal.SIGINT, lambda *args: received.append(args))
    except ValueError:  # not the main thread: signals cannot be handled here anyway
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received:
            raise KeyboardInterrupt
