"""Rollouts labelled by the teacher, and evaluation."""

import numpy as np
import pytest

from tfkd.models import build_mlp
from tfkd.rl import (
    GreedyPolicy,
    MixturePolicy,
    Policy,
    RolloutCollector,
    action_agreement,
    compare_policies,
    count_params,
    evaluate_policy,
    inference_latency,
    make_vector_env,
    network_outputs,
)


class AlwaysLeft(Policy):
    def __call__(self, observations, rng):
        return np.zeros(len(observations), np.int64)


def test_rollouts_are_labelled_with_the_teacher_outputs(cartpole_teacher):
    env = make_vector_env("CartPole-v1", 4)
    collector = RolloutCollector(env, cartpole_teacher, seed=3)
    rollout = collector.collect(AlwaysLeft(), num_steps=201)
    assert rollout.num_steps == 204 and collector.total_steps == 204
    assert rollout.observations.shape == (204, 4) and rollout.teacher_outputs.shape == (204, 2)
    np.testing.assert_allclose(
        rollout.teacher_outputs, network_outputs(cartpole_teacher)(rollout.observations), rtol=1e-6
    )
    assert np.all(rollout.actions == 0)
    # Pushing left all the time fails in ~10 steps: many short episodes ended.
    assert len(rollout.episode_returns) >= 8
    assert max(rollout.episode_returns) < 30
    assert sum(rollout.episode_lengths) <= rollout.num_steps
    env.close()


def test_teacher_controlled_rollout_takes_the_teacher_actions(cartpole_teacher):
    env = make_vector_env("CartPole-v1", 2)
    collector = RolloutCollector(env, cartpole_teacher, seed=0)
    student = build_mlp((4,), 2, (8,))
    mixture = MixturePolicy(GreedyPolicy(cartpole_teacher), GreedyPolicy(student), beta=1.0)
    rollout = collector.collect(mixture, num_steps=100)
    np.testing.assert_array_equal(rollout.actions, rollout.teacher_outputs.argmax(axis=1))
    env.close()


def test_evaluation_is_seeded_and_tells_good_from_bad(cartpole_teacher):
    good = evaluate_policy("CartPole-v1", cartpole_teacher, num_episodes=6, seed=5)
    assert good.mean == 500.0 and good.std == 0.0 and good.num_episodes == 6
    bad = evaluate_policy("CartPole-v1", AlwaysLeft(), num_episodes=6, seed=5, num_envs=4)
    again = evaluate_policy("CartPole-v1", AlwaysLeft(), num_episodes=6, seed=5, num_envs=3)
    assert bad.mean < 20
    assert bad.returns == again.returns  # episode k always starts from seed + k
    with pytest.raises(ValueError, match="num_episodes"):
        evaluate_policy("CartPole-v1", AlwaysLeft(), num_episodes=0)


def test_agreement_params_and_latency(cartpole_teacher):
    observations = np.random.default_rng(0).normal(size=(500, 4)).astype(np.float32)
    assert action_agreement(cartpole_teacher, cartpole_teacher, observations) == 1.0
    flipped = lambda x: -cartpole_teacher(x)  # noqa: E731
    assert action_agreement(cartpole_teacher, flipped, observations) == 0.0
    student = build_mlp((4,), 2, (16, 16))
    assert count_params(student) == (4 * 16 + 16) + (16 * 16 + 16) + (16 * 2 + 2)
    assert count_params(cartpole_teacher) == 8
    latency = inference_latency(student, observations[0], repeats=20, warmup=2)
    assert 0 < latency < 0.5


def test_compare_policies_reports_percent_of_teacher(cartpole_teacher, make_cartpole_teacher):
    same_actions = make_cartpole_teacher(scale=3.0)
    comparison = compare_policies("CartPole-v1", cartpole_teacher, same_actions, num_episodes=3)
    assert comparison.percent_of_teacher == 100.0 and comparison.agreement == 1.0
    untrained = build_mlp((4,), 2, (16,))
    comparison = compare_policies("CartPole-v1", cartpole_teacher, untrained, num_episodes=3)
    assert comparison.percent_of_teacher < 50.0 and comparison.student_params == 114
    row = comparison.summary()
    assert row["teacher_return_mean"] == 500.0 and "returns" not in str(row)
