"""Gymnasium environments for distillation: creation, vectorisation, specs.

Only discrete action spaces are supported: a teacher's outputs are one logit
or Q-value per action. Every function raises a clear ``ValueError`` on an
environment tfkd cannot distil.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import gymnasium as gym
import numpy as np


@dataclass(frozen=True)
class EnvSpec:
    """What a network needs to know about an environment.

    Attributes:
        env_id: the gymnasium id, e.g. ``"CartPole-v1"``.
        observation_shape: shape of one observation (no batch axis).
        observation_dtype: numpy dtype of observations.
        num_actions: size of the discrete action space.
    """

    env_id: str
    observation_shape: tuple[int, ...]
    observation_dtype: np.dtype
    num_actions: int


def check_discrete(action_space: gym.Space, env_id: str = "environment") -> int:
    """Returns the number of actions, or raises if the space is not discrete.

    Raises:
        ValueError: for Box, MultiDiscrete or any other non-``Discrete`` space.
    """
    if not isinstance(action_space, gym.spaces.Discrete):
        raise ValueError(
            f"{env_id} has action space {action_space}; tfkd.rl distils policies "
            "over a discrete action space (gymnasium.spaces.Discrete) only."
        )
    if int(action_space.start) != 0:
        raise ValueError(f"{env_id}: Discrete action spaces must start at 0, got {action_space}.")
    return int(action_space.n)


def env_spec(env: gym.Env | gym.vector.VectorEnv, env_id: str | None = None) -> EnvSpec:
    """Reads the :class:`EnvSpec` of a single or vectorised environment."""
    if isinstance(env, gym.vector.VectorEnv):
        observation_space, action_space = env.single_observation_space, env.single_action_space
    else:
        observation_space, action_space = env.observation_space, env.action_space
    if env_id is None:
        env_id = env.spec.id if getattr(env, "spec", None) is not None else type(env).__name__
    num_actions = check_discrete(action_space, env_id)
    if observation_space.shape is None:
        raise ValueError(f"{env_id}: observation space {observation_space} has no fixed shape.")
    return EnvSpec(
        env_id=env_id,
        observation_shape=tuple(observation_space.shape),
        observation_dtype=np.dtype(observation_space.dtype),
        num_actions=num_actions,
    )


def make_env(env_id: str, seed: int | None = None, **kwargs) -> gym.Env:
    """Creates one gymnasium environment with a discrete action space.

    Args:
        env_id: a registered gymnasium id (``"CartPole-v1"``, ``"LunarLander-v3"``,
            ``"ALE/Pong-v5"`` once ``ale_py`` is imported, ...).
        seed: seeds the action space; pass the reset seed to ``env.reset``.
        **kwargs: forwarded to ``gymnasium.make``.
    """
    if env_id.startswith("ALE/"):
        import ale_py

        gym.register_envs(ale_py)
    env = gym.make(env_id, **kwargs)
    try:
        check_discrete(env.action_space, env_id)
    except ValueError:
        env.close()
        raise
    if seed is not None:
        env.action_space.seed(seed)
    return env


def make_vector_env(
    env_id: str,
    num_envs: int,
    env_fn: Callable[[], gym.Env] | None = None,
    **kwargs,
) -> gym.vector.SyncVectorEnv:
    """Creates ``num_envs`` copies stepped in lock-step (same-step autoreset).

    A synchronous vector env batches the policy's forward pass, which is what
    costs time here (tiny classic-control envs step in microseconds).

    Args:
        env_id: gymnasium id.
        num_envs: number of copies, at least 1.
        env_fn: optional factory used instead of ``make_env(env_id, **kwargs)``
            (``ALE/...`` ids default to :func:`make_atari_env`).
        **kwargs: forwarded to ``gymnasium.make``.
    """
    if num_envs < 1:
        raise ValueError(f"num_envs must be >= 1, got {num_envs}.")
    if env_fn is None:
        make = make_atari_env if env_id.startswith("ALE/") else make_env
        env_fn = lambda: make(env_id, **kwargs)  # noqa: E731
    factory = env_fn
    return gym.vector.SyncVectorEnv(
        [factory for _ in range(num_envs)],
        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
    )


def make_atari_env(env_id: str, frame_stack: int = 4, **kwargs) -> gym.Env:
    """Atari with the DQN preprocessing (Mnih et al. 2015).

    84×84 grey-scale frames, frame skip 4, up to 30 no-op starts, ``frame_stack``
    frames stacked on the last axis so observations are ``(84, 84, frame_stack)``
    uint8, matching ``tfkd.models.build_nature_cnn``. Needs ``ale-py`` and
    OpenCV (``pip install "gymnasium[atari,other]"``).
    """
    env = make_env(env_id, frameskip=1, **kwargs)
    try:
        env = gym.wrappers.AtariPreprocessing(
            env, frame_skip=4, screen_size=84, grayscale_obs=True
        )
    except gym.error.DependencyNotInstalled as error:
        env.close()
        raise ImportError(
            'Atari preprocessing needs OpenCV: pip install "gymnasium[other]"'
        ) from error
    env = gym.wrappers.FrameStackObservation(env, frame_stack)
    return gym.wrappers.TransformObservation(
        env,
        lambda obs: np.moveaxis(np.asarray(obs), 0, -1),
        gym.spaces.Box(0, 255, (84, 84, frame_stack), np.uint8),
    )


def check_observations(observations: np.ndarray, spec: EnvSpec) -> np.ndarray:
    """Checks a batch of observations against ``spec``; returns it as an array.

    Raises:
        ValueError: if the trailing shape is not ``spec.observation_shape``.
    """
    observations = np.asarray(observations)
    if observations.shape[1:] != spec.observation_shape:
        raise ValueError(
            f"{spec.env_id}: expected observations of shape (batch, "
            f"{', '.join(map(str, spec.observation_shape))}), got {observations.shape}."
        )
    return observations
