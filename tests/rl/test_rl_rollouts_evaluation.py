"""Rollouts labelled by the teacher, and the evaluation protocol."""

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tfkd.models import build_mlp
from tfkd.rl import (
    EpsilonGreedyPolicy,
    GreedyPolicy,
    MixturePolicy,
    Policy,
    ReturnStats,
    RolloutCollector,
    action_agreement,
    compare_policies,
    evaluate_policy,
    held_out_seeds,
    inference_latency,
    make_vector_env,
    network_outputs,
    normalized_score,
    random_policy,
    selection_seeds,
)
from tfkd.rl import rollouts
from tfkd.rl.evaluation import MAX_EPISODES, MAX_SEED


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


def test_labelling_in_batches_matches_one_call(cartpole_teacher, monkeypatch):
    monkeypatch.setattr(rollouts, "LABEL_BATCH", 7)
    env = make_vector_env("CartPole-v1", 4)
    collector = RolloutCollector(env, cartpole_teacher, seed=1)
    rollout = collector.collect(AlwaysLeft(), num_steps=30)  # 32 states: 5 batches of 7, then 4
    np.testing.assert_allclose(rollout.teacher_outputs,
                               network_outputs(cartpole_teacher)(rollout.observations), rtol=1e-6)
    assert rollout.teacher_outputs.dtype == np.float32
    env.close()


def test_greedy_mixture_acts_like_its_two_networks_called_apart(cartpole_teacher):
    student = build_mlp((4,), 2, (8,))
    observations = np.random.default_rng(0).normal(size=(500, 4)).astype(np.float32)
    joint = MixturePolicy(GreedyPolicy(cartpole_teacher, 2), GreedyPolicy(student, 2), beta=0.4)
    apart = MixturePolicy(AlwaysActs(GreedyPolicy(cartpole_teacher)),
                          AlwaysActs(GreedyPolicy(student)), beta=0.4)
    assert joint._both is not None and apart._both is None
    actions = joint(observations, np.random.default_rng(5))
    np.testing.assert_array_equal(actions, apart(observations, np.random.default_rng(5)))
    teacher_actions = network_outputs(cartpole_teacher)(observations).argmax(1)
    student_actions = network_outputs(student)(observations).argmax(1)
    assert 0 < np.mean(actions == teacher_actions) < 1 and np.any(actions != student_actions)


class AlwaysActs(Policy):
    """A policy passed through: not a GreedyPolicy, so the mixture calls it on its own."""

    def __init__(self, policy):
        self.policy = policy

    def __call__(self, observations, rng):
        return self.policy(observations, rng)


def test_evaluation_is_seeded_and_tells_good_from_bad(cartpole_teacher):
    good = evaluate_policy("CartPole-v1", cartpole_teacher, range(5, 11))
    assert good.mean == 500.0 and good.std == 0.0 and good.num_episodes == 6
    assert good.ci95 == (500.0, 500.0) and good.seeds == tuple(range(5, 11))
    bad = evaluate_policy("CartPole-v1", AlwaysLeft(), range(5, 11), num_envs=4)
    again = evaluate_policy("CartPole-v1", AlwaysLeft(), range(5, 11), num_envs=3)
    assert bad.mean < 20
    assert bad.returns == again.returns  # episode k always starts from seeds[k]
    reversed_order = evaluate_policy("CartPole-v1", AlwaysLeft(), range(10, 4, -1), num_envs=4)
    assert reversed_order.returns == bad.returns[::-1]


@pytest.mark.parametrize("seeds, error, match", [
    ([], ValueError, "at least one"),
    (6, TypeError, "held_out_seeds"),
    ([0, -1], ValueError, r"\[0, 2\*\*32\)"),
    ([2**32], ValueError, r"\[0, 2\*\*32\)"),
    ([1.5], TypeError, "integers"),
])
def test_evaluation_rejects_bad_seeds(seeds, error, match):
    with pytest.raises(error, match=match):
        evaluate_policy("CartPole-v1", AlwaysLeft(), seeds)


def test_evaluation_of_a_random_policy_is_deterministic():
    seeds = held_out_seeds(0, 12)
    first = evaluate_policy("CartPole-v1", random_policy(2), seeds, num_envs=4)
    second = evaluate_policy("CartPole-v1", random_policy(2), seeds, num_envs=4)
    assert first == second  # returns, seeds, mean, std and CI, all equal
    epsilon = EpsilonGreedyPolicy(AlwaysLeft(), 2, epsilon=0.5)
    assert evaluate_policy("CartPole-v1", epsilon, seeds) == evaluate_policy(
        "CartPole-v1", epsilon, seeds)
    other = evaluate_policy("CartPole-v1", random_policy(2), held_out_seeds(1, 12), num_envs=4)
    assert other.returns != first.returns


