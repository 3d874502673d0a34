"""The compact Keras DQN used for teachers and the from-scratch baseline."""

import keras
import numpy as np
import pytest

from tfkd.models import build_mlp
from tfkd.rl import DQNConfig, evaluate_policy, train_dqn
from tfkd.rl.dqn import _make_update
from tfkd.rl.envs import EnvSpec


def test_epsilon_schedule_decays_linearly():
    config = DQNConfig(total_env_steps=1_000, epsilon_fraction=0.5, epsilon_initial=1.0,
                       epsilon_final=0.1)
    assert config.epsilon(0) == 1.0
    assert config.epsilon(250) == pytest.approx(0.55)
    assert config.epsilon(500) == pytest.approx(0.1) and config.epsilon(900) == pytest.approx(0.1)


def test_td_update_fits_terminal_rewards():
    """On terminal transitions the target is the reward: Q(s, a) must move to it."""
    keras.utils.set_random_seed(0)
    spec = EnvSpec("toy", (3,), np.dtype(np.float32), 2)
    q_network, target_network = build_mlp((3,), 2, (16,)), build_mlp((3,), 2, (16,))
    update = _make_update(q_network, target_network, keras.optimizers.Adam(1e-2), 0.99, spec)
    observations = np.eye(3, dtype=np.float32)
    actions, rewards = np.array([0, 1, 0], np.int32), np.array([1.0, -1.0, 0.5], np.float32)
    for _ in range(300):
        update(observations, actions, rewards, observations, np.ones(3, np.float32))
    q_values = np.asarray(q_network(observations))
    np.testing.assert_allclose(q_values[np.arange(3), actions], rewards, atol=0.05)


def test_short_dqn_run_learns_something():
    keras.utils.set_random_seed(0)
    q_network = build_mlp((4,), 2, (64, 64))
    config = DQNConfig(total_env_steps=6_000, learning_starts=500, eval_every=0, eval_episodes=5,
                       target_update_every=200, epsilon_fraction=0.5, progress=False)
    history = train_dqn(q_network, config)
    assert history.env_steps == 6_000 and len(history.eval_return_mean) == 1
    assert len(history.episode_returns) > 50
    # Random play on CartPole scores ~22; a few thousand steps of DQN do better.
    assert evaluate_policy("CartPole-v1", q_network, range(77, 82)).mean > 40


@pytest.mark.slow
def test_dqn_solves_cartpole():
    keras.utils.set_random_seed(0)
    q_network = build_mlp((4,), 2, (256, 256))
    config = DQNConfig(total_env_steps=50_000, learning_rate=2.3e-3, batch_size=64, num_envs=8,
                       train_every=256, gradient_steps=128, target_update_every=10,
                       epsilon_fraction=0.16, epsilon_final=0.04, buffer_capacity=100_000,
                       eval_every=5_000, progress=False)
    train_dqn(q_network, config)
    assert evaluate_policy("CartPole-v1", q_network, range(123, 143)).mean > 400


def test_target_return_stops_training_at_the_first_evaluation_that_reaches_it():
    keras.utils.set_random_seed(0)
    q_network = build_mlp((4,), 2, (16,))
    # Any greedy CartPole policy returns at least 8, so the first evaluation
    # (after 400 env steps) reaches a target of 1 and training stops there.
    config = DQNConfig(total_env_steps=4_000, learning_starts=100, eval_every=400,
                       eval_episodes=2, target_return=1.0, progress=False)
    history = train_dqn(q_network, config)
    assert history.env_steps == 400
    assert history.eval_steps == [400] and history.eval_return_mean[0] >= 1.0
