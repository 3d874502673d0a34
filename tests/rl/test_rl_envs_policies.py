"""Environments and control policies."""

import numpy as np
import pytest

from tfkd.rl import (
    EpsilonGreedyPolicy,
    GreedyPolicy,
    MixturePolicy,
    Policy,
    env_spec,
    make_atari_env,
    make_env,
    make_vector_env,
    network_outputs,
)


class ConstantPolicy(Policy):
    def __init__(self, action):
        self.action = action

    def __call__(self, observations, rng):
        return np.full(len(observations), self.action)


def test_env_spec_of_single_and_vector_env():
    env = make_env("CartPole-v1")
    vector_env = make_vector_env("CartPole-v1", 3)
    for spec in (env_spec(env), env_spec(vector_env, "CartPole-v1")):
        assert spec.env_id == "CartPole-v1"
        assert spec.observation_shape == (4,)
        assert spec.num_actions == 2
    assert vector_env.num_envs == 3
    env.close()
    vector_env.close()


def test_non_discrete_action_space_is_rejected():
    with pytest.raises(ValueError, match="discrete action space"):
        make_env("Pendulum-v1")


def test_bad_num_envs_is_rejected():
    with pytest.raises(ValueError, match="num_envs"):
        make_vector_env("CartPole-v1", 0)


def test_greedy_policy_pins_the_controller_action(cartpole_teacher):
    rng = np.random.default_rng(0)
    pole_falls_right = np.array([[0.0, 0.0, 0.1, 0.5]], np.float32)
    pole_falls_left = -pole_falls_right
    policy = GreedyPolicy(cartpole_teacher)
    assert policy(pole_falls_right, rng).tolist() == [1]
    assert policy(pole_falls_left, rng).tolist() == [0]
    # float64 observations are accepted and cast.
    assert policy(pole_falls_right.astype(np.float64), rng).tolist() == [1]


def test_network_with_wrong_observation_shape_is_a_clear_error(cartpole_teacher):
    with pytest.raises(ValueError, match=r"cannot take observations of shape \(3,\)"):
        network_outputs(cartpole_teacher)(np.zeros((2, 3), np.float32))


def test_network_with_wrong_number_of_actions_is_a_clear_error(cartpole_teacher):
    with pytest.raises(ValueError, match="3 actions"):
        network_outputs(cartpole_teacher, num_actions=3)(np.zeros((2, 4), np.float32))


def test_network_must_return_a_batch_of_outputs():
    with pytest.raises(ValueError, match=r"\[batch, num_actions\]"):
        network_outputs(lambda x: x[:, 0])(np.zeros((2, 4), np.float32))


def test_mixture_policy_mixes_at_rate_beta():
    rng = np.random.default_rng(0)
    observations = np.zeros((20_000, 4), np.float32)
    mixture = MixturePolicy(ConstantPolicy(1), ConstantPolicy(0), beta=0.3)
    assert abs(mixture(observations, rng).mean() - 0.3) < 0.02
    mixture.beta = 1.0
    assert mixture(observations, rng).min() == 1
    mixture.beta = 0.0
    assert mixture(observations, rng).max() == 0
    with pytest.raises(ValueError, match="beta"):
        mixture.beta = 1.5


def test_epsilon_greedy_explores_uniformly():
    rng = np.random.default_rng(0)
    observations = np.zeros((30_000, 4), np.float32)
    policy = EpsilonGreedyPolicy(ConstantPolicy(0), num_actions=3, epsilon=0.6)
    counts = np.bincount(policy(observations, rng), minlength=3) / len(observations)
    np.testing.assert_allclose(counts, [0.4 + 0.2, 0.2, 0.2], atol=0.02)
    with pytest.raises(ValueError, match="epsilon"):
        EpsilonGreedyPolicy(ConstantPolicy(0), 3, epsilon=-0.1)


def test_greedy_policy_rejects_non_callables():
    with pytest.raises(TypeError, match="callable"):
        GreedyPolicy(3)


def test_atari_env_gives_stacked_frames_or_says_what_is_missing():
    pytest.importorskip("ale_py")
    try:
        import cv2  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="OpenCV"):
            make_atari_env("ALE/Pong-v5")
        with pytest.raises(ImportError, match="OpenCV"):  # ALE ids get the DQN preprocessing
            make_vector_env("ALE/Pong-v5", 1)
        return
    env = make_atari_env("ALE/Pong-v5")
    observation, _ = env.reset(seed=0)
    assert observation.shape == (84, 84, 4) and observation.dtype == np.uint8
    assert env_spec(env).num_actions == 6
    env.close()
    vector_env = make_vector_env("ALE/Pong-v5", 1)
    assert env_spec(vector_env, "ALE/Pong-v5").observation_shape == (84, 84, 4)
    vector_env.close()
