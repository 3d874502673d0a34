"""How tfkd measures a policy: seeded episodes, confidence intervals, normalised scores.

The protocol, used by every loop, command and benchmark:

- Episodes are seeded. A model is *selected* (keep-best, early stopping, a
  target return) on :func:`selection_seeds` and *reported* on
  :func:`held_out_seeds`; the two ranges never share a seed, whatever the
  run seeds and episode counts (up to :data:`MAX_EPISODES`).
- A return is reported as :class:`ReturnStats`: mean, std, the number of
  episodes, a 95% bootstrap confidence interval and the episode seeds.
- A student is scored against its teacher with :func:`normalized_score`,
  ``(R − R_random) / (R_teacher − R_random)``, the uniform-random policy
  measured on the same seeds; a raw ratio of returns is wrong whenever
  returns can be negative (Acrobot, MountainCar, LunarLander).
  :func:`compare_policies` measures all three and the action agreement.
- A claim across independent run seeds (at least 5) reports
  ``ReturnStats.from_returns(per_run_means)``: their mean and its CI.
"""

from __future__ import annotations

import math
import numbers
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from tfkd.models import count_params
from tfkd.rl.envs import env_spec, make_vector_env
from tfkd.rl.policies import (
    GreedyPolicy,
    Network,
    NetworkOutputs,
    Policy,
    UniformRandomPolicy,
    network_outputs,
)

#: Most episodes one seed range holds (per run seed, per purpose).
MAX_EPISODES = 10_000
#: Largest run seed :func:`selection_seeds` and :func:`held_out_seeds` accept:
#: every episode seed they give stays below 2**32, as gymnasium requires.
MAX_SEED = 2**31 // MAX_EPISODES - 1
#: Bootstrap resamples behind :attr:`ReturnStats.ci95`.
BOOTSTRAP_RESAMPLES = 10_000
_EPISODE_SEED_LIMIT = 2**32


# ----------------------------------------------------------------------- seeds


def selection_seeds(seed: int, n: int) -> list[int]:
    """Episode seeds for selecting a model (keep-best, early stopping, target return).

    Run seed ``s`` owns the block ``[2·s·MAX_EPISODES, 2·(s+1)·MAX_EPISODES)``;
    its selection seeds are the even numbers of the block,
    ``2·(s·MAX_EPISODES + k)`` for ``k < n``, and its held-out seeds the odd
    ones. So selection and held-out seeds never meet, for any two run seeds,
    and different run seeds never share an episode.

    Args:
        seed: the run seed, ``0 <= seed <=`` :data:`MAX_SEED`.
        n: number of episodes, ``0 <= n <=`` :data:`MAX_EPISODES`.
    """
    return [2 * offset for offset in _offsets(seed, n)]


def held_out_seeds(seed: int, n: int) -> list[int]:
    """Episode seeds for reported returns: ``2·(s·MAX_EPISODES + k) + 1``, ``k < n``.

    Disjoint from every :func:`selection_seeds` range (see there).
    """
    return [2 * offset + 1 for offset in _offsets(seed, n)]


