"""Keras callbacks that watch a distillation run round by round.

The loops call ``on_train_begin``, ``on_epoch_end(round_index, logs)`` after
every round and ``on_train_end``, with the model set to the student. The
logs of a round are::

    return            mean return of the greedy student on the selection
                      episodes (None in a round that is not evaluated)
    normalized_score  (return - R_random) / (R_teacher - R_random) on the same
                      episodes (None where undefined or not evaluated)
    agreement         fraction of the round's visited states where student
                      and teacher choose the same action
    loss              the student's last training loss of the round
    beta              probability that the teacher acted
    buffer_size       labelled states held
    env_steps         env steps collected so far

Any ``keras.callbacks.Callback`` works; setting ``model.stop_training = True``
(as ``keras.callbacks.EarlyStopping(monitor="return", mode="max")`` does) ends
the run after the round.
"""

from __future__ import annotations

import csv
import os

import keras
import tensorflow as tf

from tfkd import files

LOG_KEYS = ("return", "normalized_score", "agreement", "loss", "beta", "buffer_size", "env_steps")


class RoundCSVLogger(keras.callbacks.Callback):
    """One CSV row per round, flushed as it is written (like ``keras.callbacks.CSVLogger``).

    Columns: ``index_name`` then ``keys``; an empty cell is a None. A run that
    resumes at round ``k`` keeps the rows before ``k`` of a file with the same
    columns and replaces the rest; a run from round 0 starts the file anew.

    Args:
        path: the CSV file; created with its parent folders.
        keys: the logs written, in column order (default: a distillation
            round's, :data:`LOG_KEYS`).
        index_name: the first column's name (the ``epoch`` argument).
    """

    def __init__(self, path: str | os.PathLike, keys=LOG_KEYS, index_name: str = "round"):
        super().__init__()
        self.path = os.fspath(path)
        self.keys = tuple(keys)
        self.index_name = index_name
        self._file = None
        self._writer = None
        self._earlier_rows: list[list[str]] = []

    def on_train_begin(self, logs=None):
        self._earlier_rows = self._read_rows()

    def on_epoch_end(self, epoch, logs=None):
        if self._file is None:
            self._start_file(first_index=epoch)
        logs = logs or {}
        row = [epoch] + ["" if logs.get(key) is None else logs[key] for key in self.keys]
        self._writer.writerow(row)
        self._file.flush()

    def on_train_end(self, logs=None):
        if self._file is not None:
            self._file.close()
            self._file = self._writer = None

    def _header(self) -> list[str]:
        return [self.index_name, *self.keys]

    def _read_rows(self) -> list[list[str]]:
        """The file's rows if it has this logger's columns, else none."""
        try:
            with open(self.path, newline="") as file:
                rows = list(csv.reader(file))
        except (FileNotFoundError, UnicodeDecodeError):
            return []
        if not rows or rows[0] != self._header():
            return []
        return [row for row in rows[1:] if row and row[0].isdigit()]

    def _start_file(self, first_index: int) -> None:
        """Writes the header and the earlier rounds' rows atomically, then appends."""
        kept = [row for row in self._earlier_rows if int(row[0]) < first_index]
        with files.atomic_path(self.path) as temporary:
            with open(temporary, "w", newline="") as file:
                csv.writer(file).writerows([self._header(), *kept])
        self._file = open(self.path, "a", newline="")
        self._writer = csv.writer(self._file)


class RoundTensorBoard(keras.callbacks.Callback):
    """Writes each round's logs as ``tf.summary`` scalars (step = round index).

    Args:
        log_dir: the TensorBoard log folder.
    """

    def __init__(self, log_dir: str | os.PathLike):
        super().__init__()
        self.log_dir = os.fspath(log_dir)
        self._writer = None

    def on_train_begin(self, logs=None):
        self._writer = tf.summary.create_file_writer(self.log_dir)

    def on_epoch_end(self, epoch, logs=None):
        with self._writer.as_default():
            for key, value in (logs or {}).items():
                if value is not None:
                    tf.summary.scalar(key, float(value), step=epoch)
        self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None
