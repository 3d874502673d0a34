"""Policy distillation in gymnasium, on top of ``tfkd.Distiller.fit``.

One loop, round after round:

1. collect env steps under a *control policy*, label every visited state
   with the teacher's outputs, add them to a bounded buffer;
2. fit the student on the buffer for ``train_steps_per_round`` minibatches
   with ``tfkd.Distiller`` (``teacher=None``: the labels are in the data);
3. evaluate the greedy student on the selection episodes (keep-best,
   target return), report the round to callbacks, write a checkpoint.

``DistillConfig.control`` says who controls the environment:

- ``"teacher"`` (offline; Rusu et al. 2016, "Policy Distillation"): the
  teacher acts (optionally ε-greedy), β = 1 always; the buffer is a FIFO
  replay memory;
- ``"student"`` (online, DAgger; Ross et al. 2011, Czarnecki et al. 2019,
  "Distilling Policy Distillation"): the β-mixture of teacher and student
  acts, β_i = max(β_min, β_0 · decay^i), so the teacher labels the states the
  student actually visits; the buffer aggregates all rounds under a memory
  bound by reservoir sampling.

Reproducibility: ``config.seed`` fixes the global seeds (see
:func:`tfkd.rl.seeding.seed_everything`), the environments' resets, the ε and
β draws, reservoir sampling and the order of minibatches, each from its own
stream. The student's initial weights are the caller's: seed before building
it. The same seed on the same machine gives the same history and weights.

Checkpoints (``checkpoint_dir``, see :mod:`tfkd.rl.checkpoint`) hold
everything but the environments' mid-episode state, which gymnasium cannot
save in general: a resumed run starts fresh episodes, reset with a seed
derived from ``seed`` and the round it resumes at, so it is itself
deterministic but does not replay the uninterrupted run's later rounds.

Ctrl-C (KeyboardInterrupt) ends the run at a clean point: the student gets
back the weights of the last finished round (or of the best one, with
``keep_best``), and the history, which holds only finished rounds, says
``interrupted=True``. With ``checkpoint_dir``, a round that finished before
the interrupt is checkpointed too (if its checkpoint was not yet written),
so a rerun resumes after it.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Sequence

import keras
import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from tfkd import Distiller
from tfkd.rl import checkpoint as checkpoints
from tfkd.rl.callbacks import RoundCSVLogger, RoundTensorBoard
from tfkd.rl.datasets import DistillationBuffer
from tfkd.rl.envs import check_discrete, env_spec, make_vector_env
from tfkd.rl.evaluation import (
    action_agreement,
    evaluate_policy,
    normalized_score,
    random_policy,
    selection_seeds,
)
from tfkd.rl.policies import (
    EpsilonGreedyPolicy,
    GreedyPolicy,
    MixturePolicy,
    Network,
    Policy,
    network_outputs,
)
from tfkd.rl.rollouts import RolloutCollector
from tfkd.rl.seeding import check_seed, derived_seed, rng_streams, seed_everything

CONTROLS = ("teacher", "student")
# Fields that do not change what a run computes: left out of the checkpoint fingerprint.
WATCHING_FIELDS = ("progress", "checkpoint_dir", "callbacks", "tensorboard_dir", "csv_path")


@dataclass
class DistillConfig:
    """Settings of a distillation run, teacher- or student-driven.

    Attributes:
        env_id: gymnasium id.
        control: ``"teacher"`` (the teacher always acts, β = 1, FIFO buffer)
            or ``"student"`` (the β-mixture acts, reservoir buffer).
        total_env_steps: env steps spent collecting data, all rounds
            together; never exceeded.
        steps_per_round: env steps collected before each round of training.
            Steps are taken ``num_envs`` at a time, so a round collects this
            rounded down to a multiple of ``num_envs``, and the last round
            what is left of the budget, rounded down likewise.
        train_steps_per_round: minibatch updates of the student per round.
        buffer_capacity: most labelled states kept.
        batch_size: minibatch size.
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
        num_envs: environments stepped in parallel.
        eval_episodes: episodes of the greedy student evaluated after a round,
            on ``selection_seeds(seed, eval_episodes)`` (0: never).
        eval_every: evaluate every this many rounds (and after the last).
        target_return: stop once the evaluated student reaches this mean return.
        keep_best: at the end, restore the student weights of the round with
            the best evaluated return (ties: the later round). Report results
            on held-out seeds, never on the selection seeds.
        seed: fixes everything random in the run (see the module docstring).
        checkpoint_dir: if set, a checkpoint after every round; rerunning with
            the same settings resumes after the last finished round.
        callbacks: ``keras.callbacks.Callback`` objects called per round (see
            :mod:`tfkd.rl.callbacks`).
        tensorboard_dir: if set, each round's logs as TensorBoard scalars.
        csv_path: if set, one CSV row per round.
        progress: show a tqdm bar over rounds.
    """

    env_id: str = "CartPole-v1"
    control: str = "student"
    total_env_steps: int = 20_000
    steps_per_round: int = 2_000
    train_steps_per_round: int = 500
    buffer_capacity: int = 100_000
    batch_size: int = 64
    learning_rate: float = 1e-3
    distillation_loss: Any = None
    temperature: float | None = None
    beta_initial: float = 1.0
    beta_decay: float = 0.5
    beta_min: float = 0.0
    epsilon: float = 0.0
    num_envs: int = 8
    eval_episodes: int = 10
    eval_every: int = 1
    target_return: float | None = None
    keep_best: bool = True
    seed: int = 0
    checkpoint_dir: str | None = None
    callbacks: Sequence[keras.callbacks.Callback] = ()
    tensorboard_dir: str | None = None
    csv_path: str | None = None
    progress: bool = True

    def __post_init__(self):
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
        if not self.num_envs <= self.steps_per_round <= self.total_env_steps:
            raise ValueError(
                f"need num_envs ({self.num_envs}) <= steps_per_round ({self.steps_per_round}) "
                f"<= total_env_steps ({self.total_env_steps})."
            )
        if self.target_return is not None and not math.isfinite(self.target_return):
            raise ValueError(f"target_return must be a finite number, got {self.target_return}.")
        for name in ("beta_initial", "beta_min", "epsilon"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}.")

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
        """Env steps collected in each round; they sum to at most ``total_env_steps``."""
        per_round = self.steps_per_round // self.num_envs * self.num_envs
        total = self.total_env_steps // self.num_envs * self.num_envs
        full, rest = divmod(total, per_round)
        return [per_round] * full + ([rest] if rest else [])

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


def distill(teacher: Network, student: keras.Model, config: DistillConfig) -> DistillationHistory:
    """Distils ``teacher`` into ``student`` (trained in place); returns the history.

    Seeds the global generators with ``config.seed`` first. See the module
    docstring for the loop, checkpoints and interruption.

    Raises:
        tfkd.rl.checkpoint.CheckpointMismatchError: ``checkpoint_dir`` holds a
            run made with other settings.
    """
    seed_everything(config.seed)
    if config.checkpoint_dir is not None:
        checkpoints.check_directory(config.checkpoint_dir)
    env = make_vector_env(config.env_id, config.num_envs)
    try:
        return _Run(teacher, student, config, env).run()
    finally:
        env.close()


def distill_teacher_driven(
    teacher: Network, student: keras.Model, config: DistillConfig
) -> DistillationHistory:
    """:func:`distill` with the teacher in control (Rusu et al. 2016), whatever
    ``config.control`` says."""
    return distill(teacher, student, replace(config, control="teacher"))


def distill_student_driven(
    teacher: Network, student: keras.Model, config: DistillConfig
) -> DistillationHistory:
    """:func:`distill` with the β-mixture in control (DAgger), whatever
    ``config.control`` says."""
    return distill(teacher, student, replace(config, control="student"))


class _Run:
    """The state of one distillation run: what a checkpoint saves and restores."""

    def __init__(self, teacher, student, config: DistillConfig, env):
        spec = env_spec(env, config.env_id)
        check_discrete(env.single_action_space, config.env_id)
        self.config, self.env, self.student = config, env, student
        self.teacher_outputs = network_outputs(teacher, spec.num_actions)
        self.student_outputs = network_outputs(student, spec.num_actions)
        self.num_actions = spec.num_actions
        self.rngs = rng_streams(config.seed, ("control", "shuffle", "buffer"))
        self.buffer = DistillationBuffer(
            config.buffer_capacity,
            spec.observation_shape,
            spec.num_actions,
            observation_dtype=spec.observation_dtype,
            replacement=config.replacement,
            seed=int(self.rngs["buffer"].integers(2**31)),
        )
        self.distiller = Distiller(
            student,
            teacher=None,
            distillation_loss=config.distillation_loss,
            temperature=config.temperature,
        )
        self.distiller.compile(optimizer=keras.optimizers.Adam(config.learning_rate))
        self.distiller.optimizer.build(self.distiller.trainable_variables)
        self.mixture = MixturePolicy(
            GreedyPolicy(self.teacher_outputs), GreedyPolicy(self.student_outputs), 1.0
        )
        self.control: Policy = self.mixture
        if config.epsilon > 0:
            self.control = EpsilonGreedyPolicy(self.mixture, spec.num_actions, config.epsilon)
        self.seeds = []
        if config.eval_episodes:
            self.seeds = selection_seeds(config.seed, config.eval_episodes)
        self.history = DistillationHistory(selection_seeds=list(self.seeds))
        self.plan = config.round_steps()
        shapes = [list(weight.shape) for weight in student.weights]
        self.settings = {**config.settings(), "student_weight_shapes": shapes}
        self.fingerprint = checkpoints.fingerprint(self.settings)
        self.best_return, self.best_round, self.best_weights = -math.inf, -1, None
        self.finished_weights = student.get_weights()
        self.stopped = False
        self.wall_offset = 0.0
        self.in_round = False
        self.saved_round = -1

    # ------------------------------------------------------------------ the loop

    def run(self) -> DistillationHistory:
        config = self.config
        start_round = self._restore() if config.checkpoint_dir is not None else 0
        history = self.history
        callbacks = self._callbacks()
        started = time.perf_counter() - self.wall_offset
        bar = tqdm(total=len(self.plan), initial=start_round, desc=f"distil {config.env_id}",
                   disable=not config.progress)
        try:
            if start_round == 0 and self.seeds:
                self._evaluate_baselines()
            reset_seed = derived_seed(config.seed, start_round)
            collector = RolloutCollector(self.env, self.teacher_outputs, seed=reset_seed)
            collector.rng = self.rngs["control"]
            collector.total_steps = history.env_steps[-1] if history.env_steps else 0
            for round_index in range(start_round, len(self.plan)):
                if self.stopped:
                    break
                self.in_round = True
                record = self._round(collector, round_index)
                record["wall_time_s"] = time.perf_counter() - started
                self._finish_round(round_index, record)
                self.in_round = False
                for callback in callbacks:
                    callback.on_epoch_end(round_index, history.round_logs(round_index))
                self.stopped = self._should_stop(round_index)
                if config.checkpoint_dir is not None:
                    self._save(round_index)
                bar.update(1)
                mean = record["student_return_mean"]
                bar.set_postfix(
                    steps=record["env_steps"],
                    loss=f"{record['loss']:.4f}",
                    agree=f"{record['agreement']:.3f}",
                    ret="-" if mean is None else f"{mean:.1f}",
                )
        except KeyboardInterrupt:
            history.interrupted = True
            last_finished = history.num_rounds - 1
            # Between rounds the state is that of the last finished round: keep it.
            if config.checkpoint_dir is not None and not self.in_round:
                if last_finished > self.saved_round:
                    self._save(last_finished)
        finally:
            bar.close()
        self._keep_final_weights()
        for callback in callbacks:
            callback.on_train_end({})
        return history

    def _round(self, collector: RolloutCollector, round_index: int) -> dict[str, Any]:
        """Collects, trains and evaluates one round; returns its history entries."""
        config = self.config
        self.mixture.beta = config.beta(round_index)
        rollout = collector.collect(self.control, self.plan[round_index])
        self.buffer.add(rollout.observations, rollout.teacher_outputs)
        shuffle_seed = int(self.rngs["shuffle"].integers(2**31))
        fit = self.distiller.fit(
            self.buffer.as_dataset(config.batch_size, seed=shuffle_seed).repeat(),
            steps_per_epoch=config.train_steps_per_round,
            epochs=1,
            shuffle=False,
            verbose=0,
        )
        mean = std = score = None
        last = round_index == len(self.plan) - 1
        if self.seeds and (last or (round_index + 1) % config.eval_every == 0):
            stats = evaluate_policy(config.env_id, GreedyPolicy(self.student_outputs), self.seeds)
            mean, std = stats.mean, stats.std
            score = normalized_score(mean, self.history.random_return, self.history.teacher_return)
        returns = rollout.episode_returns
        return {
            "env_steps": collector.total_steps,
            "beta": self.mixture.beta,
            "buffer_size": len(self.buffer),
            "loss": float(fit.history["loss"][-1]),
            "agreement": action_agreement(
                self.teacher_outputs, self.student_outputs, rollout.observations
            ),
            "control_return": float(np.mean(returns)) if returns else None,
            "student_return_mean": mean,
            "student_return_std": std,
            "normalized_score": score,
        }

    def _finish_round(self, round_index: int, record: dict[str, Any]) -> None:
        """Appends the round to the history and remembers its weights (and the best)."""
        for name, value in record.items():
            getattr(self.history, name).append(value)
        self.finished_weights = self.student.get_weights()
        mean = record["student_return_mean"]
        if mean is not None and mean >= self.best_return:
            self.best_return, self.best_round = mean, round_index
            if self.config.keep_best:
                self.best_weights = self.finished_weights

    def _should_stop(self, round_index: int) -> bool:
        target, mean = self.config.target_return, self.history.student_return_mean[round_index]
        reached = target is not None and mean is not None and mean >= target
        return reached or bool(getattr(self.student, "stop_training", False))

    def _keep_final_weights(self) -> None:
        if self.config.keep_best and self.best_weights is not None:
            self.student.set_weights(self.best_weights)
            self.history.kept_round = self.best_round
        else:
            self.student.set_weights(self.finished_weights)
            self.history.kept_round = self.history.num_rounds - 1

    def _evaluate_baselines(self) -> None:
        """Teacher and uniform-random returns on the selection seeds, for the normalised score."""
        env_id = self.config.env_id
        teacher, uniform = GreedyPolicy(self.teacher_outputs), random_policy(self.num_actions)
        self.history.teacher_return = evaluate_policy(env_id, teacher, self.seeds).mean
        self.history.random_return = evaluate_policy(env_id, uniform, self.seeds).mean

    def _callbacks(self) -> list[keras.callbacks.Callback]:
        config = self.config
        callbacks = list(config.callbacks)
        if config.tensorboard_dir is not None:
            callbacks.append(RoundTensorBoard(config.tensorboard_dir))
        csv_logger = RoundCSVLogger(config.csv_path) if config.csv_path is not None else None
        if csv_logger is not None:
            callbacks.append(csv_logger)
        self.student.stop_training = False
        for callback in callbacks:
            callback.set_model(self.student)
            callback.on_train_begin({})
        if csv_logger is not None:  # a resumed run's file starts with the restored rounds
            for round_index in range(self.history.num_rounds):
                csv_logger.on_epoch_end(round_index, self.history.round_logs(round_index))
        return callbacks

    # ------------------------------------------------------------- checkpoints

    def _save(self, round_index: int) -> None:
        buffer_arrays, buffer_meta = self.buffer.get_state()
        state = {
            "round": round_index,
            "fingerprint": self.fingerprint,
            "settings": self.settings,
            "history": self.history.as_dict(),
            "stopped": self.stopped,
            "best": {"return": _finite_or_none(self.best_return), "round": self.best_round},
            "rng": {name: rng.bit_generator.state for name, rng in self.rngs.items()},
            "buffer": buffer_meta,
            "tf_global_generator": tf.random.get_global_generator().state.numpy().tolist(),
        }
        checkpoints.save_round(
            self.config.checkpoint_dir,
            checkpoints.RoundCheckpoint(
                round_index=round_index,
                state=state,
                student_weights=self.finished_weights,
                optimizer_variables=[v.numpy() for v in self.distiller.optimizer.variables],
                best_weights=self.best_weights,
                buffer_arrays=buffer_arrays,
            ),
        )
        self.saved_round = round_index

    def _restore(self) -> int:
        """Loads the last finished round, if any; returns the round to start at."""
        saved = checkpoints.load_latest(self.config.checkpoint_dir, self.fingerprint, self.settings)
        if saved is None:
            return 0
        state = saved.state
        self.history = DistillationHistory(**state["history"])
        self.student.set_weights(saved.student_weights)
        self.finished_weights = saved.student_weights
        optimizer_variables = self.distiller.optimizer.variables
        for variable, value in zip(optimizer_variables, saved.optimizer_variables, strict=True):
            variable.assign(value)
        self.buffer.set_state(saved.buffer_arrays, state["buffer"])
        for name, rng in self.rngs.items():
            rng.bit_generator.state = state["rng"][name]
        tf.random.get_global_generator().reset(state["tf_global_generator"])
        best = state["best"]
        self.best_return = -math.inf if best["return"] is None else best["return"]
        self.best_round, self.best_weights = best["round"], saved.best_weights
        self.stopped = state["stopped"]
        self.saved_round = saved.round_index
        self.wall_offset = self.history.wall_time_s[-1]
        self.history.interrupted = False
        self.history.resumed_from = saved.round_index + 1
        return saved.round_index + 1


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


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None
