"""The argument parser of the ``tfkd`` command (imports no TensorFlow, so ``--help`` is fast).

Two episode counts, never confused: ``--select-episodes`` are the episodes
that choose the student during distillation (keep-best, target return), on
``selection_seeds(seed, n)``; ``--eval-episodes`` are the held-out episodes of
the final report, on ``held_out_seeds(seed, n)``, disjoint from every
selection range.
"""

from __future__ import annotations

import argparse
import math
import sys
from importlib.metadata import PackageNotFoundError, version

DEMO_ENV = "CartPole-v1"
DISTILLATION_LOSSES = ("soft_target_kl", "q_value_kl", "greedy_action_nll", "mse")
KICKSTART_SCHEDULES = ("constant", "linear", "exponential", "gated")  # tfkd.rl.kickstart


class _Parser(argparse.ArgumentParser):
    """Reports a bad argument as one line (exit status 2), not usage plus message."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def installed_version(name: str) -> str | None:
    """The installed version of the distribution ``name``, None when it is not installed."""
    try:
        return version(name)
    except PackageNotFoundError:
        return None


class _VersionAction(argparse.Action):
    """``--version``: read from the installed metadata when asked, not at start-up."""

    def __init__(self, option_strings, dest, help=None):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        found = installed_version("tfkd")
        print(f"tfkd {found}" if found else "tfkd (version unknown: imported from source, "
              "not installed)")
        parser.exit(0)


def _int_at_least(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


positive_int = _int_at_least(1)
seed_int = _int_at_least(0)


def finite_float(text: str) -> float:
    """A finite number (rejects nan and inf)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0."""
    value = finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def hidden_units(text: str) -> tuple[int, ...]:
    """Comma-separated positive layer sizes, e.g. ``64,64``."""
    try:
        units = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated layer sizes, got {text!r}") from None
    if not units or any(unit < 1 for unit in units):
        raise argparse.ArgumentTypeError(f"layer sizes must be positive, got {text!r}")
    return units


def build_parser() -> argparse.ArgumentParser:
    """The parser; each subcommand sets ``command`` to its name in :mod:`tfkd.cli.commands`."""
    parser = _Parser(prog="tfkd", description="Knowledge distillation for reinforcement "
                     "learning: train a DQN teacher, distil it into a small student, evaluate.")
    parser.add_argument("--version", action=_VersionAction,
                        help="print tfkd's version and exit")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                     help="what to do (COMMAND --help for its flags)",
                                     parser_class=_Parser)

    sub = commands.add_parser("train-teacher", help="train a DQN teacher and save it",
                              description="Train a DQN teacher (TF-Agents or Keras 3) and "
                              "save its best evaluated weights to --out.")
    _add_common(sub, env_default=DEMO_ENV, out_help="folder to save the teacher in")
    sub.add_argument("--backend", choices=("tf-agents", "keras"), default="tf-agents",
                     help="TF-Agents DqnAgent or tfkd's Keras 3 DQN (default: %(default)s)")
    sub.add_argument("--steps", type=positive_int, default=50_000,
                     help="env steps of DQN training, the random warm-up included "
                          "(default: %(default)s)")
    sub.add_argument("--hidden", type=hidden_units, default=None,
                     help="hidden layer sizes of the Q-network, e.g. 256,256 (default: "
                          "tfkd.models' teacher default; Atari: the Nature CNN)")
    sub.add_argument("--target-return", type=finite_float, default=None,
                     help="stop once a greedy evaluation reaches this mean return")
    sub.add_argument("--select-episodes", type=positive_int, default=5,
                     help="episodes of each evaluation during training, on selection seeds "
                          "apart from the reported ones; the best evaluation is kept "
                          "(default: %(default)s)")
    _add_checkpoint_and_tensorboard(sub, "training")
    sub.set_defaults(command="train_teacher")

    sub = commands.add_parser("distill", help="distil a saved teacher into a small student",
                              description="Distil a saved teacher into a small student; the "
                              "student of the best round on the selection episodes is kept.")
    _add_common(sub, env_default=None, out_help="folder for results.json, the plot and "
                "student.keras")
    _add_teacher(sub)
    _add_distillation(sub)
    _add_checkpoint_and_tensorboard(sub, "distillation")
    sub.set_defaults(command="distill")

    sub = commands.add_parser("evaluate", help="evaluate a teacher and a student",
                              description="Evaluate a teacher, a student and the uniform-random "
                              "policy on the held-out episodes.")
    _add_common(sub, env_default=None, out_help="folder for results.json")
    _add_teacher(sub)
    sub.add_argument("--student", help="a student .keras file (default: the teacher alone)")
    sub.set_defaults(command="evaluate")

    sub = commands.add_parser("demo", help="CartPole: TF-Agents teacher -> small student",
                              description="Train a TF-Agents DQN teacher, then distil it "
                              "student-driven (DAgger) into a student 1/10 its size.")
    _add_common(sub, env_default=DEMO_ENV,
                out_help="folder for the teacher, student.keras, results.json and the plot")
    sub.add_argument("--teacher-steps", type=positive_int, default=60_000,
                     help="most env steps of teacher training (default: %(default)s)")
    sub.add_argument("--teacher-target-return", type=finite_float, default=490.0,
                     help="teacher training stops at this greedy return (default: %(default)s)")
    sub.add_argument("--student-target-return", type=finite_float, default=None,
                     help="stop distilling once the student's return on the selection "
                          "episodes reaches this")
    _add_budget(sub)
    sub.add_argument("--tensorboard", metavar="DIR",
                     help="log each distillation round to TensorBoard in DIR")
    sub.set_defaults(command="demo")

    # kickstart: one block (subcommands added beside it stay separate for merges)
    sub = commands.add_parser("kickstart", help="DQN student + scheduled distillation to a "
                              "teacher (can pass it)",
                              description="Train a small DQN student on its own TD loss plus "
                              "λ_t times a distillation loss to a saved teacher (kickstarting, "
                              "QDagger), so it can pass an imperfect teacher; the best "
                              "evaluation on the selection episodes is kept.")
    _add_common(sub, env_default=None, out_help="folder for results.json, the learning curve "
                "and student.keras")
    _add_teacher(sub)
    sub.add_argument("--steps", type=positive_int, default=50_000,
                     help="env steps of the student's training, the offline phase included "
                          "(default: %(default)s)")
    sub.add_argument("--schedule", choices=KICKSTART_SCHEDULES, default="linear",
                     help="λ_t: constant, linear or exponential decay, or gated by the "
                          "student's normalised score on the selection episodes "
                          "(default: %(default)s)")
    sub.add_argument("--coefficient", type=positive_float, default=3.0,
                     help="λ's scale (QDagger: %(default)s)")
    sub.add_argument("--temperature", type=positive_float, default=0.1,
                     help="temperature of the teacher's and student's softmax (QDagger: "
                          "%(default)s)")
    sub.add_argument("--offline-steps", type=_int_at_least(0), default=0,
                     help="env steps of teacher-collected data before the online phase "
                          "(default: %(default)s, no offline phase)")
    sub.add_argument("--offline-updates", type=_int_at_least(0), default=0,
                     help="gradient steps on the offline data (default: %(default)s)")
    sub.add_argument("--student-hidden", type=hidden_units, default=None,
                     help="student hidden layer sizes (default: tfkd.models' student default)")
    sub.add_argument("--select-episodes", type=positive_int, default=10,
                     help="episodes of each evaluation during training, on selection seeds: "
                          "keep-best and the gate use them, the report never "
                          "(default: %(default)s)")
    _add_checkpoint_and_tensorboard(sub, "training")
    sub.set_defaults(command="kickstart")
    return parser


def _add_common(sub, env_default: str | None, out_help: str) -> None:
    env_help = "gymnasium id with discrete actions"
    env_help += f" (default: {env_default})" if env_default else \
        " (default: the env the teacher was trained on; needed for a .keras teacher)"
    sub.add_argument("--env", default=env_default, help=env_help)
    sub.add_argument("--seed", type=seed_int, default=0,
                     help="fixes everything random: initial weights, data order, env resets, "
                          "exploration and the evaluation seeds (default: %(default)s)")
    sub.add_argument("--eval-episodes", type=positive_int, default=20,
                     help="held-out episodes of the final report, disjoint from the selection "
                          "episodes (default: %(default)s)")
    sub.add_argument("--out", help=out_help + " (locked while the run lasts)")
    sub.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_teacher(sub) -> None:
    sub.add_argument("--teacher", required=True,
                     help="teacher folder from train-teacher, or a .keras file")


def _add_distillation(sub) -> None:
    sub.add_argument("--mode", choices=("student", "teacher"), default="student",
                     help="who acts while data is collected (default: student, i.e. DAgger)")
    sub.add_argument("--student-hidden", type=hidden_units, default=None,
                     help="student hidden layer sizes, e.g. 32 (default: tfkd.models' student "
                          "default; Atari: one value, the dense width)")
    sub.add_argument("--loss", choices=DISTILLATION_LOSSES, default="soft_target_kl",
                     help="distillation loss (default: %(default)s; q_value_kl is Rusu et "
                          "al.'s sharpened-Q KL for DQN teachers)")
    sub.add_argument("--temperature", type=positive_float, default=None,
                     help="temperature of a KL loss (default: the loss's own, 1 for "
                          "soft_target_kl, 0.01 for q_value_kl)")
    sub.add_argument("--target-return", type=finite_float, default=None,
                     help="stop distilling once the student's return on the selection "
                          "episodes reaches this")
    _add_budget(sub)


def _add_budget(sub) -> None:
    sub.add_argument("--steps", type=positive_int, default=20_000,
                     help="env steps of distillation, never exceeded (default: %(default)s)")
    sub.add_argument("--steps-per-round", type=positive_int, default=2_000,
                     help="env steps collected per round (default: %(default)s)")
    sub.add_argument("--train-steps-per-round", type=positive_int, default=500,
                     help="student updates per round (default: %(default)s)")
    sub.add_argument("--select-episodes", type=positive_int, default=10,
                     help="selection episodes: the student is evaluated on them after each "
                          "round and the best round is kept; never used in the final report "
                          "(default: %(default)s)")


def _add_checkpoint_and_tensorboard(sub, what: str) -> None:
    sub.add_argument("--checkpoint-dir", metavar="DIR",
                     help=f"checkpoint the {what} in DIR; rerunning with the same DIR resumes")
    sub.add_argument("--tensorboard", metavar="DIR",
                     help=f"log the {what} to TensorBoard in DIR")
    sub.add_argument("--csv", metavar="FILE",
                     help=f"log the {what} to FILE, one CSV row per evaluation or round, "
                          "written as it goes")


def parse_args(argv=None) -> argparse.Namespace:
    """Parses ``argv`` (default: ``sys.argv[1:]``)."""
    return build_parser().parse_args(sys.argv[1:] if argv is None else list(argv))
