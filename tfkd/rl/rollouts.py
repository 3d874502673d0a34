"""Rollouts: run a control policy in vectorised environments and label every
visited state with the teacher's outputs.

Labelling the states the *control* policy visits, whoever that is, is the one
idea shared by teacher-driven (Rusu et al. 2016) and student-driven
distillation (Ross et al. 2011; Czarnecki et al. 2019).

The control policy acts once per vector step; the teacher labels the whole
collection afterwards, in batches of :data:`LABEL_BATCH` states, so
labelling costs a few large network calls instead of one small call per step.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np

from tfkd.rl.envs import check_observations, env_spec
from tfkd.rl.policies import Network, Policy, network_outputs

#: States the teacher labels per network call (bounds the memory of a call on frames).
LABEL_BATCH = 4096


@dataclass
class Rollout:
    """Labelled experience from one call to :meth:`RolloutCollector.collect`.

    Attributes:
        observations: ``[steps, *observation_shape]`` states the control policy saw.
        teacher_outputs: ``[steps, num_actions]`` teacher logits/Q-values for them.
        actions: ``[steps]`` actions the control policy took.
        rewards: ``[steps]`` rewards received.
        episode_returns: undiscounted returns of the episodes that ended.
        episode_lengths: lengths of the episodes that ended.
    """

    observations: np.ndarray
    teacher_outputs: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    episode_returns: list[float] = field(default_factory=list)
    episode_lengths: list[int] = field(default_factory=list)

    @property
    def num_steps(self) -> int:
        return len(self.observations)


class RolloutCollector:
    """Steps a vector env under a control policy, keeping episodes across calls.

    Args:
        env: a gymnasium vector env with same-step autoreset
            (:func:`tfkd.rl.envs.make_vector_env`).
        teacher: network whose outputs label every visited observation.
        seed: seeds the first reset and the policy's random generator.
    """

    def __init__(self, env: gym.vector.VectorEnv, teacher: Network, seed: int = 0):
        self.env = env
        self.spec = env_spec(env)
        self.teacher = network_outputs(teacher, self.spec.num_actions)
        self.rng = np.random.default_rng(seed)
        self._observations, _ = env.reset(seed=seed)
        self._returns = np.zeros(env.num_envs)
        self._lengths = np.zeros(env.num_envs, dtype=np.int64)
        self.total_steps = 0

    def collect(self, policy: Policy, num_steps: int) -> Rollout:
        """Runs ``policy`` for at least ``num_steps`` env steps (all envs together).

        Steps are taken in multiples of ``env.num_envs``.
        """
        if num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {num_steps}.")
        num_envs = self.env.num_envs
        observations, actions, rewards = [], [], []
        returns, lengths = [], []
        for _ in range(-(-num_steps // num_envs)):
            obs = check_observations(self._observations, self.spec)
            action = np.asarray(policy(obs, self.rng), dtype=np.int64)
            observations.append(obs)
            actions.append(action)
            self._observations, reward, terminated, truncated, _ = self.env.step(action)
            rewards.append(reward)
            self._returns += reward
            self._lengths += 1
            for i in np.flatnonzero(np.logical_or(terminated, truncated)):
                returns.append(float(self._returns[i]))
                lengths.append(int(self._lengths[i]))
                self._returns[i], self._lengths[i] = 0.0, 0
        observations = np.concatenate(observations)
        rollout = Rollout(
            observations=observations,
            teacher_outputs=self.label(observations),
            actions=np.concatenate(actions),
            rewards=np.concatenate(rewards).astype(np.float32),
            episode_returns=returns,
            episode_lengths=lengths,
        )
        self.total_steps += rollout.num_steps
        return rollout

    def label(self, observations: np.ndarray) -> np.ndarray:
        """The teacher's outputs for ``observations``, float32, :data:`LABEL_BATCH` at a time."""
        return label_in_batches(self.teacher, observations, LABEL_BATCH)


def label_in_batches(network: Network, observations: np.ndarray, batch_size: int) -> np.ndarray:
    """``network``'s outputs for ``observations``, ``batch_size`` per call, float32."""
    outputs = network_outputs(network)
    return np.concatenate([
        outputs(observations[start:start + batch_size])
        for start in range(0, len(observations), batch_size)
    ]).astype(np.float32)