def _offsets(seed: int, n: int) -> range:
    for name, value, most in (("seed", seed, MAX_SEED), ("n", n, MAX_EPISODES)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(f"{name} must be an integer, got {value!r}.")
        if not 0 <= value <= most:
            raise ValueError(f"{name} must be in [0, {most}], got {value}.")
    return range(int(seed) * MAX_EPISODES, int(seed) * MAX_EPISODES + int(n))


def _episode_seeds(seeds: Sequence[int]) -> tuple[int, ...]:
    if isinstance(seeds, numbers.Integral) or isinstance(seeds, (str, bytes)):
        raise TypeError(
            f"seeds must be a sequence of episode seeds, got {seeds!r}; "
            "e.g. held_out_seeds(seed, num_episodes)."
        )
    seeds = tuple(seeds)
    if not seeds:
        raise ValueError("seeds must name at least one episode.")
    for seed in seeds:
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
            raise TypeError(f"episode seeds must be integers, got {seed!r}.")
        if not 0 <= seed < _EPISODE_SEED_LIMIT:
            raise ValueError(f"episode seeds must be in [0, 2**32), got {seed}.")
    return tuple(int(seed) for seed in seeds)


# ----------------------------------------------------------------------- stats


@dataclass(frozen=True)
class ReturnStats:
    """The undiscounted return of a policy over seeded episodes.

    Attributes:
        mean: mean return.
        std: standard deviation of the returns (population, ``ddof=0``).
        num_episodes: number of episodes.
        ci95: 95% percentile-bootstrap confidence interval of the mean (see
            :meth:`from_returns`).
        returns: the return of each episode, in seed order.
        seeds: the episode seeds, if known.
    """

    mean: float
    std: float
    num_episodes: int
    ci95: tuple[float, float]
    returns: tuple[float, ...]
    seeds: tuple[int, ...] | None = None

    @classmethod
    def from_returns(
        cls,
        returns: Sequence[float],
        seeds: Sequence[int] | None = None,
        rng_seed: int = 0,
        num_resamples: int = BOOTSTRAP_RESAMPLES,
    ) -> "ReturnStats":
        """Statistics of ``returns``, with a deterministic bootstrap CI.

        The interval is the percentile bootstrap (Efron & Tibshirani 1993,
        ch. 13), in float64: with ``x`` the ``n`` returns and
        ``rng = numpy.random.default_rng(rng_seed)``, the resample indices are
        ``rng.integers(0, n, size=(num_resamples, n))`` (drawn in row blocks,
        which gives the same numbers), the resample means are the row means of
        ``x[indices]``, and ``ci95 = numpy.percentile(means, [2.5, 97.5])``
        (linear interpolation). One episode gives ``(x, x)``.

        Raises:
            ValueError: for no returns, a NaN or infinite return, or seeds
                whose count differs from the returns'.
        """
        values = np.asarray(returns, dtype=np.float64)
        if values.ndim != 1 or values.size == 0:
            raise ValueError(f"returns must be a non-empty 1-D sequence, got shape {values.shape}.")
        if not np.all(np.isfinite(values)):
            raise ValueError("returns must be finite; got NaN or inf.")
        if seeds is not None:
            seeds = tuple(int(seed) for seed in seeds)
            if len(seeds) != values.size:
                raise ValueError(f"{len(seeds)} seeds for {values.size} returns.")
        if num_resamples < 1:
            raise ValueError(f"num_resamples must be >= 1, got {num_resamples}.")
        low, high = _bootstrap_ci95(values, rng_seed, num_resamples)
        return cls(
            mean=float(values.mean()),
            std=float(values.std()),
            num_episodes=int(values.size),
            ci95=(low, high),
            returns=tuple(float(value) for value in values),
            seeds=seeds,
        )

    def as_dict(self) -> dict:
        """``mean_return``, ``std_return``, ``num_episodes``, ``ci95``, ``seeds``: strict JSON."""
        return {
            "mean_return": self.mean,
            "std_return": self.std,
            "num_episodes": self.num_episodes,
            "ci95": [self.ci95[0], self.ci95[1]],
            "seeds": None if self.seeds is None else list(self.seeds),
        }


def _bootstrap_ci95(values: np.ndarray, rng_seed: int, num_resamples: int) -> tuple[float, float]:
    n = values.size
    rng = np.random.default_rng(rng_seed)
    rows = max(1, 1_000_000 // n)  # about 8 MB of indices at a time
    means = np.empty(num_resamples)
    for start in range(0, num_resamples, rows):
        stop = min(num_resamples, start + rows)
        means[start:stop] = values[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def normalized_score(
    mean_return: float, random_return: float, teacher_return: float
) -> float | None:
    """``(R − R_random) / (R_teacher − R_random)``: 0 is random, 1 is the teacher.

    Defined for any sign of the returns (a teacher at 0 is fine): on Acrobot a
    student at −84.5 against a teacher at −95.0 and random at −500 scores
    above 1. Returns None, never NaN, when it is undefined: the teacher does
    no better or worse than random (``R_teacher == R_random``), or a return
    is not finite.
    """
    values = (mean_return, random_return, teacher_return)
    if any(value is None or not math.isfinite(value) for value in values):
        return None
    span = float(teacher_return) - float(random_return)
    if span == 0.0:
        return None
    score = (float(mean_return) - float(random_return)) / span
    return score if math.isfinite(score) else None


# ------------------------------------------------------------------ evaluation


def evaluate_policy(
    env_id: str,
    policy: Policy | Network,
    seeds: Sequence[int],
    num_envs: int = 10,
    max_episode_steps: int | None = None,
) -> ReturnStats:
    """The return of ``policy`` over one episode per seed.

    Episode ``k`` starts from ``env.reset(seed=seeds[k])``; ``num_envs`` of
    them run side by side, so the policy sees batched observations. A policy's
    random draws (ε, β, a random policy) come from
    ``numpy.random.default_rng(seeds)``, so the same arguments give the same
    :class:`ReturnStats` (a random policy's draws also depend on ``num_envs``,
    which sets how many observations each call gets).

    Args:
        env_id: gymnasium id.
        policy: a :class:`~tfkd.rl.policies.Policy`, or a network (acted on
            greedily; its output width is checked against the action space).
        seeds: the episode seeds, e.g. ``held_out_seeds(seed, 100)``; each in
            ``[0, 2**32)``.
        num_envs: episodes run in parallel.
        max_episode_steps: optional time limit override.
    """
    seeds = _episode_seeds(seeds)
    if isinstance(num_envs, bool) or not isinstance(num_envs, numbers.Integral) or num_envs < 1:
        raise ValueError(f"num_envs must be a positive integer, got {num_envs!r}.")
    kwargs = {} if max_episode_steps is None else {"max_episode_steps": max_episode_steps}
    rng = np.random.default_rng(seeds)
    returns: list[float] = []
    for start in range(0, len(seeds), num_envs):
        chunk = seeds[start : start + num_envs]
        env = make_vector_env(env_id, len(chunk), **kwargs)
        try:
            if not isinstance(policy, Policy):
                policy = GreedyPolicy(policy, env_spec(env, env_id).num_actions)
            returns.extend(_run_episodes(env, policy, list(chunk), rng))
        finally:
            env.close()
    return ReturnStats.from_returns(returns, seeds)


def _run_episodes(env, policy: Policy, seeds: list[int], rng: np.random.Generator) -> list[float]:
    observations, _ = env.reset(seed=seeds)
    returns = np.zeros(env.num_envs)
    running = np.ones(env.num_envs, dtype=bool)
    while running.any():
        actions = np.asarray(policy(observations, rng), dtype=np.int64)
        observations, rewards, terminated, truncated, _ = env.step(actions)
        returns += np.where(running, rewards, 0.0)
        running &= ~np.logical_or(terminated, truncated)
    return returns.tolist()


def random_policy(num_actions: int) -> UniformRandomPolicy:
    """The uniform-random policy: the baseline of :func:`normalized_score`."""
    return UniformRandomPolicy(num_actions)


def action_agreement(teacher: Network, student: Network, observations: np.ndarray) -> float:
    """Fraction of ``observations`` on which ``argmax`` teacher == ``argmax`` student."""
    observations = np.asarray(observations)
    if len(observations) == 0:
        raise ValueError("action_agreement needs at least one observation.")
    teacher_actions = np.argmax(network_outputs(teacher)(observations), axis=-1)
    student_actions = np.argmax(network_outputs(student)(observations), axis=-1)
    return float(np.mean(teacher_actions == student_actions))


def median_call_seconds(function, argument, repeats: int = 1_000, warmup: int = 50) -> float:
    """Median wall-clock seconds of ``function(argument)`` over ``repeats`` timed calls.

    Each call is timed on its own with ``time.perf_counter`` after ``warmup``
    untimed calls (tracing, allocation, caches); the median resists the
    outliers a shared machine adds. The one timer of tfkd: the evaluation's
    latency and ``tfkd.deploy``'s artefact report both use it.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got {repeats} and {warmup}.")
    for _ in range(warmup):
        function(argument)
    timings = np.empty(repeats)
    clock = time.perf_counter
    for index in range(repeats):
        start = clock()
        function(argument)
        timings[index] = clock() - start
    return float(np.median(timings))


def inference_latency(
    network: Network, observation: np.ndarray, repeats: int = 200, warmup: int = 20
) -> float:
    """Median seconds to choose one action: a batch-1 compiled forward pass + argmax."""
    forward = network_outputs(network)
    return median_call_seconds(lambda batch: np.argmax(forward(batch), axis=-1),
                               np.asarray(observation)[None], repeats, warmup)


# ------------------------------------------------------------------ comparison


@dataclass(frozen=True)
class PolicyComparison:
    """A student measured against its teacher and the random policy, on the same seeds.

    Attributes:
        teacher, student, random: :class:`ReturnStats` of the greedy teacher,
            the greedy student and the uniform-random policy.
        normalized_score: the student's :func:`normalized_score` (None when
            undefined).
        agreement: fraction of the student's visited states where teacher and
            student pick the same action.
        teacher_params, student_params: parameter counts (None for a network
            without weights or variables, e.g. a plain function).
        teacher_latency_s, student_latency_s: median seconds per action at
            batch 1 (None when not measured).
    """

    teacher: ReturnStats
    student: ReturnStats
    random: ReturnStats
    normalized_score: float | None
    agreement: float
    teacher_params: int | None
    student_params: int | None
    teacher_latency_s: float | None = None
    student_latency_s: float | None = None

    @property
    def teacher_normalized_score(self) -> float | None:
        """1 by definition, or None where the score is undefined (teacher == random)."""
        return None if self.normalized_score is None else 1.0

    @property
    def seeds(self) -> tuple[int, ...] | None:
        """The episode seeds all three were evaluated on."""
        return self.student.seeds

    def as_dict(self) -> dict:
        """The record a results file holds; strict JSON (no NaN or infinity).

        ``eval_seeds``, ``episodes``, ``agreement``, and ``teacher`` /
        ``student`` / ``random`` each with ``mean_return``, ``std_return``,
        ``num_episodes``, ``ci95`` and ``normalized_score`` (teacher and
        student also ``params`` and ``latency_s``).
        """
        random_score = None if self.normalized_score is None else 0.0

        def row(stats: ReturnStats, score, **extra) -> dict:
            record = stats.as_dict()
            del record["seeds"]  # one list, at the top
            return {**extra, **record, "normalized_score": score}

        return {
            "eval_seeds": None if self.seeds is None else list(self.seeds),
            "episodes": self.student.num_episodes,
            "agreement": self.agreement,
            "teacher": row(self.teacher, self.teacher_normalized_score,
                           params=self.teacher_params, latency_s=self.teacher_latency_s),
            "student": row(self.student, self.normalized_score,
                           params=self.student_params, latency_s=self.student_latency_s),
            "random": row(self.random, random_score),
        }


def compare_policies(
    env_id: str,
    teacher: Network,
    student: Network,
    seeds: Sequence[int],
    num_envs: int = 10,
    max_episode_steps: int | None = None,
    teacher_return: ReturnStats | None = None,
    random_return: ReturnStats | None = None,
    measure_latency: bool = True,
) -> PolicyComparison:
    """Evaluates teacher, student and the random policy on the same seeded episodes.

    Agreement is measured on the states the *student* visits (the states that
    matter when it acts alone), collected while evaluating it.

    Args:
        env_id: gymnasium id.
        teacher, student: networks, acted on greedily.
        seeds: the episode seeds, normally ``held_out_seeds(seed, n)``.
        num_envs, max_episode_steps: see :func:`evaluate_policy`.
        teacher_return, random_return: cached evaluations on the same seeds
            (e.g. for several students of one teacher).
        measure_latency: also time one action of each network at batch 1.

    Raises:
        ValueError: a cached evaluation is on other seeds; a network's output
            width does not match the env's actions.
    """
    seeds = _episode_seeds(seeds)
    for name, cached in (("teacher_return", teacher_return), ("random_return", random_return)):
        if cached is not None and cached.seeds != seeds:
            raise ValueError(
                f"{name} was measured on other episode seeds than this comparison on {env_id}."
            )
    probe = make_vector_env(env_id, 1, **({} if max_episode_steps is None
                                           else {"max_episode_steps": max_episode_steps}))
    try:
        num_actions = env_spec(probe, env_id).num_actions
    finally:
        probe.close()
    teacher_outputs = network_outputs(teacher, num_actions)
    student_outputs = network_outputs(student, num_actions)
    student_policy = _AgreementCounter(student_outputs, teacher_outputs)
    common = dict(num_envs=num_envs, max_episode_steps=max_episode_steps)
    student_return = evaluate_policy(env_id, student_policy, seeds, **common)
    if teacher_return is None:
        teacher_return = evaluate_policy(env_id, GreedyPolicy(teacher_outputs), seeds, **common)
    if random_return is None:
        random_return = evaluate_policy(env_id, random_policy(num_actions), seeds, **common)
    latencies = (None, None)
    if measure_latency:
        observation = student_policy.first_observation
        latencies = tuple(inference_latency(net, observation)
                          for net in (teacher_outputs, student_outputs))
    return PolicyComparison(
        teacher=teacher_return,
        student=student_return,
        random=random_return,
        normalized_score=normalized_score(student_return.mean, random_return.mean,
                                          teacher_return.mean),
        agreement=student_policy.agreement,
        teacher_params=_params(teacher),
        student_params=_params(student),
        teacher_latency_s=latencies[0],
        student_latency_s=latencies[1],
    )


def _params(network) -> int | None:
    if isinstance(network, NetworkOutputs):
        network = network.network
    try:
        return count_params(network)
    except TypeError:
        return None


class _AgreementCounter(Policy):
    """The greedy student, counting how often the teacher would pick the same action.

    Counting as it goes keeps no observations, so agreement over long Atari
    evaluations costs no memory.
    """

    def __init__(self, student: NetworkOutputs, teacher: NetworkOutputs):
        self.student, self.teacher = student, teacher
        self.matches = self.count = 0
        self.first_observation = None

    def __call__(self, observations, rng):
        actions = np.argmax(self.student(observations), axis=-1)
        teacher_actions = np.argmax(self.teacher(observations), axis=-1)
        self.matches += int(np.sum(actions == teacher_actions))
        self.count += len(actions)
        if self.first_observation is None:
            self.first_observation = np.array(observations[0])
        return actions

    @property
    def agreement(self) -> float:
        return self.matches / self.count
