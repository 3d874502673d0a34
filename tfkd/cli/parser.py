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

from tfkd.provenance import installed_version

DEMO_ENV = "CartPole-v1"
DISTILLATION_LOSSES = ("soft_target_kl", "q_value_kl", "greedy_action_nll", "mse")
# tfkd.distillation.ensemble.COMBINATIONS, repeated: the parser imports no TensorFlow.
COMBINATIONS = ("mean", "most_confident", "max_q")

KICKSTART_SCHEDULES = ("constant", "linear", "exponential", "gated")  # tfkd.rl.kickstart
KICKSTART_LOSSES = ("kl", "centered_mse")  # tfkd.rl.kickstart.LOSSES


class _Parser(argparse.ArgumentParser):
    """Reports a bad argument as one line (exit status 2), not usage plus message."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


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


def probability(text: str) -> float:
    """A number in [0, 1]."""
    value = finite_float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}")
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
    _add_dqn_recipe(sub)
    _add_checkpoint_and_tensorboard(sub, "training")
    sub.set_defaults(command="train_teacher")

    sub = commands.add_parser("distill", help="distil a saved teacher into a small student",
                              description="Distil a saved teacher into a small student; the "
                              "student of the best round on the selection episodes is kept. "
                              "Several --teacher: teachers of one env are combined into one "
                              "(--combine); teachers of different envs give one multi-task "
                              "student with a head per env.")
    _add_common(sub, env_default=None, out_help="folder for results.json, the plot and "
                "student.keras")
    sub.add_argument("--teacher", required=True, action="append",
                     help="teacher folder from train-teacher, or a .keras file; repeat it for "
                          "several teachers")
    sub.add_argument("--combine", choices=COMBINATIONS, default="mean",
                     help="several teachers of one env: distil their mean policy at the loss's "
                          "temperature, per state the most confident teacher's outputs, or "
                          "(DQN teachers) per state and action their largest Q-value "
                          "(default: %(default)s)")
    _add_distillation(sub)
    sub.add_argument("--workers", type=_int_at_least(0), default=0,
                     help="collect and label on this many Ray actors, each with its own envs "
                          "(needs the ray extra and Keras teachers; default: 0, in this process)")
    sub.add_argument("--ray-address", metavar="ADDRESS", default=None,
                     help="with --workers: the Ray cluster to join, e.g. auto or host:6379 "
                          "(default: a local cluster started and stopped by tfkd)")
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
    sub.add_argument("--teacher-steps", type=positive_int, default=120_000,
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

    # ---- serve: the HTTP policy service (tfkd.deploy.serving)
    sub = commands.add_parser("serve", help="serve an exported student over HTTP",
                              description="Serve an exported student over HTTP: POST /v1/act "
                              "{\"observations\": [[...], ...]} -> actions and logits; "
                              "concurrent requests are micro-batched; a new version in --model "
                              "is picked up while serving. See docs/serving.md.")
    sub.add_argument("--model", required=True, metavar="DIR",
                     help="export folder (from tfkd export)")
    sub.add_argument("--format", choices=("tflite", "tflite-int8", "savedmodel", "keras"),
                     default="tflite", help="which artefact of DIR to serve (default: "
                     "%(default)s; savedmodel serves the highest saved_model/<version>/)")
    sub.add_argument("--host", default="127.0.0.1",
                     help="address to listen on (default: %(default)s)")
    sub.add_argument("--port", type=_int_at_least(0), default=8000,
                     help="TCP port (default: %(default)s)")
    sub.add_argument("--workers", type=positive_int, default=1,
                     help="server processes sharing the port (default: %(default)s)")
    sub.add_argument("--max-batch", type=positive_int, default=64,
                     help="most observations per model run (default: %(default)s)")
    sub.add_argument("--max-wait-ms", type=_non_negative_float, default=2.0,
                     help="longest a request waits for others to share its model run "
                          "(default: %(default)s)")
    sub.add_argument("--max-body-bytes", type=positive_int, default=1 << 20,
                     help="larger request bodies get 413 (default: %(default)s)")
    sub.add_argument("--poll-seconds", type=_non_negative_float, default=1.0,
                     help="how often DIR is checked for a new model version; 0: never "
                          "(POST /v1/reload still works) (default: %(default)s)")
    sub.add_argument("--loop", choices=("auto", "asyncio", "uvloop"), default="auto",
                     help="uvicorn's event loop; auto takes uvloop when it is installed "
                          "(default: %(default)s)")
    sub.add_argument("--http", choices=("auto", "h11", "httptools"), default="auto",
                     help="uvicorn's HTTP parser; auto takes httptools when it is installed "
                          "(default: %(default)s)")
    sub.add_argument("--log-level", choices=("critical", "error", "warning", "info", "debug"),
                     default="info", help="uvicorn's log level (default: %(default)s)")
    sub.set_defaults(command="serve")

    # ---- export (tfkd.deploy)
    def fraction(text: str) -> float:
        value = finite_float(text)
        if not 0.0 < value < 1.0:
            raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {text!r}")
        return value

    sub = commands.add_parser("export", help="export a student: SavedModel, TFLite, int8, "
                              "TF-Agents policy; measure each",
                              description="Export a student for deployment (SavedModel for "
                              "TensorFlow Serving, TFLite float32 and full-integer int8, a "
                              "TF-Agents policy) and measure each artefact: size, latency, "
                              "throughput, held-out return and agreement with the float student.")
    sub.add_argument("--student", required=True, help="the student .keras file")
    sub.add_argument("--env", required=True, help="gymnasium id the student acts in")
    sub.add_argument("--teacher", help="teacher folder from train-teacher, or a .keras file: "
                     "normalised scores and the teacher's latency (without it the scores "
                     "are n/a)")
    sub.add_argument("--out", required=True, help="the export folder (locked while the run "
                     "lasts; written atomically)")
    sub.add_argument("--seed", type=seed_int, default=0,
                     help="held-out episodes held_out_seeds(seed, n); calibration rollouts on "
                          "selection seeds (default: %(default)s)")
    sub.add_argument("--eval-episodes", type=positive_int, default=100,
                     help="held-out episodes each artefact plays (default: %(default)s)")
    sub.add_argument("--latency-repeats", type=_int_at_least(10), default=1_000,
                     help="timed calls per batch size, median reported (default: %(default)s)")
    sub.add_argument("--calibration-data", metavar="NPZ",
                     help="observations for the int8 calibration: a .npz dataset saved by "
                          "tfkd.rl.save_npz, e.g. the distillation buffer (default: 10,000 "
                          "env steps of the student's own rollouts)")
    sub.add_argument("--per-channel", action="store_true",
                     help="int8 weights with one scale per output channel, not one per "
                          "tensor: a finer grid, a larger file (about 3 KB more for a 64x64 "
                          "MLP)")
    sub.add_argument("--qat", action="store_true",
                     help="also distil a quantisation-aware copy of the student (fake-quant "
                          "weights and activations) and export it as int8; needs --teacher")
    sub.add_argument("--prune", type=fraction, default=None, metavar="SPARSITY",
                     help="also distil a magnitude-pruned copy of the student to this "
                          "fraction of zero weights (e.g. 0.8); needs --teacher")
    sub.add_argument("--finetune-steps", type=positive_int, default=20_000,
                     help="env steps of the --qat / --prune distillation (default: "
                          "%(default)s)")
    sub.add_argument("--train-steps-per-round", type=positive_int, default=1_000,
                     help="student updates in each of the 10 rounds of the --qat / --prune "
                          "distillation (default: %(default)s)")
    sub.add_argument("--select-episodes", type=positive_int, default=10,
                     help="selection episodes after each --qat round; the best round is kept "
                          "(default: %(default)s)")
    sub.add_argument("--no-tf-agents", action="store_true",
                     help="skip the TF-Agents policy (it needs TF-Agents installed)")
    sub.add_argument("--quiet", action="store_true", help="no progress lines")
    sub.set_defaults(command="export")
    # ---- end export

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
    sub.add_argument("--schedule", choices=KICKSTART_SCHEDULES, default="exponential",
                     help="λ_t: constant, linear or exponential decay, or gated by the "
                          "student's normalised score on the selection episodes "
                          "(default: %(default)s)")
    sub.add_argument("--coefficient", type=positive_float, default=1.0,
                     help="λ's scale (default: %(default)s; QDagger's is 3 with --loss kl "
                          "--schedule linear)")
    sub.add_argument("--loss", choices=KICKSTART_LOSSES, default="centered_mse",
                     help="the distillation term: kl, QDagger's KL of the softmaxes at "
                          "--temperature, or centered_mse, the squared error of the "
                          "zero-meaned Q-values (the teacher's advantages; the KL's limit at "
                          "high temperature) (default: %(default)s)")
    sub.add_argument("--temperature", type=positive_float, default=None,
                     help="temperature of the teacher's and student's softmax, --loss kl "
                          "only (default: 0.1, QDagger's)")
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
    _add_dqn_recipe(sub)
    _add_checkpoint_and_tensorboard(sub, "training")
    sub.set_defaults(command="kickstart")
    return parser


def _non_negative_float(text: str) -> float:
    """A finite number >= 0."""
    value = finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


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
                          "default; Atari: one value, the dense width; multi-task: the shared "
                          "trunk, default 64,64)")
    sub.add_argument("--loss", choices=DISTILLATION_LOSSES, default="soft_target_kl",
                     help="distillation loss (default: %(default)s; q_value_kl is Rusu et "
                          "al.'s sharpened-Q KL for DQN teachers)")
    sub.add_argument("--temperature", type=positive_float, default=None,
                     help="temperature of a KL loss (default: the loss's own, 1 for "
                          "soft_target_kl, 0.01 for q_value_kl)")
    sub.add_argument("--target-return", type=finite_float, default=None,
                     help="stop distilling once the student's return on the selection "
                          "episodes reaches this")
    _add_budget(sub, per_task=True)


def _add_budget(sub, per_task: bool = False) -> None:
    if per_task:
        sub.add_argument("--steps", type=positive_int, nargs="+", default=[20_000],
                         metavar="N", help="env steps of distillation, never exceeded; "
                         "multi-task: one number for every env, or one per --teacher, in "
                         "their order (default: 20000)")
    else:
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


def _add_dqn_recipe(sub) -> None:
    """The DQN settings a user may need to change; the rest are train-teacher's recipe."""
    sub.add_argument("--learning-rate", type=positive_float, default=None,
                     help="Adam's learning rate (default: 1e-3; Atari 1e-4)")
    sub.add_argument("--epsilon-steps", type=positive_int, default=None,
                     help="env steps over which ε decays linearly from 1 to --epsilon-final "
                          "(default: 10,000, or half of a shorter run)")
    sub.add_argument("--epsilon-final", type=probability, default=None,
                     help="ε after its decay (default: 0.02)")
    sub.add_argument("--eval-every", type=positive_int, default=None,
                     help="env steps between greedy evaluations on the selection episodes "
                          "(default: 2,500)")
    sub.add_argument("--buffer", type=positive_int, default=None,
                     help="replay memory size in transitions (default: 50,000; Atari 20,000)")
    sub.add_argument("--learning-starts", type=positive_int, default=None,
                     help="env steps of random play before the first update (default: 1,000, "
                          "or half of a shorter run)")
    sub.add_argument("--train-every", type=positive_int, default=None,
                     help="env steps between rounds of updates (default: 16)")
    sub.add_argument("--gradient-steps", type=positive_int, default=None,
                     help="updates per round, each on a minibatch of 128 (default: 8)")
    sub.add_argument("--target-update-every", type=positive_int, default=None,
                     help="env steps between copies of the Q-network to its target "
                          "(default: 500)")


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
