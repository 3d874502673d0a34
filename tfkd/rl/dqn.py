"""A compact DQN in plain Keras 3: teacher training and the from-scratch baseline.

Double DQN (van Hasselt et al. 2016) with a Huber TD loss, a uniform replay
memory, a periodically updated target network and a linearly decaying ε
(Mnih et al. 2015, "Human-level control through deep reinforcement
learning"). The benchmark trains a student-sized network with it on the same
env-step budget that distillation gets, to show what distillation buys.

TD target for a transition (s, a, r, s', done):
    y = r + γ · (1 − terminated) · Q_target(s', argmax_a' Q(s', a'))
Truncated episodes (time limits) bootstrap from their real final observation.

:class:`DQNConfig` is the one configuration of both DQN backends:
:func:`train_dqn` here and ``tfkd.agents.train_dqn_teacher`` (TF-Agents).
Both select the kept weights on ``selection_seeds(config.seed, eval_episodes)``
episodes, checkpoint to ``checkpoint_dir`` and resume from it, report each
evaluation to Keras callbacks and TensorBoard, and save a teacher folder
(see :mod:`tfkd.rl.teacher_io`).

Determinism: the same config on the same machine gives the same weights and
history — ``seed`` fixes Python, NumPy and TensorFlow (``keras.utils.
set_random_seed``), env resets, ε draws and replay sampling. The network's
initial weights are the caller's: build it after seeding (``keras.utils.
set_random_seed(config.seed)``) for a reproducible teacher. A resumed run
restarts the episodes that were running when it stopped (env states are not
checkpointed), so it is reproducible but not identical to an uninterrupted one.

Kickstarting (:mod:`tfkd.rl.kickstart`) is this DQN with one extra loss: given
a ``distillation`` term, each update minimises ``L_TD + λ_t · L_distill`` to a
teacher's Q-values; the TD loss, replay, target network and ε are the same code.
The multi-task DQN (:mod:`tfkd.rl.multi_task_dqn`) runs one env side
(:class:`Explorer`), replay memory and :func:`td_loss` per task on one network.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Sequence

import keras
import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from tfkd.models import count_params
from tfkd import files
from tfkd.rl import evaluation, teacher_io
from tfkd.rl.envs import env_spec, make_vector_env
from tfkd.rl.policies import EpsilonGreedyPolicy, GreedyPolicy, network_outputs
from tfkd.rl.seeding import derived_seed


# The logs each evaluation hands to callbacks, in this order.
LOG_KEYS = ("return", "return_std", "best_return", "env_steps", "loss", "epsilon")
# ... and, with a distillation term (kickstarting), these too.
DISTILLATION_LOG_KEYS = ("distillation_loss", "lambda", "normalized_score")


@dataclass
class DQNConfig:
    """Settings of a DQN teacher, for :func:`train_dqn` and ``tfkd.agents.train_dqn_teacher``.

    Step counts are env steps (all envs together) in both backends.

    Attributes:
        env_id: gymnasium id.
        hidden_units: hidden layer sizes of the Q-network's dense part. TF-Agents
            builds its ``QNetwork`` from it; :func:`train_dqn` trains the network it
            is given and records this in ``teacher.json`` only.
        total_env_steps: env steps of training (a resumed run counts the steps
            already taken).
        num_envs: envs stepped in parallel. Keras only (TF-Agents steps one env).
        buffer_capacity: replay memory size (transitions).
        batch_size: minibatch size.
        learning_rate: Adam learning rate.
        gamma: discount.
        learning_starts: env steps of uniformly random play before updates begin.
        train_every: env steps between rounds of updates.
        gradient_steps: updates per round.
        target_update_every: env steps between target-network updates.
        target_update_tau: weight of the online network in each target update
            (1.0: a hard copy).
        double_q: double-DQN targets (False: the target network's max).
        n_step_update: length of the n-step TD return. TF-Agents only; the Keras
            backend accepts 1 only.
        epsilon_initial, epsilon_final: ε schedule end points.
        epsilon_fraction: fraction of ``total_env_steps`` over which ε decays
            linearly (Keras: counted from step 0; TF-Agents: from the end of
            ``learning_starts``).
        max_grad_norm: gradient clipping by global norm (None: no clipping).
        eval_every: env steps between greedy evaluations (0: only at the end).
        eval_episodes: episodes per evaluation, on ``selection_seeds(seed,
            eval_episodes)``. 0: no evaluations (the last weights are kept; each
            ``eval_every`` still checkpoints).
        keep_best: end with (and save) the weights of the best evaluation; False:
            the last weights.
        target_return: stop early once an evaluation's mean return reaches this
            (None: train for ``total_env_steps``).
        seed: fixes initialisation (with the caller's seeding for Keras),
            env resets, ε draws, replay sampling and evaluation episodes.
        checkpoint_dir: checkpoint after every evaluation; a run given a folder
            that holds a checkpoint resumes from it (a finished run only
            restores its best weights). None: no checkpoints.
        tensorboard_dir: ``tf.summary`` scalars per evaluation (return,
            best_return, loss, epsilon; step = env steps). None: none.
        callbacks: ``keras.callbacks.Callback`` objects; ``on_train_begin``,
            ``on_epoch_end(eval_index, logs)`` after each evaluation with logs
            ``return``, ``return_std``, ``best_return``, ``env_steps``, ``loss``
            (mean since the previous evaluation; NaN before learning starts),
            ``epsilon``; ``on_train_end``. Not saved in configs.
        progress: show a tqdm bar.
    """

    env_id: str = "CartPole-v1"
    hidden_units: tuple[int, ...] = (256, 256)
    total_env_steps: int = 50_000
    num_envs: int = 4
    buffer_capacity: int = 50_000
    batch_size: int = 64
    learning_rate: float = 1e-3
    gamma: float = 0.99
    learning_starts: int = 1_000
    train_every: int = 4
    gradient_steps: int = 1
    target_update_every: int = 500
    target_update_tau: float = 1.0
    double_q: bool = True
    n_step_update: int = 1
    epsilon_initial: float = 1.0
    epsilon_final: float = 0.05
    epsilon_fraction: float = 0.2
    max_grad_norm: float | None = 10.0
    eval_every: int = 10_000
    eval_episodes: int = 10
    keep_best: bool = True
    target_return: float | None = None
    seed: int = 0
    checkpoint_dir: str | None = None
    tensorboard_dir: str | None = None
    callbacks: Sequence[Any] = ()
    progress: bool = True

    def epsilon(self, env_step: int) -> float:
        """Linear decay from ``epsilon_initial`` to ``epsilon_final``."""
        fraction = min(1.0, env_step / max(1.0, self.epsilon_fraction * self.total_env_steps))
        return self.epsilon_initial + fraction * (self.epsilon_final - self.epsilon_initial)

    def check(self) -> None:
        """Raises ``ValueError`` for a setting no backend can run."""
        for name in ("total_env_steps", "num_envs", "buffer_capacity", "batch_size",
                     "train_every", "gradient_steps", "target_update_every", "n_step_update"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"DQNConfig.{name} must be an integer >= 1, got {value!r}.")
        for name in ("learning_starts", "eval_every", "eval_episodes", "seed"):
            if getattr(self, name) < 0:
                raise ValueError(f"DQNConfig.{name} must be >= 0, got {getattr(self, name)!r}.")
        if not 0.0 < self.target_update_tau <= 1.0:
            raise ValueError(f"DQNConfig.target_update_tau must be in (0, 1], "
                             f"got {self.target_update_tau!r}.")
        if self.target_return is not None and not np.isfinite(self.target_return):
            raise ValueError(f"DQNConfig.target_return must be finite, got {self.target_return}.")
        files.check_directory(self.checkpoint_dir, "checkpoint_dir")
        files.check_directory(self.tensorboard_dir, "tensorboard_dir")

    def as_dict(self) -> dict:
        """The settings as strict JSON (without ``callbacks``)."""
        return files.strict_json(
            {f.name: getattr(self, f.name) for f in fields(self) if f.name != "callbacks"})

    def check_resumable(self, saved: dict) -> None:
        """Raises ``ValueError`` unless a checkpoint with config ``saved`` can resume this run.

        Every setting that shapes training must match; the budget
        (``total_env_steps``, ``target_return``) may grow and the watching
        settings (progress bar, folders) may change.
        """
        free = {"total_env_steps", "target_return", "progress", "checkpoint_dir",
                "tensorboard_dir"}
        ours = self.as_dict()
        differ = sorted(key for key in set(ours) | set(saved)
                        if key not in free and ours.get(key) != saved.get(key))
        if differ:
            raise ValueError(f"it was written by a run with other settings ({', '.join(differ)})")


@dataclass
class DQNHistory:
    """Returns of training episodes and of greedy evaluations (both backends).

    ``episode_end_steps`` / ``episode_returns`` (training episodes) are
    recorded by the Keras backend only; the evaluations by both.

    ``as_dict`` is strict JSON: a missing value (no loss yet, no evaluation)
    is null, never NaN or Infinity.
    """

    episode_end_steps: list[int] = field(default_factory=list)
    episode_returns: list[float] = field(default_factory=list)
    eval_steps: list[int] = field(default_factory=list)
    eval_return_mean: list[float] = field(default_factory=list)
    eval_return_std: list[float] = field(default_factory=list)
    eval_loss: list[float | None] = field(default_factory=list)
    eval_epsilon: list[float] = field(default_factory=list)
    selection_seeds: list[int] = field(default_factory=list)
    # Kickstarting only (empty without a distillation term): per evaluation, the
    # mean distillation loss, λ_t and the normalised score on the selection episodes.
    eval_distillation_loss: list[float | None] = field(default_factory=list)
    eval_lambda: list[float] = field(default_factory=list)
    eval_normalized_score: list[float | None] = field(default_factory=list)
    best_return: float | None = None
    best_step: int | None = None
    wall_time_s: float = 0.0
    env_steps: int = 0

    def as_dict(self) -> dict:
        return files.strict_json(asdict(self))

    @classmethod
    def from_dict(cls, values: dict) -> "DQNHistory":
        names = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in values.items() if key in names})

    def append_evaluation(self, step: int, stats: Any, loss: float | None,
                          epsilon: float) -> None:
        """Appends one evaluation (``stats``: its ``ReturnStats``), leaving the best as it is."""
        self.eval_steps.append(int(step))
        self.eval_return_mean.append(float(stats.mean))
        self.eval_return_std.append(float(stats.std))
        self.eval_loss.append(None if loss is None or not np.isfinite(loss) else float(loss))
        self.eval_epsilon.append(float(epsilon))

    def record_evaluation(self, step: int, stats: Any, loss: float | None, epsilon: float) -> bool:
        """Appends one evaluation; True if it is the best so far."""
        self.append_evaluation(step, stats, loss, epsilon)
        if self.best_return is None or stats.mean > self.best_return:
            self.best_return, self.best_step = float(stats.mean), int(step)
            return True
        return False


class TrainingReporter:
    """Reports each evaluation of a DQN run: Keras callbacks, TensorBoard, the progress bar.

    Args:
        config: the run's :class:`DQNConfig` (``callbacks``, ``tensorboard_dir``).
        model: handed to the callbacks' ``set_model`` (a Keras 3 model), or None.
    """

    def __init__(self, config: DQNConfig, model: Any = None):
        self.callbacks = list(config.callbacks)
        for callback in self.callbacks:
            if model is not None and hasattr(callback, "set_model"):
                callback.set_model(model)
        self.writer = (tf.summary.create_file_writer(config.tensorboard_dir)
                       if config.tensorboard_dir else None)
        self._losses: list[float] = []
        self._distillation_losses: list[float] = []

    def add_loss(self, loss: float, distillation_loss: float | None = None) -> None:
        for name, value in (("TD loss", loss), ("distillation loss", distillation_loss)):
            if value is not None and not np.isfinite(value):
                raise teacher_io.NonFiniteError(
                    f"the {name} became {value}: training diverged. Nothing was saved; lower "
                    "the learning rate or set max_grad_norm.")
        self._losses.append(float(loss))
        if distillation_loss is not None:
            self._distillation_losses.append(float(distillation_loss))

    def take_mean_loss(self) -> float | None:
        """Mean TD loss since the last call (None if no update ran)."""
        mean = float(np.mean(self._losses)) if self._losses else None
        self._losses = []
        return mean

    def take_mean_distillation_loss(self) -> float | None:
        """Mean distillation loss since the last call (None if none ran)."""
        values, self._distillation_losses = self._distillation_losses, []
        return float(np.mean(values)) if values else None

    def train_begin(self) -> None:
        for callback in self.callbacks:
            callback.on_train_begin({})

    def evaluation(self, history: DQNHistory) -> None:
        index = len(history.eval_steps) - 1
        loss = history.eval_loss[-1]
        logs = {"return": history.eval_return_mean[-1], "return_std": history.eval_return_std[-1],
                "best_return": history.best_return, "env_steps": history.eval_steps[-1],
                "loss": float("nan") if loss is None else loss,
                "epsilon": history.eval_epsilon[-1]}
        if history.eval_lambda:
            distillation_loss, score = (history.eval_distillation_loss[-1],
                                        history.eval_normalized_score[-1])
            logs.update({"distillation_loss": float("nan") if distillation_loss is None
                         else distillation_loss, "lambda": history.eval_lambda[-1],
                         "normalized_score": float("nan") if score is None else score})
        if self.writer is not None:
            with self.writer.as_default():
                for name, value in logs.items():
                    if name != "env_steps":
                        tf.summary.scalar(name, value, step=history.eval_steps[-1])
            self.writer.flush()
        for callback in self.callbacks:
            callback.on_epoch_end(index, dict(logs))

    def train_end(self) -> None:
        for callback in self.callbacks:
            callback.on_train_end({})
        if self.writer is not None:
            self.writer.close()


class Replay:
    """Uniform replay memory of (s, a, r, s', terminated)."""

    FIELDS = ("observations", "next_observations", "actions", "rewards", "terminated")

    def __init__(self, capacity, observation_shape, observation_dtype, rng):
        self.observations = np.zeros((capacity, *observation_shape), observation_dtype)
        self.next_observations = np.zeros_like(self.observations)
        self.actions = np.zeros(capacity, np.int32)
        self.rewards = np.zeros(capacity, np.float32)
        self.terminated = np.zeros(capacity, np.float32)
        self.capacity, self.size, self.cursor, self.rng = capacity, 0, 0, rng

    def add(self, observations, actions, rewards, next_observations, terminated):
        index = (self.cursor + np.arange(len(actions))) % self.capacity
        self.observations[index], self.actions[index] = observations, actions
        self.rewards[index] = rewards
        self.next_observations[index], self.terminated[index] = next_observations, terminated
        self.cursor = (self.cursor + len(actions)) % self.capacity
        self.size = min(self.capacity, self.size + len(actions))

    def step(self, env, observations, actions):
        """Steps the vector env and stores the transitions; returns (next observations,
        rewards, done). A finished episode's transition keeps its real final
        observation (same-step autoreset has already reset the env), which a
        truncated episode bootstraps from."""
        next_observations, rewards, terminated, truncated, infos = env.step(actions)
        done = np.logical_or(terminated, truncated)
        final_observations = next_observations.copy()
        if done.any():
            final_observations[done] = np.stack(infos["final_obs"][done])
        self.add(observations, actions, rewards, final_observations, terminated)
        return next_observations, rewards, done

    def sample(self, batch_size):
        index = self.rng.integers(self.size, size=batch_size)
        return (self.observations[index], self.actions[index], self.rewards[index],
                self.next_observations[index], self.terminated[index])

    def save(self, path):
        files.write_npz(path, size=self.size, cursor=self.cursor,
                             **{name: getattr(self, name) for name in self.FIELDS})

    def load(self, path):
        with np.load(path, allow_pickle=False) as saved:
            for name in self.FIELDS:
                if saved[name].shape != getattr(self, name).shape:
                    raise ValueError(
                        f"the checkpoint's replay memory holds {name} of shape "
                        f"{saved[name].shape}, this run needs {getattr(self, name).shape} "
                        "(another env or buffer_capacity)")
                setattr(self, name, saved[name].astype(getattr(self, name).dtype))
            self.size, self.cursor = int(saved["size"]), int(saved["cursor"])


class Explorer:
    """One env's side of a DQN run: its vector env, the ε-greedy policy of the
    online network, the replay memory it fills and its training episodes.

    Args:
        env: the vector env (``config.num_envs`` envs).
        config: the run's settings (ε schedule, ``learning_starts``, ``num_envs``).
        q_outputs: the online network's outputs (:func:`network_outputs`).
        replay: the memory the transitions go to.
        rng: draws the ε-greedy actions.
        history: gets each finished training episode.
        reset_seed: seeds the envs' first episodes.
    """

    def __init__(self, env, config: DQNConfig, q_outputs, replay: Replay,
                 rng: np.random.Generator, history: DQNHistory, reset_seed: int):
        self.env, self.config, self.replay, self.rng, self.history = (
            env, config, replay, rng, history)
        self.explore = EpsilonGreedyPolicy(GreedyPolicy(q_outputs), q_outputs.num_actions,
                                           config.epsilon_initial)
        self.returns = np.zeros(config.num_envs)
        self.observations, _ = env.reset(seed=reset_seed)

    def step(self, step: int) -> int:
        """Steps every env once at ``step`` env steps; returns the new count.

        Play is uniformly random (ε = 1) before ``learning_starts``, then follows
        the ε schedule.
        """
        config = self.config
        self.explore.epsilon = 1.0 if step < config.learning_starts else config.epsilon(step)
        actions = self.explore(self.observations, self.rng)
        self.observations, rewards, done = self.replay.step(self.env, self.observations, actions)
        self.returns += rewards
        step += config.num_envs
        for i in np.flatnonzero(done):
            self.history.episode_end_steps.append(step)
            self.history.episode_returns.append(float(self.returns[i]))
            self.returns[i] = 0.0
        return step


@dataclass
class _State:
    """What a checkpoint holds besides weights, optimizer and replay memory."""

    step: int = 0
    next_train: int = 0
    next_target: int = 0
    next_eval: int | None = None
    history: DQNHistory = field(default_factory=DQNHistory)
    best_weights: list | None = None
    wall_time_s: float = 0.0
    last_checked: int | None = None  # env step of the last evaluation / checkpoint


def train_dqn(q_network: keras.Model, config: DQNConfig, out_dir: str | None = None,
              distillation: Any = None) -> DQNHistory:
    """Trains ``q_network`` in place with double DQN on ``config.env_id``.

    Args:
        q_network: a Keras model observations -> Q-values (e.g.
            ``tfkd.models.build_mlp(..., hidden_units=config.hidden_units)``).
        config: the settings (see :class:`DQNConfig`).
        out_dir: save the teacher there (:func:`save_dqn_teacher`); None: don't.
        distillation: a :class:`tfkd.rl.kickstart.DistillationTerm` (kickstarting:
            ``L_TD + λ_t · L_distill`` per update, λ_t and the loss logged per
            evaluation; see :func:`tfkd.rl.kickstart.kickstart`), or None: plain DQN.

    Returns:
        The training history; with ``keep_best`` the network ends with the
        weights of its best evaluation.

    Raises:
        ValueError: for a bad config or a checkpoint that does not fit this run.
        tfkd.rl.teacher_io.NonFiniteError: if the loss or the weights go NaN / inf.
    """
    config.check()
    if config.n_step_update != 1:
        raise ValueError("the Keras DQN takes n_step_update=1 only (TF-Agents takes more).")
    files.check_directory(out_dir, "out_dir")
    keras.utils.set_random_seed(config.seed)
    env = make_vector_env(config.env_id, config.num_envs)
    spec = env_spec(env, config.env_id)
    q_outputs = network_outputs(q_network, spec.num_actions)
    target_network = keras.models.clone_model(q_network)
    target_network.set_weights(q_network.get_weights())
    optimizer = keras.optimizers.Adam(config.learning_rate, global_clipnorm=config.max_grad_norm)
    optimizer.build(q_network.trainable_variables)
    update = _make_update(q_network, target_network, optimizer, config.gamma, spec,
                          config.double_q, distillation)
    rng = np.random.default_rng(config.seed)
    replay = Replay(config.buffer_capacity, spec.observation_shape, spec.observation_dtype, rng)
    seeds = evaluation.selection_seeds(config.seed, config.eval_episodes)
    state = _State(next_train=config.learning_starts, next_eval=config.eval_every or None)
    state.history.selection_seeds = list(seeds)
    checkpoint = (config.checkpoint_dir and files.latest_checkpoint(config.checkpoint_dir))
    if checkpoint:
        state = _restore(checkpoint, config, q_network, target_network, optimizer, replay, rng,
                         distillation)
    elif distillation is not None:
        state.step = distillation.offline_phase(config, replay, update, rng, spec)
        state.next_train = max(state.next_train, state.step)
    if distillation is not None:
        distillation.observe(state.history)
    reporter = TrainingReporter(config, q_network)
    history, step = state.history, state.step
    # Training episodes start from hashed seeds, not from the small integers
    # that seed the selection and held-out episodes, so they do not replay them.
    explorer = Explorer(env, config, q_outputs, replay, rng, history,
                        derived_seed(config.seed, step))
    start = time.perf_counter() - state.wall_time_s
    bar = tqdm(total=config.total_env_steps, initial=min(step, config.total_env_steps),
               desc=f"DQN {config.env_id}", disable=not config.progress)

    def evaluate():
        teacher_io.check_finite(q_network.get_weights(), f"the Q-network at env step {step}")
        if config.eval_episodes:
            stats = evaluation.evaluate_policy(config.env_id, GreedyPolicy(q_outputs), seeds)
            best = history.record_evaluation(step, stats, reporter.take_mean_loss(),
                                             explorer.explore.epsilon)
            if best:
                state.best_weights = q_network.get_weights()
            if distillation is not None:
                history.eval_distillation_loss.append(reporter.take_mean_distillation_loss())
                history.eval_lambda.append(distillation.weight(step))
                history.eval_normalized_score.append(distillation.score(stats.mean))
                distillation.observe(history)
            reporter.evaluation(history)
        state.last_checked = state.step = history.env_steps = step
        state.wall_time_s = history.wall_time_s = time.perf_counter() - start
        if config.checkpoint_dir:
            _save_checkpoint(config, state, q_network, target_network, optimizer, replay, rng,
                             distillation)

    reporter.train_begin()
    try:
        while step < config.total_env_steps and not _reached(config, history):
            step = explorer.step(step)
            while step >= state.next_train:
                state.next_train += config.train_every
                weight = tf.constant(distillation.weight(step) if distillation else 0.0)
                for _ in range(config.gradient_steps):
                    td_loss, distillation_loss = update(
                        *map(tf.constant, replay.sample(config.batch_size)), weight)
                    reporter.add_loss(float(td_loss), float(distillation_loss)
                                      if distillation is not None else None)
            if step >= state.next_target:
                state.next_target += config.target_update_every
                update_target(q_network, target_network, config.target_update_tau)
            if state.next_eval is not None and step >= state.next_eval:
                state.next_eval += config.eval_every
                evaluate()
            bar.update(config.num_envs)
            if history.episode_returns:
                bar.set_postfix(eps=f"{explorer.explore.epsilon:.2f}",
                                ret=f"{np.mean(history.episode_returns[-20:]):.1f}",
                                best="-" if history.best_return is None
                                else f"{history.best_return:.1f}")
        if state.last_checked != step:
            evaluate()
        if config.keep_best and state.best_weights is not None:
            q_network.set_weights(state.best_weights)
    finally:
        bar.close()
        env.close()
    history.wall_time_s, history.env_steps = time.perf_counter() - start, step
    reporter.train_end()
    if out_dir:
        save_dqn_teacher(q_network, config, history, out_dir)
    return history


def _reached(config: DQNConfig, history: DQNHistory) -> bool:
    return (config.target_return is not None and history.best_return is not None
            and history.best_return >= config.target_return)


def update_target(q_network, target_network, tau):
    """Copies the online weights to the target network (τ = 1) or moves them τ of the way."""
    if tau == 1.0:
        target_network.set_weights(q_network.get_weights())
    else:
        target_network.set_weights([tau * online + (1.0 - tau) * target for online, target
                                    in zip(q_network.get_weights(), target_network.get_weights())])


def save_optimizer(path: str, optimizer: keras.optimizers.Optimizer) -> None:
    """Writes the optimizer's variables (step count, moments) to an ``.npz`` file."""
    files.write_npz(path, *[np.asarray(variable) for variable in optimizer.variables])


def restore_optimizer(path: str, optimizer: keras.optimizers.Optimizer) -> None:
    """Loads :func:`save_optimizer`'s file into a built optimizer.

    Raises:
        ValueError: if it holds another number of variables (another network).
    """
    values = files.read_array_list(path)
    if len(values) != len(optimizer.variables):
        raise ValueError("its optimizer state does not fit this network")
    for variable, value in zip(optimizer.variables, values):
        variable.assign(value)


def _save_checkpoint(config, state, q_network, target_network, optimizer, replay, rng,
                     distillation=None):
    def write(folder):
        q_network.save_weights(os.path.join(folder, "q_network.weights.h5"))
        target_network.save_weights(os.path.join(folder, "target_network.weights.h5"))
        save_optimizer(os.path.join(folder, "optimizer.npz"), optimizer)
        np.savez(os.path.join(folder, "best_weights.npz"), *(state.best_weights or []))
        replay.save(os.path.join(folder, "replay.npz"))
        files.write_json(os.path.join(folder, "state.json"), {
            "format": "tfkd.rl.dqn.checkpoint/1", "env_id": config.env_id,
            "step": state.step, "next_train": state.next_train,
            "next_target": state.next_target, "next_eval": state.next_eval,
            "has_best_weights": state.best_weights is not None,
            "wall_time_s": state.wall_time_s, "rng": rng.bit_generator.state,
            "history": state.history.as_dict(), "config": config.as_dict(),
            "kickstart": distillation.config.as_dict() if distillation else None})

    files.save_checkpoint(config.checkpoint_dir, f"ckpt-{int(state.step)}", write, "ckpt-",
                          step=int(state.step))


def _restore(folder, config, q_network, target_network, optimizer, replay, rng,
             distillation=None) -> _State:
    try:
        with open(os.path.join(folder, "state.json"), encoding="utf-8") as file:
            saved = json.load(file)
        config.check_resumable(saved["config"])
        ours = distillation.config.as_dict() if distillation else None
        if saved.get("kickstart") != ours:
            raise ValueError("it was written by a run with another distillation term "
                             f"({saved.get('kickstart')} here: {ours})")
        q_network.load_weights(os.path.join(folder, "q_network.weights.h5"))
        target_network.load_weights(os.path.join(folder, "target_network.weights.h5"))
        restore_optimizer(os.path.join(folder, "optimizer.npz"), optimizer)
        best = files.read_array_list(os.path.join(folder, "best_weights.npz"))
        replay.load(os.path.join(folder, "replay.npz"))
        rng.bit_generator.state = saved["rng"]
        history = DQNHistory.from_dict(saved["history"])
    except (OSError, KeyError, TypeError, ValueError, json.JSONDecodeError) as error:
        raise ValueError(f"Cannot resume from checkpoint {folder!r}: {error}. Delete it or pass "
                         "another checkpoint_dir.") from None
    return _State(step=saved["step"], last_checked=saved["step"],
                  next_train=saved["next_train"],
                  next_target=saved["next_target"], next_eval=saved["next_eval"],
                  history=history, best_weights=best if saved["has_best_weights"] else None,
                  wall_time_s=saved["wall_time_s"])


def save_dqn_teacher(q_network: keras.Model, config: DQNConfig, history: DQNHistory,
                     out_dir: str) -> None:
    """Saves a Keras teacher folder: ``teacher.keras`` and ``teacher.json``.

    Raises:
        tfkd.rl.teacher_io.NonFiniteError: if the weights hold NaN or inf.
    """
    teacher_io.check_finite(q_network.get_weights(), "the Q-network")
    teacher_io.save_keras_model(q_network, os.path.join(out_dir, teacher_io.KERAS_MODEL_FILE))
    teacher_io.write_teacher_description(out_dir, {
        "backend": "keras", "env_id": config.env_id,
        "hidden_units": list(config.hidden_units), "params": count_params(q_network),
        "best_return": history.best_return, "selection_seeds": history.selection_seeds,
        "history": history.as_dict(), "config": config.as_dict()})


def load_dqn_teacher(teacher_dir: str) -> tuple[keras.Model, dict]:
    """Loads a Keras teacher folder saved by :func:`train_dqn` / :func:`save_dqn_teacher`.

    Returns:
        ``(q_network, description)``; ``description`` is ``teacher.json``
        (``env_id``, ``best_return``, ``history``, ``config``, ...).

    Raises:
        FileNotFoundError: if the folder, ``teacher.json`` or ``teacher.keras`` is missing.
        ValueError: if a file is corrupt or the saved env id is unknown.
    """
    description = teacher_io.read_teacher_description(teacher_dir)
    if description.get("backend") != "keras":
        raise ValueError(f"{teacher_dir!r} holds a {description.get('backend')!r} teacher; "
                         "load it with tfkd.agents.load_dqn_teacher.")
    model = teacher_io.load_keras_model(os.path.join(teacher_dir, teacher_io.KERAS_MODEL_FILE))
    return model, description


def td_targets(rewards, terminated, next_target_q, gamma: float, next_online_q=None):
    """One-step TD targets of DQN (Mnih et al. 2015) or double DQN (van Hasselt et al. 2016).

    Double DQN (``next_online_q`` given): the online network picks the next
    action, the target network values it::

        y = r + γ · (1 − terminated) · Q_target(s', argmax_a' Q(s', a'))

    DQN (``next_online_q`` None): ``y = r + γ · (1 − terminated) · max_a' Q_target(s', a')``.

    Args:
        rewards, terminated: ``[batch]`` float32 (terminated: 1.0 where the
            episode ended in a terminal state; a truncated one bootstraps).
        next_target_q: ``[batch, actions]`` target-network Q-values at s'.
        gamma: the discount γ.
        next_online_q: ``[batch, actions]`` online-network Q-values at s', or None.
    """
    if next_online_q is not None:
        next_actions = tf.argmax(next_online_q, axis=-1, output_type=tf.int32)
        next_values = tf.gather(next_target_q, next_actions, batch_dims=1)
    else:
        next_values = tf.reduce_max(next_target_q, axis=-1)
    return rewards + gamma * (1.0 - terminated) * next_values


def td_loss(q_values, actions, targets):
    """Huber TD loss ``mean_i Huber(y_i − Q(s_i, a_i))``, no gradient through the targets.

    Args:
        q_values: ``[batch, actions]`` online Q-values at s.
        actions: ``[batch]`` int32 actions taken.
        targets: ``[batch]`` TD targets (:func:`td_targets`).
    """
    return keras.losses.Huber()(tf.stop_gradient(targets),
                                tf.gather(q_values, actions, batch_dims=1))


def network_td_targets(q_network, target_network, rewards, next_observations, terminated,
                       gamma, double_q):
    """:func:`td_targets` of a batch, from the networks' Q-values at s'."""
    next_target_q = target_network(next_observations)
    next_online_q = q_network(next_observations) if double_q else None
    return td_targets(rewards, terminated, next_target_q, gamma, next_online_q)


def batch_signature(spec) -> tuple[tf.TensorSpec, ...]:
    """TensorSpecs of a replay batch ``(s, a, r, s', terminated)`` (:meth:`Replay.sample`)."""
    observations = tf.TensorSpec((None, *spec.observation_shape), spec.observation_dtype)
    scalars = tf.TensorSpec((None,), tf.float32)
    return observations, tf.TensorSpec((None,), tf.int32), scalars, observations, scalars


def _make_update(q_network, target_network, optimizer, gamma, spec, double_q=True,
                 distillation=None):
    """One (double-)DQN gradient step, compiled once for a fixed signature.

    ``update(s, a, r, s', terminated, weight)`` minimises ``L_TD + weight ·
    distillation.loss(teacher(s), Q(s))`` (the second term only with a
    ``distillation`` term) and returns ``(L_TD, L_distill)`` (0 without one).
    """

    @tf.function(input_signature=[*batch_signature(spec), tf.TensorSpec((), tf.float32)])
    def update(observations, actions, rewards, next_observations, terminated, weight=0.0):
        targets = network_td_targets(q_network, target_network, rewards, next_observations,
                                     terminated, gamma, double_q)
        teacher_q = (tf.stop_gradient(tf.cast(distillation.teacher(observations), tf.float32))
                     if distillation is not None else None)
        with tf.GradientTape() as tape:
            all_q = q_network(observations, training=True)
            loss_td = td_loss(all_q, actions, targets)
            distillation_loss = (distillation.loss(teacher_q, all_q) if distillation is not None
                                 else tf.zeros((), loss_td.dtype))
            loss = loss_td + weight * distillation_loss
        variables = q_network.trainable_variables
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss_td, distillation_loss

    return update
