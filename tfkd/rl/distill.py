"""Policy distillation loops in gymnasium, on top of ``tfkd.Distiller.fit``.

Both loops alternate the same two steps, round after round:

1. collect ``steps_per_round`` env steps under a *control policy*, label every
   visited state with the teacher's outputs, add them to a bounded buffer;
2. fit the student on the buffer for ``train_steps_per_round`` minibatches
   with ``tfkd.Distiller`` (``teacher=None``: the labels are in the data).

They differ only in who controls the environment:

- teacher-driven (offline; Rusu et al. 2016, "Policy Distillation"): the
  teacher acts (optionally ε-greedy); the buffer is a FIFO replay memory;
- student-driven (online, DAgger; Ross et al. 2011, Czarnecki et al. 2019,
  "Distilling Policy Distillation"): the β-mixture of teacher and student
  acts, with β_i = β_0 · decay^i, so the teacher labels the states the student
  actually visits; the buffer aggregates all rounds under a memory bound by
  reservoir sampling.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import keras
import numpy as np
from tqdm.auto import tqdm

from tfkd.rl.datasets import DistillationBuffer
from tfkd.rl.envs import check_discrete, env_spec, make_vector_env
from tfkd.rl.evaluation import action_agreement, evaluate_policy
from tfkd.rl.policies import (
    EpsilonGreedyPolicy,
    GreedyPolicy,
    MixturePolicy,
    Network,
    Policy,
    network_outputs,
)
from tfkd.rl.rollouts import RolloutCollector


@dataclass
class TeacherDrivenConfig:
    """Settings of teacher-driven (offline) distillation.

    Attributes:
        env_id: gymnasium id.
        total_env_steps: env steps spent collecting data, all rounds together.
        steps_per_round: env steps collected before each round of training.
        train_steps_per_round: minibatch updates of the student per round.
        buffer_capacity: most labelled states kept (the replay memory).
        batch_size: minibatch size.
        learning_rate: Adam learning rate of the student.
        distillation_loss: loss name or object for ``tfkd.Distiller`` (None: its
            default, the soft-target KL on logits). For a DQN teacher's
            Q-values, ``"q_value_kl"`` sharpens them with a low temperature
            as in Rusu et al. 2016.
        temperature: temperature of a named KL loss (None: the loss's default).
        epsilon: probability of a random action by the control policy.
        num_envs: environments stepped in parallel.
        eval_episodes: episodes of the greedy student evaluated after a round
            (0: never).
        eval_every: evaluate every this many rounds (and after the last).
        target_return: stop once the evaluated student reaches this mean return.
        keep_best: at the end, restore the student weights of the round with
            the best evaluated return (model selection on the evaluation
            seeds ``seed, seed + 1, ...``; report results on other seeds).
        seed: seeds envs, sampling and shuffling.
        progress: show a tqdm bar over rounds.
    """

    env_id: str = "CartPole-v1"
    total_env_steps: int = 20_000
    steps_per_round: int = 2_000
    train_steps_per_round: int = 500
    buffer_capacity: int = 100_000
    batch_size: int = 64
    learning_rate: float = 1e-3
    temperature: float | None = None
    distillation_loss: Any = None
    epsilon: float = 0.0
    num_envs: int = 8
    eval_episodes: int = 10
    eval_every: int = 1
    target_return: float | None = None
    keep_best: bool = False
    seed: int = 0
    progress: bool = True

    replacement = "fifo"

    def beta(self, round_index: int) -> float:
        """The teacher always acts."""
        return 1.0


@dataclass
class StudentDrivenConfig(TeacherDrivenConfig):
    """Settings of student-driven (DAgger) distillation.

    Adds the β schedule β_i = max(beta_min, beta_initial · beta_decay^i): round 0
    is pure teacher data when ``beta_initial = 1`` (Ross et al. 2011 use
    β_i = p^(i-1)); β = 0 throughout is the "student-driven" setting that
    Czarnecki et al. 2019 recommend.
    """

    beta_initial: float = 1.0
    beta_decay: float = 0.5
    beta_min: float = 0.0

    replacement = "reservoir"

    def beta(self, round_index: int) -> float:
        return max(self.beta_min, self.beta_initial * self.beta_decay**round_index)


@dataclass
class DistillationHistory:
    """One entry per round; ``student_return_*`` are NaN where not evaluated.

    ``kept_round`` is the round whose weights the student ends with (the last
    one, or the best evaluated one with ``keep_best``).
    """

    env_steps: list[int] = field(default_factory=list)
    wall_time_s: list[float] = field(default_factory=list)
    beta: list[float] = field(default_factory=list)
    buffer_size: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    agreement: list[float] = field(default_factory=list)
    control_return: list[float] = field(default_factory=list)
    student_return_mean: list[float] = field(default_factory=list)
    student_return_std: list[float] = field(default_factory=list)
    kept_round: int = -1

    def as_dict(self) -> dict[str, list]:
        return asdict(self)

    @property
    def num_rounds(self) -> int:
        return len(self.env_steps)


def distill_teacher_driven(
    teacher: Network, student: keras.Model, config: TeacherDrivenConfig
) -> DistillationHistory:
    """Distils ``teacher`` into ``student`` on states the teacher visits (Rusu et al. 2016).

    The student is trained in place. Returns the per-round history.
    """
    return _distill(teacher, student, config)


def distill_student_driven(
    teacher: Network, student: keras.Model, config: StudentDrivenConfig
) -> DistillationHistory:
    """Distils ``teacher`` into ``student`` on states a β-mixture visits (DAgger).

    The student is trained in place. Returns the per-round history.
    """
    if not isinstance(config, StudentDrivenConfig):
        raise TypeError("distill_student_driven needs a StudentDrivenConfig.")
    return _distill(teacher, student, config)


def _distill(teacher, student, config: TeacherDrivenConfig) -> DistillationHistory:
    from tfkd.distillation import Distiller

    if config.steps_per_round < 1 or config.total_env_steps < config.steps_per_round:
        raise ValueError(
            f"need 1 <= steps_per_round ({config.steps_per_round}) <= total_env_steps "
            f"({config.total_env_steps})."
        )
    env = make_vector_env(config.env_id, config.num_envs)
    spec = env_spec(env, config.env_id)
    check_discrete(env.single_action_space, config.env_id)
    student_outputs = network_outputs(student, spec.num_actions)
    teacher_outputs = network_outputs(teacher, spec.num_actions)
    collector = RolloutCollector(env, teacher_outputs, seed=config.seed)
    buffer = DistillationBuffer(
        config.buffer_capacity,
        spec.observation_shape,
        spec.num_actions,
        observation_dtype=spec.observation_dtype,
        replacement=config.replacement,
        seed=config.seed,
    )
    distiller = Distiller(
        student,
        teacher=None,
        distillation_loss=config.distillation_loss,
        temperature=config.temperature,
    )
    distiller.compile(optimizer=keras.optimizers.Adam(config.learning_rate))

    mixture = MixturePolicy(GreedyPolicy(teacher_outputs), GreedyPolicy(student_outputs), 1.0)
    control: Policy = mixture
    if config.epsilon > 0:
        control = EpsilonGreedyPolicy(mixture, spec.num_actions, config.epsilon)

    history = DistillationHistory()
    best_return, best_weights = -math.inf, None
    num_rounds = math.ceil(config.total_env_steps / config.steps_per_round)
    start = time.perf_counter()
    bar = tqdm(range(num_rounds), desc=f"distil {config.env_id}", disable=not config.progress)
    try:
        for round_index in bar:
            mixture.beta = config.beta(round_index)
            rollout = collector.collect(control, config.steps_per_round)
            buffer.add(rollout.observations, rollout.teacher_outputs)
            dataset = buffer.as_dataset(config.batch_size, seed=config.seed + round_index)
            fit = distiller.fit(
                dataset.repeat(),
                steps_per_epoch=config.train_steps_per_round,
                epochs=1,
                shuffle=False,
                verbose=0,
            )
            history.env_steps.append(collector.total_steps)
            history.beta.append(mixture.beta)
            history.buffer_size.append(len(buffer))
            history.loss.append(float(fit.history["loss"][-1]))
            history.agreement.append(
                action_agreement(teacher_outputs, student_outputs, rollout.observations)
            )
            history.control_return.append(
                float(np.mean(rollout.episode_returns)) if rollout.episode_returns else math.nan
            )
            evaluate = _evaluates(config, round_index, num_rounds)
            mean, std = _student_return(config, student_outputs) if evaluate else (math.nan,) * 2
            history.student_return_mean.append(mean)
            history.student_return_std.append(std)
            history.wall_time_s.append(time.perf_counter() - start)
            history.kept_round = round_index
            if evaluate and mean >= best_return:  # ties: the later, longer-trained round
                best_return, best_weights, best_round = mean, student.get_weights(), round_index
            bar.set_postfix(
                steps=collector.total_steps,
                loss=f"{history.loss[-1]:.4f}",
                agree=f"{history.agreement[-1]:.3f}",
                ret=f"{mean:.1f}",
            )
            if evaluate and config.target_return is not None and mean >= config.target_return:
                break
        if config.keep_best and best_weights is not None:
            student.set_weights(best_weights)
            history.kept_round = best_round
    finally:
        bar.close()
        env.close()
    return history


def _evaluates(config: TeacherDrivenConfig, round_index: int, num_rounds: int) -> bool:
    """Whether the student is evaluated after this round (every ``eval_every``, and last)."""
    last = round_index == num_rounds - 1
    return config.eval_episodes > 0 and (last or (round_index + 1) % config.eval_every == 0)


def _student_return(config: TeacherDrivenConfig, student_outputs) -> tuple[float, float]:
    """Mean and std of the greedy student's return on the selection seeds."""
    stats = evaluate_policy(
        config.env_id, GreedyPolicy(student_outputs), config.eval_episodes, seed=config.seed
    )
    return stats.mean, stats.std


def plot_history(histories: dict[str, DistillationHistory], path: str, title: str = "") -> None:
    """Plots student return (± std) and agreement against env steps to a PNG.

    Args:
        histories: label -> history, e.g. ``{"teacher-driven": h1, "student-driven": h2}``.
        path: output file (PNG).
        title: figure title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (returns_axis, agreement_axis) = plt.subplots(1, 2, figsize=(11, 4))
    for label, history in histories.items():
        steps = np.asarray(history.env_steps)
        mean = np.asarray(history.student_return_mean)
        std = np.asarray(history.student_return_std)
        evaluated = ~np.isnan(mean)
        returns_axis.plot(steps[evaluated], mean[evaluated], marker="o", label=label)
        returns_axis.fill_between(
            steps[evaluated], (mean - std)[evaluated], (mean + std)[evaluated], alpha=0.2
        )
        agreement_axis.plot(steps, history.agreement, marker=".", label=label)
    returns_axis.set(xlabel="env steps", ylabel="student return", title="return")
    agreement_axis.set(xlabel="env steps", ylabel="agreement with teacher", title="agreement")
    for axis in (returns_axis, agreement_axis):
        axis.grid(alpha=0.3)
        axis.legend()
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
