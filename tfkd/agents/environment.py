"""A gymnasium environment as a TF-Agents ``PyEnvironment``.

TF-Agents 0.19's ``GymWrapper`` speaks the old ``gym`` API (``step`` returns
four values, ``reset`` returns only the observation); its gymnasium wrapper
exists only on the unreleased master branch. This module is the adapter
between the two:

* ``terminated`` becomes ``ts.termination`` (discount 0): the episode really
  ended and nothing is bootstrapped from the last state;
* ``truncated`` (a time limit) becomes ``ts.truncation`` (discount 1): the
  episode stops but the value of the last state still counts;
* the base class resets the environment after a last step
  (``handle_auto_reset=True``), as TF-Agents drivers expect — without it an
  episode never ends for them.

Reference: Guadarrama et al. 2018, "TF-Agents: A library for Reinforcement
Learning in TensorFlow", https://github.com/tensorflow/agents.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from tf_agents.environments import py_environment
from tf_agents.specs import array_spec
from tf_agents.trajectories import time_step as ts

from tfkd.rl.envs import check_discrete

__all__ = ["GymnasiumEnvironment"]


class GymnasiumEnvironment(py_environment.PyEnvironment):
    """Wraps a gymnasium environment with a discrete action space.

    Example:
      >>> env = GymnasiumEnvironment("CartPole-v1", seed=0)
      >>> tf_env = tf_agents.environments.TFPyEnvironment(env)

    Args:
      env: a ``gymnasium.Env`` or an environment id for ``gymnasium.make``.
      discount: discount of every non-terminal step (the agent applies its own
        ``gamma`` on top; 1.0 is what TF-Agents' suites use).
      seed: seed of the first reset; later resets continue the sequence.
      allow_images: accept image observations (rank 3), as the Atari path does.
      **make_kwargs: passed to ``gymnasium.make`` when ``env`` is an id.

    Raises:
      ValueError: if the action space is not discrete or the observations are
        not vectors (or images, with ``allow_images``).
    """

    def __init__(self, env: gym.Env | str, discount: float = 1.0, seed: int | None = None,
                 allow_images: bool = False, **make_kwargs: Any) -> None:
        super().__init__(handle_auto_reset=True)
        self._env = gym.make(env, **make_kwargs) if isinstance(env, str) else env
        env_id = self._env.spec.id if self._env.spec is not None else type(self._env).__name__
        check_discrete(self._env.action_space, env_id, self._env.observation_space, allow_images)
        self._discount = np.float32(discount)
        self._seed = seed
        space = self._env.observation_space
        if np.issubdtype(space.dtype, np.integer):  # Frames: bounded, e.g. uint8 in [0, 255].
            self._observation_spec = array_spec.BoundedArraySpec(
                shape=space.shape, dtype=space.dtype, minimum=space.low.min(),
                maximum=space.high.max(), name="observation")
        else:  # Vector bounds are often +-inf or float32's extremes: leave them out.
            self._observation_spec = array_spec.ArraySpec(
                shape=space.shape, dtype=space.dtype, name="observation")
        self._action_spec = array_spec.BoundedArraySpec(
            shape=(), dtype=np.int64, minimum=0,
            maximum=int(self._env.action_space.n) - 1, name="action")

    @property
    def gymnasium_env(self) -> gym.Env:
        """The wrapped gymnasium environment."""
        return self._env

    def observation_spec(self) -> array_spec.ArraySpec:
        return self._observation_spec

    def action_spec(self) -> array_spec.BoundedArraySpec:
        return self._action_spec

    def _observation(self, observation: Any) -> np.ndarray:
        return np.asarray(observation, dtype=self._observation_spec.dtype)

    def _reset(self) -> ts.TimeStep:
        observation, _ = self._env.reset(seed=self._seed)
        self._seed = None  # Seed once; later resets continue the RNG stream.
        return ts.restart(self._observation(observation))

    def _step(self, action: Any) -> ts.TimeStep:
        action = int(np.asarray(action).item())
        observation, reward, terminated, truncated, _ = self._env.step(action)
        observation = self._observation(observation)
        reward = np.float32(reward)
        if terminated:
            return ts.termination(observation, reward)
        if truncated:
            return ts.truncation(observation, reward, self._discount)
        return ts.transition(observation, reward, self._discount)

    def render(self, mode: str = "rgb_array") -> Any:
        return self._env.render()

    def close(self) -> None:
        self._env.close()
