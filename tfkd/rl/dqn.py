"""A compact DQN in plain Keras 3: teacher training and the from-scratch baseline.

Double DQN (van Hasselt et al. 2016) with a Huber TD loss, a uniform replay
memory, a periodically copied target network and a linearly decaying ε
(Mnih et al. 2015, "Human-level control through deep reinforcement
learning"). The benchmark trains a student-sized network with it on the same
env-step budget that distillation gets, to show what distillation buys.

TD target for a transition (s, a, r, s', done):
    y = r + γ · (1 − terminated) · Q_target(s', argmax_a' Q(s', a'))
Truncated episodes (time limits) bootstrap from their real final observation.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import keras
import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from tfkd.rl.envs import env_spec, make_vector_env
from tfkd.rl.evaluation import evaluate_policy, selection_seeds
from tfkd.rl.policies import EpsilonGreedyPolicy, GreedyPolicy, network_outputs


@dataclass
class DQNConfig:
    """Settings of :func:`train_dqn`.

    Attributes:
        env_id: gymnasium id.
        total_env_steps: env steps of training, all envs together.
        num_envs: envs stepped in parallel.
        buffer_capacity: replay memory size (transitions).
        batch_size: minibatch size.
        learning_rate: Adam learning rate.
        gamma: discount.
        learning_starts: env steps of random play before updates begin.
        train_every: env steps between rounds of updates.
        gradient_steps: updates per round.
        target_update_every: env steps between copies to the target network.
        epsilon_initial, epsilon_final: ε schedule end points.
        epsilon_fraction: fraction of ``total_env_steps`` over which ε decays.
        max_grad_norm: gradient clipping by global norm.
        eval_every: env steps between greedy evaluations (0: only at the end).
        eval_episodes: episodes per evaluation.
        keep_best: restore the weights with the best evaluated return at the end.
        target_return: stop early once a greedy evaluation's mean return
            reaches this (None: train for ``total_env_steps``).
        seed: seeds envs, exploration and replay sampling.
        progress: show a tqdm bar.
    """

    env_id: str = "CartPole-v1"
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
    epsilon_initial: float = 1.0
    epsilon_final: float = 0.05
    epsilon_fraction: float = 0.2
    max_grad_norm: float = 10.0
    eval_every: int = 10_000
    eval_episodes: int = 10
    keep_best: bool = True
    target_return: float | None = None
    seed: int = 0
    progress: bool = True

    def epsilon(self, env_step: int) -> float:
        """Linear decay from ``epsilon_initial`` to ``epsilon_final``."""
        fraction = min(1.0, env_step / max(1.0, self.epsilon_fraction * self.total_env_steps))
        return self.epsilon_initial + fraction * (self.epsilon_final - self.epsilon_initial)


@dataclass
class DQNHistory:
    """Returns of training episodes and of greedy evaluations."""

    episode_end_steps: list[int] = field(default_factory=list)
    episode_returns: list[float] = field(default_factory=list)
    eval_steps: list[int] = field(default_factory=list)
    eval_return_mean: list[float] = field(default_factory=list)
    eval_return_std: list[float] = field(default_factory=list)
    wall_time_s: float = 0.0
    env_steps: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


class _Replay:
    """Uniform replay memory of (s, a, r, s', terminated)."""

    def __init__(self, capacity, observation_shape, observation_dtype, rng):
        self.observations = np.zeros((capacity, *observation_shape), observation_dtype)
        self.next_observations = np.zeros_like(self.observations)
        self.actions = np.zeros(capacity, np.int32)
        self.rewards = np.zeros(capacity, np.float32)
        self.terminated = np.zeros(capacity, np.float32)
        self.capacity, self.size, self.cursor, self.rng = capacity, 0, 0, rng

    def add(self, observations, actions, rewards, next_observations, terminated):
        index = (self.cursor + np.arange(len(actions))) % self.capacity
        self.observations[index], self.actions[index], self.rewards[index] = observations, actions, rewards
        self.next_observations[index], self.terminated[index] = next_observations, terminated
        self.cursor = (self.cursor + len(actions)) % self.capacity
        self.size = min(self.capacity, self.size + len(actions))

    def sample(self, batch_size):
        index = self.rng.integers(self.size, size=batch_size)
        return (self.observations[index], self.actions[index], self.rewards[index],
                self.next_observations[index], self.terminated[index])


def train_dqn(q_network: keras.Model, config: DQNConfig) -> DQNHistory:
    """Trains ``q_network`` in place with double DQN on ``config.env_id``.

    Args:
        q_network: a Keras model observations -> Q-values (e.g.
            ``tfkd.models.build_mlp``).
        config: the settings.

    Returns:
        The training history; with ``keep_best`` the network ends with the
        weights of its best greedy evaluation.
    """
    env = make_vector_env(config.env_id, config.num_envs)
    spec = env_spec(env, config.env_id)
    q_outputs = network_outputs(q_network, spec.num_actions)
    target_network = keras.models.clone_model(q_network)
    target_network.set_weights(q_network.get_weights())
    optimizer = keras.optimizers.Adam(config.learning_rate, global_clipnorm=config.max_grad_norm)
    update = _make_update(q_network, target_network, optimizer, config.gamma, spec)
    rng = np.random.default_rng(config.seed)
    replay = _Replay(config.buffer_capacity, spec.observation_shape, spec.observation_dtype, rng)
    explore = EpsilonGreedyPolicy(GreedyPolicy(q_outputs), spec.num_actions, config.epsilon_initial)

    history, best_return, best_weights = DQNHistory(), -np.inf, None
    returns = np.zeros(config.num_envs)
    observations, _ = env.reset(seed=config.seed)
    start, step = time.perf_counter(), 0
    next_train, next_target, next_eval = config.learning_starts, 0, config.eval_every or None
    bar = tqdm(total=config.total_env_steps, desc=f"DQN {config.env_id}", disable=not config.progress)
    try:
        while step < config.total_env_steps:
            explore.epsilon = 1.0 if step < config.learning_starts else config.epsilon(step)
            actions = explore(observations, rng)
            next_observations, rewards, terminated, truncated, infos = env.step(actions)
            done = np.logical_or(terminated, truncated)
            final_observations = next_observations.copy()
            if done.any():
                final_observations[done] = np.stack(infos["final_obs"][done])
            replay.add(observations, actions, rewards, final_observations, terminated)
            observations = next_observations
            returns += rewards
            step += config.num_envs
            for i in np.flatnonzero(done):
                history.episode_end_steps.append(step)
                history.episode_returns.append(float(returns[i]))
                returns[i] = 0.0
            while step >= next_train:
                next_train += config.train_every
                for _ in range(config.gradient_steps):
                    update(*map(tf.constant, replay.sample(config.batch_size)))
            if step >= next_target:
                next_target += config.target_update_every
                target_network.set_weights(q_network.get_weights())
            if next_eval is not None and step >= next_eval:
                next_eval += config.eval_every
                best_return, best_weights = _evaluate(
                    q_outputs, q_network, config, step, history, best_return, best_weights
                )
                if config.target_return is not None and best_return >= config.target_return:
                    break
            bar.update(config.num_envs)
            if history.episode_returns:
                bar.set_postfix(eps=f"{explore.epsilon:.2f}",
                                ret=f"{np.mean(history.episode_returns[-20:]):.1f}",
                                best=f"{best_return:.1f}")
        if not history.eval_steps or history.eval_steps[-1] != step:
            best_return, best_weights = _evaluate(
                q_outputs, q_network, config, step, history, best_return, best_weights
            )
        if config.keep_best and best_weights is not None:
            q_network.set_weights(best_weights)
    finally:
        bar.close()
        env.close()
    history.wall_time_s, history.env_steps = time.perf_counter() - start, step
    return history


def _evaluate(q_outputs, q_network, config, step, history, best_return, best_weights):
    stats = evaluate_policy(config.env_id, GreedyPolicy(q_outputs),
                            selection_seeds(config.seed, config.eval_episodes))
    history.eval_steps.append(step)
    history.eval_return_mean.append(stats.mean)
    history.eval_return_std.append(stats.std)
    if stats.mean > best_return:
        return stats.mean, q_network.get_weights()
    return best_return, best_weights


def _make_update(q_network, target_network, optimizer, gamma, spec):
    """One double-DQN gradient step, compiled once for a fixed signature."""
    huber = keras.losses.Huber()
    observations_spec = tf.TensorSpec((None, *spec.observation_shape), spec.observation_dtype)
    scalars = tf.TensorSpec((None,), tf.float32)

    @tf.function(input_signature=[
        observations_spec, tf.TensorSpec((None,), tf.int32), scalars, observations_spec, scalars
    ])
    def update(observations, actions, rewards, next_observations, terminated):
        next_actions = tf.argmax(q_network(next_observations), axis=-1, output_type=tf.int32)
        next_values = tf.gather(target_network(next_observations), next_actions, batch_dims=1)
        targets = rewards + gamma * (1.0 - terminated) * next_values
        with tf.GradientTape() as tape:
            q_values = tf.gather(q_network(observations, training=True), actions, batch_dims=1)
            loss = huber(tf.stop_gradient(targets), q_values)
        variables = q_network.trainable_variables
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    return update