def test_random_policy_return_on_cartpole_is_in_the_known_range():
    # A uniform-random policy lasts ~22 steps on CartPole (mean of many runs: 22.3).
    stats = evaluate_policy("CartPole-v1", random_policy(2), held_out_seeds(0, 100), num_envs=20)
    assert 15 < stats.mean < 30 and 8 <= min(stats.returns) and max(stats.returns) < 150
    assert stats.ci95[0] < stats.mean < stats.ci95[1] and stats.ci95[1] - stats.ci95[0] < 8
    with pytest.raises(ValueError, match="num_actions"):
        random_policy(0)


def test_evaluation_checks_the_network_width_against_the_env():
    three_actions = build_mlp((4,), 3, (4,))
    with pytest.raises(ValueError, match="3 outputs per observation, the environment has 2"):
        evaluate_policy("CartPole-v1", three_actions, [0])


def test_agreement_and_latency(cartpole_teacher):
    observations = np.random.default_rng(0).normal(size=(500, 4)).astype(np.float32)
    assert action_agreement(cartpole_teacher, cartpole_teacher, observations) == 1.0
    flipped = lambda x: -cartpole_teacher(x)  # noqa: E731
    assert action_agreement(cartpole_teacher, flipped, observations) == 0.0
    student = build_mlp((4,), 2, (16, 16))
    latency = inference_latency(student, observations[0], repeats=20, warmup=2)
    assert 0 < latency < 0.5


def test_compare_policies_reports_the_normalised_score(cartpole_teacher, make_cartpole_teacher):
    seeds = held_out_seeds(3, 3)
    same_actions = make_cartpole_teacher(scale=3.0)
    comparison = compare_policies("CartPole-v1", cartpole_teacher, same_actions, seeds)
    assert comparison.normalized_score == 1.0 and comparison.agreement == 1.0
    assert comparison.teacher_normalized_score == 1.0
    assert comparison.random.mean < 60 and comparison.random.seeds == tuple(seeds)
    untrained = build_mlp((4,), 2, (16,))
    comparison = compare_policies("CartPole-v1", cartpole_teacher, untrained, seeds,
                                  teacher_return=comparison.teacher,
                                  random_return=comparison.random, measure_latency=False)
    assert comparison.normalized_score < 0.5 and comparison.student_params == 114
    assert comparison.teacher_params == 8 and comparison.student_latency_s is None
    record = json.loads(json.dumps(comparison.as_dict(), allow_nan=False))
    assert record["eval_seeds"] == seeds and record["episodes"] == 3
    assert record["teacher"]["mean_return"] == 500.0 and record["teacher"]["params"] == 8
    assert record["teacher"]["normalized_score"] == 1.0
    assert record["student"]["normalized_score"] == comparison.normalized_score
    assert record["random"]["normalized_score"] == 0.0
    assert len(record["student"]["ci95"]) == 2 and "returns" not in str(record)
    with pytest.raises(ValueError, match="other episode seeds"):
        compare_policies("CartPole-v1", cartpole_teacher, untrained, held_out_seeds(4, 3),
                         teacher_return=comparison.teacher)


def test_compare_policies_accepts_networks_without_weights(cartpole_teacher):
    as_function = lambda x: cartpole_teacher(x)  # noqa: E731
    comparison = compare_policies("CartPole-v1", cartpole_teacher, as_function, [0, 1],
                                  measure_latency=False)
    assert comparison.student_params is None and comparison.agreement == 1.0
    assert comparison.as_dict()["student"]["params"] is None


# ---------------------------------------------------------------- the protocol


@settings(max_examples=200, deadline=None)
@given(
    st.integers(0, MAX_SEED), st.integers(0, MAX_SEED),
    st.integers(0, MAX_EPISODES), st.integers(0, MAX_EPISODES),
)
def test_selection_and_held_out_seeds_never_meet(seed_a, seed_b, n_a, n_b):
    selection, held_out = selection_seeds(seed_a, n_a), held_out_seeds(seed_b, n_b)
    assert len(selection) == n_a and len(held_out) == n_b
    assert not set(selection) & set(held_out)
    for seeds in (selection, held_out):
        assert len(set(seeds)) == len(seeds) and all(0 <= s < 2**32 for s in seeds)
    if seed_a != seed_b:  # different run seeds never share an episode
        assert not set(selection) & set(selection_seeds(seed_b, n_b))
        assert not set(held_out) & set(held_out_seeds(seed_a, n_a))


