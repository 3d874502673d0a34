"""Evaluation of distilled policies: return, agreement, size and speed.

Returns are undiscounted, over ``num_episodes`` episodes whose resets are
seeded ``seed, seed + 1, ...``, so the teacher and the student face the same
initial states. Rusu et al. 2016 report the student's score as a percentage
of the teacher's; :class:`PolicyComparison` does the same.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np

from tfkd.rl.envs import make_vector_env
from tfkd.rl.policies import GreedyPolicy, Network, Policy, as_policy, network_outputs


@dataclass(frozen=True)
class ReturnStats:
    """Mean and standard deviation of the return over seeded episodes."""

    mean: float
    std: float
    num_episodes: int
    returns: tuple[float, ...]


def evaluate_policy(
    env_id: str,
    policy: Policy | Network,
    num_episodes: int = 100,
    seed: int = 0,
    num_envs: int = 10,
    max_episode_steps: int | None = None,
) -> ReturnStats:
    """Mean and std of the return of ``policy`` over seeded episodes.

    Episode ``k`` starts from ``env.reset(seed=seed + k)``; ``num_envs`` of them
    run side by side so the policy sees batched observations.

    Args:
        env_id: gymnasium id.
        policy: a :class:`~tfkd.rl.policies.Policy`, or a network (acted on greedily).
        num_episodes: how many episodes.
        seed: seed of the first episode.
        num_envs: episodes run in parallel.
        max_episode_steps: optional time limit override.
    """
    if num_episodes < 1:
        raise ValueError(f"num_episodes must be >= 1, got {num_episodes}.")
    policy = as_policy(policy)
    kwargs = {} if max_episode_steps is None else {"max_episode_steps": max_episode_steps}
    rng = np.random.default_rng(seed)
    returns: list[float] = []
    for start in range(0, num_episodes, num_envs):
        count = min(num_envs, num_episodes - start)
        env = make_vector_env(env_id, count, **kwargs)
        try:
            returns.extend(_run_episodes(env, policy, [seed + start + i for i in range(count)], rng))
        finally:
            env.close()
    returns_array = np.asarray(returns)
    return ReturnStats(
        float(returns_array.mean()), float(returns_array.std()), len(returns), tuple(returns)
    )


def _run_episodes(env, policy, seeds, rng) -> list[float]:
    observations, _ = env.reset(seed=seeds)
    returns = np.zeros(env.num_envs)
    running = np.ones(env.num_envs, dtype=bool)
    while running.any():
        actions = np.asarray(policy(observations, rng), dtype=np.int64)
        observations, rewards, terminated, truncated, _ = env.step(actions)
        returns += np.where(running, rewards, 0.0)
        running &= ~np.logical_or(terminated, truncated)
    return returns.tolist()


def action_agreement(teacher: Network, student: Network, observations: np.ndarray) -> float:
    """Fraction of ``observations`` on which ``argmax`` teacher == ``argmax`` student."""
    observations = np.asarray(observations)
    if len(observations) == 0:
        raise ValueError("action_agreement needs at least one observation.")
    teacher_actions = np.argmax(network_outputs(teacher)(observations), axis=-1)
    student_actions = np.argmax(network_outputs(student)(observations), axis=-1)
    return float(np.mean(teacher_actions == student_actions))


def count_params(network) -> int:
    """Number of parameters of a Keras model or of anything with ``variables``."""
    variables = getattr(network, "weights", None) or getattr(network, "variables", None)
    if variables is None:
        raise TypeError(f"cannot count the parameters of {type(network).__name__}.")
    return int(sum(np.prod(v.shape) for v in variables))


def inference_latency(
    network: Network, observation: np.ndarray, repeats: int = 200, warmup: int = 20
) -> float:
    """Median seconds to choose one action: a batch-1 compiled forward pass + argmax."""
    forward = network_outputs(network)
    batch = np.asarray(observation)[None]
    for _ in range(warmup):
        np.argmax(forward(batch), axis=-1)
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        np.argmax(forward(batch), axis=-1)
        timings.append(time.perf_counter() - start)
    return float(np.median(timings))


@dataclass(frozen=True)
class PolicyComparison:
    """A student measured against its teacher.

    Attributes:
        teacher_return, student_return: :class:`ReturnStats` over the same seeds.
        percent_of_teacher: ``100 · student mean / teacher mean`` (Rusu et al. 2016).
        agreement: fraction of the student's visited states where both pick
            the same action.
        teacher_params, student_params: parameter counts.
        teacher_latency_s, student_latency_s: seconds per action (batch 1).
    """

    teacher_return: ReturnStats
    student_return: ReturnStats
    percent_of_teacher: float
    agreement: float
    teacher_params: int
    student_params: int
    teacher_latency_s: float
    student_latency_s: float

    def summary(self) -> dict:
        """Flat dict of the headline numbers (no per-episode returns)."""
        row = asdict(self)
        for who in ("teacher", "student"):
            stats = row.pop(f"{who}_return")
            row[f"{who}_return_mean"], row[f"{who}_return_std"] = stats["mean"], stats["std"]
        return row


def compare_policies(
    env_id: str,
    teacher: Network,
    student: Network,
    num_episodes: int = 100,
    seed: int = 10_000,
    teacher_return: ReturnStats | None = None,
) -> PolicyComparison:
    """Evaluates teacher and student on the same seeded episodes.

    Agreement is measured on the states the *student* visits (the states that
    matter when it acts alone), collected while evaluating it.

    Args:
        teacher_return: a cached evaluation of the teacher on the same seeds.
    """
    recorder = _RecordingPolicy(GreedyPolicy(student))
    student_return = evaluate_policy(env_id, recorder, num_episodes, seed)
    if teacher_return is None:
        teacher_return = evaluate_policy(env_id, GreedyPolicy(teacher), num_episodes, seed)
    visited = np.concatenate(recorder.observations)
    observation = visited[0]
    return PolicyComparison(
        teacher_return=teacher_return,
        student_return=student_return,
        percent_of_teacher=100.0 * student_return.mean / teacher_return.mean,
        agreement=action_agreement(teacher, student, visited),
        teacher_params=count_params(teacher),
        student_params=count_params(student),
        teacher_latency_s=inference_latency(teacher, observation),
        student_latency_s=inference_latency(student, observation),
    )


class _RecordingPolicy(Policy):
    """Keeps the observations a policy is asked to act on."""

    def __init__(self, policy: Policy):
        self.policy, self.observations = policy, []

    def __call__(self, observations, rng):
        self.observations.append(np.array(observations, dtype=np.float32))
        return self.policy(observations, rng)


# --- TEMPORARY SHIM (rl-loops branch): stands in for the seed-based evaluation
# API until it lands; the lead replaces this block with the real one. --------
_evaluate_policy_by_count = evaluate_policy


def selection_seeds(seed: int, n: int) -> list[int]:  # TEMPORARY SHIM
    return [seed + k for k in range(n)]


def evaluate_policy(env_id, policy, seeds=None, *args, num_envs=10, **kwargs):  # TEMPORARY SHIM
    if seeds is None or isinstance(seeds, (int, np.integer)):  # the old (num_episodes, seed) call
        count = () if seeds is None else (seeds,)
        return _evaluate_policy_by_count(env_id, policy, *count, *args, num_envs=num_envs, **kwargs)
    seeds = list(seeds)
    assert seeds == list(range(seeds[0], seeds[0] + len(seeds))), "shim: consecutive seeds only"
    return _evaluate_policy_by_count(env_id, policy, len(seeds), seeds[0], num_envs, **kwargs)


class _RandomPolicy(Policy):  # TEMPORARY SHIM
    def __init__(self, num_actions):
        self.num_actions = num_actions

    def __call__(self, observations, rng):
        return rng.integers(self.num_actions, size=len(observations))


def random_policy(num_actions: int) -> Policy:  # TEMPORARY SHIM
    return _RandomPolicy(num_actions)


def normalized_score(mean_return, random_return, teacher_return):  # TEMPORARY SHIM
    if teacher_return == random_return:
        return None
    return (mean_return - random_return) / (teacher_return - random_return)
# --- end of TEMPORARY SHIM ----------------------------------------------------
