"""Environments and control policies."""

import gymnasium as gym
import numpy as np
import pytest

from tfkd.rl import (
    EpsilonGreedyPolicy,
    GreedyPolicy,
    MixturePolicy,
    Policy,
    UniformRandomPolicy,
    check_discrete,
    env_spec,
    is_atari,
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


def test_is_atari():
    assert is_atari("ALE/Pong-v5") and is_atari("ALE/Breakout-v5")
    assert not is_atari("CartPole-v1") and not is_atari("PongNoFrameskip-v4")


BOX4 = gym.spaces.Box(-1.0, 1.0, (4,))
FRAMES = gym.spaces.Box(0, 255, (84, 84, 4), np.uint8)


def test_check_discrete_accepts_vectors_and_images():
    assert check_discrete(gym.spaces.Discrete(3), "Env-v0") == 3
    assert check_discrete(gym.spaces.Discrete(2), "Env-v0", BOX4, allow_images=False) == 2
    assert check_discrete(gym.spaces.Discrete(6), "ALE/Pong-v5", FRAMES) == 6


@pytest.mark.parametrize("action_space, observation_space, allow_images, match", [
    (gym.spaces.Box(-1, 1, (1,)), BOX4, True, "Env-v0 has action space Box.*discrete"),
    (gym.spaces.MultiDiscrete([2, 2]), BOX4, True, "discrete action space"),
    (gym.spaces.Discrete(3, start=-1), BOX4, True, "must start at 0"),
    (gym.spaces.Discrete(2), gym.spaces.Dict({"a": BOX4}), True,
     r"Env-v0 has a Dict observation space Dict\('a'.*FlattenObservation"),
    (gym.spaces.Discrete(2), gym.spaces.Tuple((BOX4, BOX4)), True,
     r"Env-v0 has a Tuple observation space Tuple\(Box.*Box observation space"),
    (gym.spaces.Discrete(2), gym.spaces.Discrete(16), True, "Discrete observation space"),
    (gym.spaces.Discrete(2), FRAMES, False, r"shape \(84, 84, 4\).*ALE/"),
    (gym.spaces.Discrete(2), gym.spaces.Box(0, 1, (3, 3)), True, "vectors.*or images"),
])
def test_check_discrete_errors_are_one_line_and_name_the_env(
        action_space, observation_space, allow_images, match):
    with pytest.raises(ValueError, match=match) as error:
        check_discrete(action_space, "Env-v0", observation_space, allow_images=allow_images)
    assert "\n" not in str(error.value) and "Env-v0" in str(error.value)


def test_dict_observation_env_is_rejected_by_make_env():
    class DictObservations(gym.Env):
        observation_space = gym.spaces.Dict({"position": BOX4})
        action_space = gym.spaces.Discrete(2)

    gym.register("tfkd-test/DictObservations-v0", entry_point=DictObservations)
    try:
        with pytest.raises(ValueError, match="tfkd-test/DictObservations-v0 has a Dict"):
            make_env("tfkd-test/DictObservations-v0")
    finally:
        gym.registry.pop("tfkd-test/DictObservations-v0")


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


def test_uniform_random_policy_draws_from_the_given_rng():
    observations = np.zeros((30_000, 4), np.float32)
    policy = UniformRandomPolicy(3)
    actions = policy(observations, np.random.default_rng(0))
    np.testing.assert_allclose(np.bincount(actions, minlength=3) / len(actions), [1 / 3] * 3,
                               atol=0.01)
    np.testing.assert_array_equal(actions, policy(observations, np.random.default_rng(0)))
    with pytest.raises(ValueError, match="num_actions"):
        UniformRandomPolicy(2.5)


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
