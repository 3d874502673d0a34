"""The settings and the record of a distillation run (:mod:`tfkd.rl.loops`).

:class:`DistillConfig` says what a run does, for one task or several;
:class:`DistillationHistory` records one task round by round, and
:class:`MultiTaskHistory` a multi-task run: each task's history and the
combined view.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Sequence

import keras
import numpy as np

from tfkd.rl.seeding import check_seed

CONTROLS = ("teacher", "student")
# Fields that do not change what a run computes: left out of the checkpoint fingerprint.
WATCHING_FIELDS = ("progress", "checkpoint_dir", "callbacks", "tensorboard_dir", "csv_path",
                   "ray_address")


@dataclass
class DistillConfig:
    """Settings of a distillation run, teacher- or student-driven.

    Attributes:
        env_id: gymnasium id; for :func:`distill_multi_task`, a sequence of
            them, one per task, in the student's order.
        control: ``"teacher"`` (the teacher always acts, β = 1, FIFO buffer)
            or ``"student"`` (the β-mixture acts, reservoir buffer).
        total_env_steps: env steps spent collecting data, all rounds
            together; never exceeded. Per task in a multi-task run: one
            number for every task, or a sequence of one per task. A task
            with a smaller budget spreads it over the same rounds, in
            proportion (:meth:`task_round_steps`), and every task keeps
            training on its buffer in every round.
        steps_per_round: env steps collected before each round of training.
            Steps are taken ``num_envs`` at a time, so a round collects this
            rounded down to a multiple of ``num_envs``, and the last round
            what is left of the budget, rounded down likewise.
        train_steps_per_round: minibatch updates of the student per round.
        buffer_capacity: most labelled states kept.
        batch_size: minibatch size (per task in a multi-task run, unless
            ``task_proportions`` share ``batch_size × tasks`` among them).
        task_proportions: multi-task: the share of each minibatch that comes
            from each task (None: equal shares).
        learning_rate: Adam learning rate of the student.
        distillation_loss: loss name or object for ``tfkd.Distiller`` (None: its
            default, the soft-target KL on logits). For a DQN teacher's
            Q-values, ``"q_value_kl"`` sharpens them with a low temperature
            as in Rusu et al. 2016.
        temperature: temperature of a named KL loss (None: the loss's default).
        beta_initial, beta_decay, beta_min: the student-driven schedule
            β_i = max(beta_min, beta_initial · beta_decay^i). Round 0 is pure
            teacher data when ``beta_initial = 1`` (Ross et al. 2011 use
            β_i = p^(i-1)); β = 0 throughout is the "student-driven" setting
            that Czarnecki et al. 2019 recommend. Unused when the teacher acts.
        epsilon: probability of a uniformly random action by the control policy.
        num_envs: environments stepped in parallel (by each worker, with workers).
        workers: collect and label on this many Ray actors (:mod:`tfkd.rl.workers`;
            the teacher and student must be Keras 3 models), or 0: in this process.
        ray_address: with workers, the Ray cluster to join; None starts a
            local one for the run and stops it after.
        eval_episodes: episodes of the greedy student evaluated after a round,
            on ``selection_seeds(seed, eval_episodes)`` (0: never).
        eval_every: evaluate every this many rounds (and after the last).
        target_return: stop once the evaluated student reaches this mean
            return (one task only).
        keep_best: at the end, restore the student weights of the round with
            the best evaluated return (ties: the later round). Report results
            on held-out seeds, never on the selection seeds.
        keep_best_from_round: keep-best chooses among this round (0-based) and
            the later ones only, e.g. those after a pruning schedule has
            reached its final sparsity.
        seed: fixes everything random in the run (see the module docstring).
        checkpoint_dir: if set, a checkpoint after every round; rerunning with
            the same settings resumes after the last finished round.
        callbacks: ``keras.callbacks.Callback`` objects called per round (see
            :mod:`tfkd.rl.callbacks`).
        tensorboard_dir: if set, each round's logs as TensorBoard scalars.
        csv_path: if set, one CSV row per round.
        progress: show a tqdm bar over rounds.
    """

    env_id: str | Sequence[str] = "CartPole-v1"
    control: str = "student"
    total_env_steps: int | Sequence[int] = 20_000
    steps_per_round: int = 2_000
    train_steps_per_round: int = 500
    buffer_capacity: int = 100_000
    batch_size: int = 64
    task_proportions: Sequence[float] | None = None
    learning_rate: float = 1e-3
    distillation_loss: Any = None
    temperature: float | None = None
    beta_initial: float = 1.0
    beta_decay: float = 0.5
    beta_min: float = 0.0
    epsilon: float = 0.0
    num_envs: int = 8
    workers: int = 0
    ray_address: str | None = None
    eval_episodes: int = 10
    eval_every: int = 1
    target_return: float | None = None
    keep_best: bool = True
    keep_best_from_round: int = 0
    seed: int = 0
    checkpoint_dir: str | None = None
    callbacks: Sequence[keras.callbacks.Callback] = ()
    tensorboard_dir: str | None = None
    csv_path: str | None = None
    progress: bool = True

    def __post_init__(self):
        if not isinstance(self.env_id, str):
            self.env_id = tuple(self.env_id)
            if not self.env_id or not all(isinstance(e, str) for e in self.env_id):
                raise ValueError(f"env_id must be a gymnasium id or a sequence of them, got "
                                 f"{self.env_id!r}.")
            if len(set(self.env_id)) < len(self.env_id):
                raise ValueError(f"env_id names a task twice: {self.env_id!r}.")
            if self.target_return is not None and len(self.env_id) > 1:
                raise ValueError("target_return applies to one task; a multi-task run selects "
                                 "on the mean normalised score.")
        if isinstance(self.total_env_steps, Sequence):
            self.total_env_steps = tuple(self.total_env_steps)
            if len(self.total_env_steps) != len(self.env_ids) or not all(
                    isinstance(n, int) and not isinstance(n, bool)
                    for n in self.total_env_steps):
                raise ValueError(f"total_env_steps must be an integer or one integer per task "
                                 f"({len(self.env_ids)}), got {self.total_env_steps!r}.")
        if self.task_proportions is not None:
            self.task_proportions = tuple(float(p) for p in self.task_proportions)
            if len(self.task_proportions) != len(self.env_ids) or not all(
                    math.isfinite(p) and p > 0 for p in self.task_proportions):
                raise ValueError(f"task_proportions must give one positive number per task "
                                 f"({len(self.env_ids)}), got {self.task_proportions!r}.")
        if self.control not in CONTROLS:
            raise ValueError(f"control must be one of {CONTROLS}, got {self.control!r}.")
        check_seed(self.seed)
        for name in (
            "num_envs", "train_steps_per_round", "buffer_capacity", "batch_size", "eval_every"
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}.")
        if self.eval_episodes < 0:
            raise ValueError(f"eval_episodes must be >= 0, got {self.eval_episodes}.")
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 0:
            raise ValueError(f"workers must be a non-negative integer, got {self.workers!r}.")
        if not self.num_envs <= self.steps_per_round <= max(self.task_env_steps):
            raise ValueError(
                f"need num_envs ({self.num_envs}) <= steps_per_round ({self.steps_per_round}) "
                f"<= total_env_steps ({max(self.task_env_steps)})."
            )
        for env_id, budget, steps in zip(self.env_ids, self.task_env_steps,
                                         self.task_round_steps()):
            if 0 in steps:
                raise ValueError(f"{env_id}'s total_env_steps ({budget}) is too small to collect "
                                 f"num_envs ({self.num_envs}) steps in each of the {len(steps)} "
                                 f"rounds.")
        rounds = len(self.round_steps())
        if not 0 <= self.keep_best_from_round < rounds:
            raise ValueError(f"keep_best_from_round must name one of the run's {rounds} rounds "
                             f"(0 to {rounds - 1}), got {self.keep_best_from_round}.")
        if self.target_return is not None and not math.isfinite(self.target_return):
            raise ValueError(f"target_return must be a finite number, got {self.target_return}.")
        for name in ("beta_initial", "beta_min", "epsilon"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}.")

    @property
    def env_ids(self) -> tuple[str, ...]:
        """The tasks' env ids (one for a single-task run)."""
        return (self.env_id,) if isinstance(self.env_id, str) else tuple(self.env_id)

    @property
    def task_env_steps(self) -> tuple[int, ...]:
        """Each task's env-step budget."""
        if isinstance(self.total_env_steps, int):
            return (self.total_env_steps,) * len(self.env_ids)
        return self.total_env_steps

    def task_batch_sizes(self) -> list[int]:
        """Each task's share of a minibatch (at least one example each)."""
        if self.task_proportions is None:
            return [self.batch_size] * len(self.env_ids)
        total = self.batch_size * len(self.env_ids)
        weights = np.asarray(self.task_proportions) / sum(self.task_proportions)
        return [max(1, round(total * w)) for w in weights]

    def beta(self, round_index: int) -> float:
        """Probability that the teacher acts in round ``round_index``."""
        if self.control == "teacher":
            return 1.0
        return max(self.beta_min, self.beta_initial * self.beta_decay**round_index)

    @property
    def replacement(self) -> str:
        """The buffer's policy once full: FIFO for teacher data, reservoir for DAgger."""
        return "fifo" if self.control == "teacher" else "reservoir"

    def round_steps(self) -> list[int]:
        """Env steps collected in each round by the task with the largest budget;
        they sum to at most that budget."""
        per_round = self.steps_per_round // self.num_envs * self.num_envs
        total = max(self.task_env_steps) // self.num_envs * self.num_envs
        full, rest = divmod(total, per_round)
        return [per_round] * full + ([rest] if rest else [])

    def task_round_steps(self) -> list[list[int]]:
        """Each task's env steps per round: its budget spread like :meth:`round_steps`.

        After round r task k has collected ``⌊B_k · C_r / B_max / n⌋ · n``
        steps, C_r the largest budget's steps by then and n ``num_envs``: the
        largest budget follows :meth:`round_steps` exactly.
        """
        plan = self.round_steps()
        largest = max(self.task_env_steps)
        done = np.cumsum(plan)
        result = []
        for budget in self.task_env_steps:
            reached = [int(budget * c // largest) // self.num_envs * self.num_envs for c in done]
            result.append([b - a for a, b in zip([0] + reached[:-1], reached)])
        return result

    def settings(self) -> dict[str, Any]:
        """The fields that decide the results, as JSON values (for fingerprints and reports)."""
        names = [f.name for f in fields(self) if f.name not in WATCHING_FIELDS]
        values = {name: getattr(self, name) for name in names}
        values["distillation_loss"] = _describe(self.distillation_loss)
        return values


@dataclass
class DistillationHistory:
    """One entry per finished round, plus how the run ended.

    ``student_return_*`` and ``normalized_score`` are None in rounds that were
    not evaluated, ``control_return`` where no episode ended in the round, so
    :meth:`as_dict` is strict JSON.

    Attributes:
        kept_round: the round whose weights the student ends with (the last
            finished one, or the best evaluated one with ``keep_best``; -1 if
            no round finished).
        interrupted: the run was stopped by KeyboardInterrupt.
        resumed_from: the round a resumed run restarted at (None: not resumed).
        teacher_return, random_return: mean returns of the greedy teacher and
            of the uniform policy on the selection seeds (None without evaluation).
        selection_seeds: the episodes' seeds the student was evaluated on.
    """

    env_steps: list[int] = field(default_factory=list)
    wall_time_s: list[float] = field(default_factory=list)
    beta: list[float] = field(default_factory=list)
    buffer_size: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    agreement: list[float] = field(default_factory=list)
    control_return: list[float | None] = field(default_factory=list)
    student_return_mean: list[float | None] = field(default_factory=list)
    student_return_std: list[float | None] = field(default_factory=list)
    normalized_score: list[float | None] = field(default_factory=list)
    kept_round: int = -1
    interrupted: bool = False
    resumed_from: int | None = None
    teacher_return: float | None = None
    random_return: float | None = None
    selection_seeds: list[int] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def num_rounds(self) -> int:
        return len(self.env_steps)

    def round_logs(self, round_index: int) -> dict[str, Any]:
        """The logs passed to callbacks for a round (see :mod:`tfkd.rl.callbacks`)."""
        return {
            "return": self.student_return_mean[round_index],
            "normalized_score": self.normalized_score[round_index],
            "agreement": self.agreement[round_index],
            "loss": self.loss[round_index],
            "beta": self.beta[round_index],
            "buffer_size": self.buffer_size[round_index],
            "env_steps": self.env_steps[round_index],
        }


@dataclass
class MultiTaskHistory:
    """A multi-task run: each task's :class:`DistillationHistory` and the combined view.

    Each task's history has that task's env steps, returns, scores and
    agreement, and the shared loss, wall time, kept round and how the run ended.

    Attributes:
        tasks: ``{env_id: DistillationHistory}`` in the student's task order.
        mean_normalized_score: per round, the mean over tasks of the
            normalised score on the selection episodes (None: not evaluated,
            or undefined for a task).
        kept_round, interrupted, resumed_from: as in :class:`DistillationHistory`.
    """

    tasks: dict[str, DistillationHistory]
    kept_round: int = -1
    interrupted: bool = False
    resumed_from: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "tasks": {env_id: history.as_dict() for env_id, history in self.tasks.items()},
            "mean_normalized_score": list(self.mean_normalized_score),
            "kept_round": self.kept_round,
            "interrupted": self.interrupted,
            "resumed_from": self.resumed_from,
        }

    @property
    def num_rounds(self) -> int:
        return next(iter(self.tasks.values())).num_rounds

    @property
    def mean_normalized_score(self) -> list[float | None]:
        """Per round, the tasks' mean normalised score (None where a task has none)."""
        per_round = zip(*(history.normalized_score for history in self.tasks.values()))
        return [None if None in scores else float(np.mean(scores)) for scores in per_round]

    @staticmethod
    def log_keys(env_ids: Sequence[str]) -> tuple[str, ...]:
        """The keys of :meth:`round_logs`, in order."""
        per_task = ("return", "normalized_score", "agreement", "env_steps")
        return ("mean_normalized_score", "loss") + tuple(
            f"{key}/{env_id}" for env_id in env_ids for key in per_task)

    def round_logs(self, round_index: int) -> dict[str, Any]:
        """The logs passed to callbacks: the combined score and loss, then ``KEY/ENV_ID``."""
        first = next(iter(self.tasks.values()))
        logs = {"mean_normalized_score": self.mean_normalized_score[round_index],
                "loss": first.loss[round_index]}
        for env_id, history in self.tasks.items():
            task_logs = history.round_logs(round_index)
            for key in ("return", "normalized_score", "agreement", "env_steps"):
                logs[f"{key}/{env_id}"] = task_logs[key]
        return logs


def _describe(value) -> Any:
    """A JSON description of a loss setting: names as is, objects by class and config."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    description = {"class": type(value).__name__}
    get_config = getattr(value, "get_config", None)
    if callable(get_config):
        try:
            config = get_config().items()
            description["config"] = {
                key: item for key, item in config if isinstance(item, (str, int, float, bool))
            }
        except (NotImplementedError, TypeError):
            pass
    return description
