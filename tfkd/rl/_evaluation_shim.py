"""TEMPORARY SHIM — delete once tfkd.rl.evaluation provides the PLAN.md interface.

Stands in for ``tfkd.rl.evaluation.selection_seeds``, ``ReturnStats.from_returns``
and ``evaluate_policy(env_id, policy, seeds, ...)`` so the DQN trainers can be
tested before that module lands. ``tfkd.rl.dqn`` uses it only when
``tfkd.rl.evaluation`` has no ``selection_seeds``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tfkd.rl.envs import make_vector_env
from tfkd.rl.policies import as_policy


def selection_seeds(seed: int, n: int) -> list[int]:
    return [1_000_000 + 1_000 * seed + k for k in range(n)]


@dataclass(frozen=True)
class ReturnStats:
    mean: float
    std: float
    num_episodes: int
    ci95: tuple
    returns: tuple
    seeds: tuple

    @classmethod
    def from_returns(cls, returns, seeds=None, rng_seed=0) -> "ReturnStats":
        values = np.asarray(returns, dtype=np.float64)
        return cls(float(values.mean()), float(values.std()), len(values),
                   (float(values.min()), float(values.max())), tuple(values.tolist()),
                   tuple(seeds) if seeds is not None else ())


def evaluate_policy(env_id, policy, seeds, num_envs=10, max_episode_steps=None) -> ReturnStats:
    policy, seeds = as_policy(policy), list(seeds)
    kwargs = {} if max_episode_steps is None else {"max_episode_steps": max_episode_steps}
    rng, returns = np.random.default_rng(0), []
    for start in range(0, len(seeds), num_envs):
        chunk = seeds[start:start + num_envs]
        env = make_vector_env(env_id, len(chunk), **kwargs)
        try:
            observations, _ = env.reset(seed=chunk)
            total, running = np.zeros(len(chunk)), np.ones(len(chunk), bool)
            while running.any():
                observations, rewards, terminated, truncated, _ = env.step(
                    np.asarray(policy(observations, rng), np.int64))
                total += np.where(running, rewards, 0.0)
                running &= ~np.logical_or(terminated, truncated)
            returns.extend(total.tolist())
        finally:
            env.close()
    return ReturnStats.from_returns(returns, seeds)
