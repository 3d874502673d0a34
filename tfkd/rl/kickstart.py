"""Kickstarting: a DQN student trained on its own TD loss plus a scheduled distillation term.

The student is tfkd's DQN (:func:`tfkd.rl.dqn.train_dqn`) with one extra
loss: for a replay minibatch,

    L = L_TD(θ) + λ_t · mean_i D(q_teacher(s_i), q_θ(s_i))

so the teacher shapes the student early and the student's own RL signal
takes over as λ_t falls, letting it pass an imperfect teacher (Schmitt et
al. 2018, "Kickstarting Deep Reinforcement Learning"; Agarwal et al. 2022,
"Reincarnating Reinforcement Learning"). D is one of:

- ``kl`` (QDagger: coefficient 3, T = 0.1):
  KL(softmax(q_teacher / T) ‖ softmax(q_θ / T)). At a low T it asks for the
  teacher's greedy action with a wide margin, whatever the TD loss says.
- ``centered_mse``: mean_a ((q_θ,a − mean q_θ) − (q_teacher,a − mean q_teacher))²,
  the KL's limit at high T scaled by 2T² (Hinton et al. 2015, §2.1;
  :func:`tfkd.losses.centered_logits_mse`). It matches the teacher's
  advantages, not its state values, which the TD loss learns for the
  student's own policy.

Both are batch *means* (CleanRL's QDagger sums over the batch, which scales
the term with the batch size).

λ_t = coefficient · s_t, with the schedule s_t one of:

- ``constant``:    s_t = 1
- ``linear``:      s_t = max(0, 1 − t / decay_steps)        (QDagger's linear decay)
- ``exponential``: s_t = 2^(−t / half_life)
- ``gated``:       s_t = clip(1 − score_s, 0, 1), score_s = (G_s − G_random) / (G_teacher − G_random)
  the student's normalised score at its latest evaluation (1 before the first).
  CleanRL's QDagger gate is max(1 − G_s / G_t, 0); on the normalised score
  it is the same when G_random = 0 and stays right when returns can be
  negative (LunarLander), where a raw ratio of returns is meaningless.

Which episodes the gate uses: the student's G_s is the mean return of the
evaluation that keep-best already runs, on ``selection_seeds(seed,
eval_episodes)``; G_teacher and G_random are measured once on the same
seeds. The gate is a decision taken during training, like keep-best, so it
belongs on the selection range: the held-out seeds
(``held_out_seeds``) stay unseen until the final report, and no third
seed range is needed (the gate and keep-best may share episodes: neither
touches the reported ones).

Offline phase (optional, QDagger's "offline pre-training"): before the online
phase the teacher acts ε-greedily (ε = ``epsilon_final``) for
``offline_env_steps`` env steps, which count against the run's budget and fill
the replay memory; the student then takes ``offline_updates`` gradient steps
of the same loss with s_t = 1 on that data.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfkd import files
from tfkd.losses import centered_logits_mse, soft_target_kl
from tfkd.rl import evaluation
from tfkd.rl.dqn import DQNConfig, DQNHistory, train_dqn
from tfkd.rl.envs import env_spec, make_env, make_vector_env
from tfkd.rl.policies import EpsilonGreedyPolicy, GreedyPolicy, Network, network_outputs

SCHEDULES = ("constant", "linear", "exponential", "gated")
LOSSES = ("kl", "centered_mse")


# ------------------------------------------------------------------ the maths


def linear_decay(step: float, decay_steps: float) -> float:
    """``max(0, 1 − step / decay_steps)``: 1 at step 0, 0 from ``decay_steps`` on."""
    return max(0.0, 1.0 - float(step) / float(decay_steps))


def exponential_decay(step: float, half_life: float) -> float:
    """``2^(−step / half_life)``: halves every ``half_life`` env steps."""
    return 2.0 ** (-float(step) / float(half_life))


def performance_gate(score: float | None) -> float:
    """``clip(1 − score, 0, 1)`` of the student's normalised score (1 when not measured yet).

    CleanRL's QDagger gate ``max(1 − G_s / G_teacher, 0)`` on the normalised
    score ``(G − G_random) / (G_teacher − G_random)``.
    """
    if score is None or not math.isfinite(score):
        return 1.0
    return min(1.0, max(0.0, 1.0 - float(score)))


def distillation_loss(teacher_q_values, student_q_values, temperature: float = 0.1):
    """QDagger's distillation loss, a batch mean:

        mean_i KL(softmax(q_teacher_i / T) ‖ softmax(q_student_i / T))

    (Agarwal et al. 2022, "Reincarnating Reinforcement Learning", T = 0.1).
    No T² factor: the coefficient λ sets the scale. No gradient flows to the teacher.
    """
    return tf.reduce_mean(soft_target_kl(teacher_q_values, student_q_values, temperature,
                                         scale_by_temperature_squared=False))


def advantage_loss(teacher_q_values, student_q_values):
    """The teacher's advantages, a batch mean:

        mean_i mean_a ((q_student,ia − mean_b q_student,ib) − (q_teacher,ia − mean_b q_teacher,ib))²

    :func:`distillation_loss`'s limit at high T, times 2T² (Hinton et al.
    2015, §2.1). No gradient flows to the teacher.
    """
    return tf.reduce_mean(centered_logits_mse(teacher_q_values, student_q_values))


# ------------------------------------------------------------------ settings


@dataclass
class KickstartConfig:
    """The distillation term of a kickstarted DQN student.

    The defaults are the best of ``benchmarks/kickstart.py`` on LunarLander-v3
    (docs/kickstarting.md); QDagger's settings are ``schedule="linear",
    coefficient=3.0, loss="kl"`` (temperature 0.1).

    Attributes:
        schedule: "constant", "linear", "exponential" or "gated" (module docstring).
        coefficient: λ's scale (QDagger: 3.0 with its "kl").
        loss: "centered_mse" or "kl" (QDagger's) (module docstring).
        temperature: T of both softmaxes of "kl" (QDagger: 0.1).
        decay_steps: env steps over which "linear" reaches 0 (None: half the run).
        half_life: env steps per halving of "exponential" (None: a tenth of the run).
        offline_env_steps: env steps of teacher-collected data before the online
            phase (0: no offline phase); they count against ``total_env_steps``.
        offline_updates: gradient steps on that data (with λ = coefficient).
    """

    schedule: str = "exponential"
    coefficient: float = 1.0
    loss: str = "centered_mse"
    temperature: float = 0.1
    decay_steps: int | None = None
    half_life: int | None = None
    offline_env_steps: int = 0
    offline_updates: int = 0

    def check(self, dqn: DQNConfig) -> None:
        """Raises ``ValueError`` for settings that cannot run with ``dqn``."""
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, "
                             f"got {self.schedule!r}.")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {self.loss!r}.")
        for name in ("coefficient", "temperature"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"KickstartConfig.{name} must be a finite number > 0, "
                                 f"got {value!r}.")
        for name in ("decay_steps", "half_life"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < 1):
                raise ValueError(f"KickstartConfig.{name} must be an integer >= 1 or None, "
                                 f"got {value!r}.")
        for name in ("offline_env_steps", "offline_updates"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"KickstartConfig.{name} must be an integer >= 0, "
                                 f"got {value!r}.")
        if self.offline_env_steps >= dqn.total_env_steps:
            raise ValueError(f"offline_env_steps ({self.offline_env_steps}) must be below the "
                             f"run's total_env_steps ({dqn.total_env_steps}).")
        if self.offline_updates and not self.offline_env_steps:
            raise ValueError("offline_updates needs offline_env_steps > 0 (data to train on).")
        if self.schedule == "gated" and dqn.eval_episodes < 1:
            raise ValueError("the gated schedule measures the student on its evaluations: "
                             "eval_episodes must be >= 1.")

    def as_dict(self) -> dict:
        return files.strict_json(dataclasses.asdict(self))


class DistillationTerm:
    """The teacher, the loss settings and λ_t of one kickstarted run (given to ``train_dqn``).

    Args:
        teacher: network observations -> Q-values (no gradient).
        config: the :class:`KickstartConfig`.
        total_env_steps: the run's budget (sets the default decay lengths).
        teacher_return, random_return: G_teacher and G_random on the run's
            selection episodes (the gate's and the logged score's reference).
    """

    def __init__(self, teacher: Network, config: KickstartConfig, total_env_steps: int,
                 teacher_return: float | None = None, random_return: float | None = None):
        self.teacher = teacher
        self.config = config
        self.temperature = float(config.temperature)
        self.decay_steps = config.decay_steps or max(1, total_env_steps // 2)
        self.half_life = config.half_life or max(1, total_env_steps // 10)
        self.teacher_return, self.random_return = teacher_return, random_return
        self.last_score: float | None = None

    def loss(self, teacher_q_values, student_q_values):
        if self.config.loss == "centered_mse":
            return advantage_loss(teacher_q_values, student_q_values)
        return distillation_loss(teacher_q_values, student_q_values, self.temperature)

    def schedule(self, step: int) -> float:
        """s_t in [0, 1] at env step ``step`` (see the module docstring)."""
        kind = self.config.schedule
        if kind == "constant":
            return 1.0
        if kind == "linear":
            return linear_decay(step, self.decay_steps)
        if kind == "exponential":
            return exponential_decay(step, self.half_life)
        return performance_gate(self.last_score)

    def weight(self, step: int) -> float:
        """λ_t = coefficient · s_t."""
        return float(self.config.coefficient) * self.schedule(step)

    def score(self, student_return: float) -> float | None:
        """The normalised score of a selection-episode return (None without references)."""
        if self.teacher_return is None or self.random_return is None:
            return None
        return evaluation.normalized_score(student_return, self.random_return,
                                           self.teacher_return)

    def observe(self, history: DQNHistory) -> None:
        """Takes the latest evaluation's return as G_s (the gate's input)."""
        if history.eval_return_mean:
            self.last_score = self.score(history.eval_return_mean[-1])

    def offline_phase(self, config: DQNConfig, replay: Any, update, rng: np.random.Generator,
                      spec) -> int:
        """Fills ``replay`` with teacher-collected transitions and pre-trains on them.

        Returns:
            The env steps taken (counted in the run's budget).
        """
        steps = self.config.offline_env_steps
        if not steps:
            return 0
        env = make_vector_env(config.env_id, config.num_envs)
        teacher = EpsilonGreedyPolicy(GreedyPolicy(network_outputs(self.teacher,
                                                                   spec.num_actions)),
                                      spec.num_actions, config.epsilon_final)
        taken = 0
        try:
            observations, _ = env.reset(seed=int(rng.integers(2**31)))
            while taken < steps:
                observations, _, _ = replay.step(env, observations, teacher(observations, rng))
                taken += config.num_envs
        finally:
            env.close()
        weight = tf.constant(float(self.config.coefficient))
        for _ in range(self.config.offline_updates):
            batch = map(tf.constant, replay.sample(config.batch_size))
            update(*batch, weight)
        return taken


# ------------------------------------------------------------------ the API


def kickstart(teacher: Network, student: keras.Model, config: DQNConfig,
              kickstart_config: KickstartConfig | None = None,
              out_dir: str | None = None) -> DQNHistory:
    """Trains ``student`` with DQN plus the scheduled distillation term to ``teacher``.

    Args:
        teacher: network observations -> Q-values (a DQN teacher).
        student: Keras model observations -> Q-values, trained in place.
        config: the student's DQN settings (replay, target network, ε, evaluations,
            keep-best, checkpoints, TensorBoard: see :class:`tfkd.rl.dqn.DQNConfig`).
        kickstart_config: the distillation term (default: ``KickstartConfig()``).
        out_dir: save the student there as a teacher folder (None: don't).

    Returns:
        The :class:`~tfkd.rl.dqn.DQNHistory`; its ``eval_lambda``,
        ``eval_distillation_loss`` and ``eval_normalized_score`` follow each evaluation.
    """
    kickstart_config = kickstart_config or KickstartConfig()
    config.check()
    kickstart_config.check(config)
    teacher_return = random_return = None
    if config.eval_episodes:
        seeds = evaluation.selection_seeds(config.seed, config.eval_episodes)
        env = make_env(config.env_id)
        num_actions = env_spec(env, config.env_id).num_actions
        env.close()
        teacher_return = evaluation.evaluate_policy(
            config.env_id, network_outputs(teacher, num_actions), seeds).mean
        random_return = evaluation.evaluate_policy(
            config.env_id, evaluation.random_policy(num_actions), seeds).mean
    term = DistillationTerm(teacher, kickstart_config, config.total_env_steps,
                            teacher_return, random_return)
    return train_dqn(student, config, out_dir=out_dir, distillation=term)