def test_seed_ranges_are_prefix_stable_and_bounded():
    assert selection_seeds(0, 3) == [0, 2, 4] and held_out_seeds(0, 3) == [1, 3, 5]
    assert held_out_seeds(7, 5) == held_out_seeds(7, 50)[:5]
    assert max(held_out_seeds(MAX_SEED, MAX_EPISODES)) < 2**32
    with pytest.raises(ValueError, match="seed"):
        held_out_seeds(MAX_SEED + 1, 1)
    with pytest.raises(ValueError, match="seed"):
        selection_seeds(-1, 1)
    with pytest.raises(ValueError, match="n must"):
        selection_seeds(0, MAX_EPISODES + 1)
    with pytest.raises(TypeError, match="integer"):
        held_out_seeds(True, 1)


def reference_ci95(returns, rng_seed=0, resamples=10_000):
    """The documented percentile bootstrap, written out in float64."""
    x = np.asarray(returns, dtype=np.float64)
    indices = np.random.default_rng(rng_seed).integers(0, len(x), size=(resamples, len(x)))
    means = x[indices].mean(axis=1)
    return tuple(np.percentile(means, [2.5, 97.5]))


@pytest.mark.parametrize("returns", [
    [500.0],
    [-84.5, -95.0, -120.0, -80.0, -500.0],
    list(np.random.default_rng(3).normal(200, 80, size=57)),
    list(np.random.default_rng(4).integers(-500, 0, size=1_500).astype(float)),  # chunked draw
])
def test_bootstrap_ci_matches_a_numpy_reference(returns):
    stats = ReturnStats.from_returns(returns)
    assert stats.ci95 == pytest.approx(reference_ci95(returns), rel=1e-12, abs=1e-12)
    assert stats.mean == pytest.approx(np.mean(np.asarray(returns, np.float64)), rel=1e-12)
    assert stats.std == pytest.approx(np.std(np.asarray(returns, np.float64)), rel=1e-12)
    assert stats.ci95[0] <= stats.mean <= stats.ci95[1]
    assert ReturnStats.from_returns(returns) == stats  # deterministic
    assert ReturnStats.from_returns(returns, rng_seed=1).ci95 == pytest.approx(
        reference_ci95(returns, rng_seed=1), rel=1e-12, abs=1e-12)


def test_bootstrap_ci_covers_the_mean_at_about_95_percent():
    rng = np.random.default_rng(0)
    covered = sum(
        low <= 10.0 <= high
        for low, high in (ReturnStats.from_returns(rng.normal(10.0, 3.0, 40), num_resamples=2_000,
                                                   rng_seed=i).ci95 for i in range(200))
    )
    assert 175 <= covered <= 200  # 95% of 200 is 190; the percentile CI is a little narrow


def test_return_stats_record_is_strict_json():
    stats = ReturnStats.from_returns([1.0, 2.0, 4.0], seeds=[11, 13, 15])
    record = json.loads(json.dumps(stats.as_dict(), allow_nan=False))
    assert record == {"mean_return": stats.mean, "std_return": stats.std, "num_episodes": 3,
                      "ci95": list(stats.ci95), "seeds": [11, 13, 15]}
    assert ReturnStats.from_returns([1.0]).as_dict()["seeds"] is None
    with pytest.raises(ValueError, match="finite"):
        ReturnStats.from_returns([1.0, math.nan])
    with pytest.raises(ValueError, match="non-empty"):
        ReturnStats.from_returns([])
    with pytest.raises(ValueError, match="2 seeds for 3 returns"):
        ReturnStats.from_returns([1.0, 2.0, 3.0], seeds=[0, 1])


@pytest.mark.parametrize("student, teacher, random, expected", [
    (450.0, 500.0, 22.0, (450 - 22) / (500 - 22)),  # CartPole
    (-84.5, -95.0, -500.0, (-84.5 + 500) / (-95 + 500)),  # Acrobot: better than the teacher
    (-120.0, -80.0, -500.0, (-120 + 500) / (-80 + 500)),  # Acrobot: worse than the teacher
    (-50.0, 0.0, -100.0, 0.5),  # a teacher at 0
    (-100.0, -95.0, -100.0, 0.0),  # the student is as good as random
])
def test_normalized_score(student, teacher, random, expected):
    score = normalized_score(student, random, teacher)
    assert score == pytest.approx(expected, rel=1e-12)
    if student > teacher:
        assert score > 1
    if student < teacher:
        assert score < 1


@pytest.mark.parametrize("student, teacher, random", [
    (-500.0, -500.0, -500.0),  # the teacher is random: undefined
    (10.0, 0.0, 0.0),
    (math.nan, 1.0, 0.0),
    (1.0, math.inf, 0.0),
])
def test_normalized_score_is_none_not_nan_when_undefined(student, teacher, random):
    assert normalized_score(student, random, teacher) is None
