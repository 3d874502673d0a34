"""The ``tfkd`` command: train a teacher, distil it, evaluate, or run the demo.

    tfkd train-teacher --env CartPole-v1 --out runs/teacher
    tfkd distill --teacher runs/teacher --out runs/student
    tfkd evaluate --teacher runs/teacher --student runs/student/student.keras
    tfkd demo
    tfkd serve --model runs/export --port 8000

Teachers are TF-Agents DQN agents (``tfkd.agents``; the default) or plain
Keras 3 DQNs (``--backend keras``, ``tfkd.rl.train_dqn``). ``--env`` takes any
gymnasium id with a discrete action space and vector observations; ``ALE/...``
ids get the Atari frame preprocessing and the Nature CNN.

A user error is one line on stderr, ``tfkd: <message>``, and exit status 2;
Ctrl-C exits with 130 (``distill`` first saves what it has).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
import os
import sys
import warnings
from typing import Sequence

from tfkd.cli.output import CliError, OutputDir, check_writable_dir
from tfkd.cli.parser import build_parser, parse_args

__all__ = ["CliError", "build_parser", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tfkd`` console script; returns the exit status."""
    args = parse_args(argv)
    try:
        return _run(args)
    except CliError as error:
        print(f"tfkd: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tfkd: interrupted", file=sys.stderr)
        return 130


def _run(args) -> int:
    if args.command == "serve":  # loads TensorFlow only if its --format needs it
        from tfkd.cli.serving import serve

        return serve(args)
    for flag in ("checkpoint_dir", "tensorboard"):
        if getattr(args, flag, None):
            check_writable_dir(getattr(args, flag), "--" + flag.replace("_", "-"))
    if getattr(args, "csv", None):
        if os.path.isdir(args.csv):
            raise CliError(f"--csv {args.csv!r} is a folder, not a file.")
        check_writable_dir(os.path.dirname(os.path.abspath(args.csv)), "--csv")
    out = OutputDir(args.out) if args.out else None
    try:
        _quiet_third_party()
        # Imported here, after _quiet_third_party, because tfkd owns this entry
        # point: TF_USE_LEGACY_KERAS must be set before TensorFlow first loads.
        from tfkd.cli import commands

        return getattr(commands, args.command)(args, out)
    finally:
        if out is not None:
            out.close()


def _quiet_third_party() -> None:
    """Silences the known start-up noise of TensorFlow, absl, gym and autograph.

    Done here, at the entry point, and not in the library: a program that
    imports tfkd keeps its own logging and warnings settings. Also selects
    Keras 2 for ``tf.keras`` (``TF_USE_LEGACY_KERAS=1``, needed by TF-Agents);
    tfkd's own models stay Keras 3.
    """
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    _ignore_known_warnings()
    # TensorFlow's C++ start-up lines (oneDNN, CUDA stubs, cuInit) are written
    # before absl logging is configured, so no setting hides them: stderr is
    # pointed at /dev/null while TensorFlow loads and finds its devices.
    with _stderr_silenced():
        tensorflow = importlib.import_module("tensorflow")
        tensorflow.config.list_physical_devices()
        if importlib.util.find_spec("gym") is not None:  # TF-Agents' gym prints a banner
            importlib.import_module("gym")
    _ignore_known_warnings()  # again: gym's import puts a "once" filter in front
    tensorflow.get_logger().setLevel(logging.ERROR)
    tensorflow.autograph.set_verbosity(0)
    import absl.logging  # TensorFlow's dependency: there for certain once TensorFlow loaded

    absl.logging.set_verbosity(absl.logging.ERROR)


def _ignore_known_warnings() -> None:
    for category, module in ((DeprecationWarning, ""), (PendingDeprecationWarning, ""),
                             (UserWarning, "tensorflow"), (UserWarning, "tf_agents"),
                             (UserWarning, "gym"), (UserWarning, "keras")):
        warnings.filterwarnings("ignore", category=category, module=module)
    # autograph compiles generated code that compares with literals ("is ()").
    warnings.filterwarnings("ignore", category=SyntaxWarning)


@contextlib.contextmanager
def _stderr_silenced():
    """Standard error goes to /dev/null inside the block: file descriptor 2 (C++
    output included) and ``sys.stderr`` (which may not be descriptor 2)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w", encoding="utf-8") as devnull:
            os.dup2(devnull.fileno(), 2)
            with contextlib.redirect_stderr(devnull):
                yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
