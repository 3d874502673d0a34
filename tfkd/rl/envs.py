"""Gymnasium environments for distillation: creation, vectorisation, specs.

Only discrete action spaces are supported: a teacher's outputs are one logit
or Q-value per action; observations are vectors, stacked frames for Atari
(``ALE/...`` ids, :func:`is_atari`) or MinAtar's small boolean frames
(``MinAtar/...`` ids, :func:`is_minatar`; Young & Tian 2019). Every function raises a clear one-line
``ValueError`` on an environment tfkd cannot distil (:func:`check_discrete`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import gymnasium as gym
import numpy as np

ATARI_PREFIX = "ALE/"
MINATAR_PREFIX = "MinAtar/"
# MinAtar registers no time limit; a cap keeps one endless episode (a good
# Breakout player) from stalling an evaluation.
MINATAR_MAX_EPISODE_STEPS = 10_000


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


def is_atari(env_id: str) -> bool:
    """Whether ``env_id`` is an Atari game (``ALE/...``): frame preprocessing and a CNN."""
    return env_id.startswith(ATARI_PREFIX)


def is_minatar(env_id: str) -> bool:
    """Whether ``env_id`` is a MinAtar game (``MinAtar/...``): 10x10xC boolean frames."""
    return env_id.startswith(MINATAR_PREFIX)


def check_discrete(
    action_space: gym.Space,
    env_id: str = "environment",
    observation_space: gym.Space | None = None,
    allow_images: bool = True,
) -> int:
    """Returns the number of actions, or raises if tfkd cannot distil this env.

    tfkd needs a ``Discrete`` action space starting at 0 and, when
    ``observation_space`` is given, a ``Box`` observation space of rank 1
    (vectors) or, with ``allow_images``, rank 3 (height, width, channels).

    Args:
        action_space: the (single) action space.
        env_id: named in the error messages.
        observation_space: the (single) observation space; not checked if None.
        allow_images: accept rank-3 observations (the CNN paths); False for
            the MLP-only paths.

    Raises:
        ValueError: one line naming the env and the offending space.
    """
    if not isinstance(action_space, gym.spaces.Discrete):
        raise ValueError(
            f"{env_id} has action space {action_space}; tfkd distils policies over a "
            "discrete action space (gymnasium.spaces.Discrete) only, so continuous-control "
            "environments (e.g. Pendulum, LunarLanderContinuous) are not supported."
        )
    if int(action_space.start) != 0:
        raise ValueError(f"{env_id}: Discrete action spaces must start at 0, got {action_space}.")
    if observation_space is not None:
        _check_observation_space(observation_space, env_id, allow_images)
    return int(action_space.n)


def _check_observation_space(space: gym.Space, env_id: str, allow_images: bool) -> None:
    if not isinstance(space, gym.spaces.Box):
        hint = (
            " (flatten it with gymnasium.wrappers.FlattenObservation)"
            if isinstance(space, (gym.spaces.Dict, gym.spaces.Tuple))
            else ""
        )
        raise ValueError(
            f"{env_id} has a {type(space).__name__} observation space {space}; tfkd needs a "
            f"Box observation space{hint}."
        )
    ranks = (1, 3) if allow_images else (1,)
    if len(space.shape) not in ranks:
        kind = "vectors (rank 1)" + (" or images (rank 3)" if allow_images else "")
        hint = (
            ""
            if allow_images
            else "; image observations need a CNN: use an ALE/... or MinAtar/... id"
        )
        raise ValueError(
            f"{env_id} has observations of shape {space.shape}; tfkd needs {kind}{hint}."
        )


def env_spec(env: gym.Env | gym.vector.VectorEnv, env_id: str | None = None) -> EnvSpec:
    """Reads the :class:`EnvSpec` of a single or vectorised environment."""
    if isinstance(env, gym.vector.VectorEnv):
        observation_space, action_space = env.single_observation_space, env.single_action_space
    else:
        observation_space, action_space = env.observation_space, env.action_space
    if env_id is None:
        env_id = env.spec.id if getattr(env, "spec", None) is not None else type(env).__name__
    num_actions = check_discrete(action_space, env_id, observation_space)
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
    register_env_family(env_id)
    if is_minatar(env_id):
        kwargs.setdefault("max_episode_steps", MINATAR_MAX_EPISODE_STEPS)
    env = gym.make(env_id, **kwargs)
    try:
        check_discrete(env.action_space, env_id, env.observation_space)
    except ValueError:
        env.close()
        raise
    if seed is not None:
        env.action_space.seed(seed)
    return env


def register_env_family(env_id: str) -> None:
    """Registers the gymnasium ids of ``env_id``'s family, once: ALE's for
    ``ALE/...``, MinAtar's for ``MinAtar/...``; other ids need nothing.

    Raises:
        ImportError: if the family's package (``ale_py``, ``minatar``) is missing.
    """
    if is_atari(env_id):
        import ale_py  # optional dependency, needed for ALE/ ids only

        gym.register_envs(ale_py)
    elif is_minatar(env_id):
        try:
            import minatar.gym  # optional dependency, needed for MinAtar/ ids only
        except ImportError:
            raise ImportError('MinAtar ids need the minatar package: pip install "tfkd[minatar]"'
                              ) from None
        if MINATAR_PREFIX + "Breakout-v1" not in gym.registry:
            minatar.gym.register_envs()  # importing it registers nothing; twice warns


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
        make = make_atari_env if is_atari(env_id) else make_env
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


def check_fits(model, spec: EnvSpec, what: str = "the network") -> None:
    """Raises unless the Keras ``model`` maps ``spec``'s observations to one value per action.

    Raises:
        ValueError: one line naming ``what``, its shapes and the env's.
    """
    try:
        inputs, outputs = tuple(model.input_shape[1:]), tuple(model.output_shape[1:])
    except (AttributeError, TypeError):  # several inputs or outputs
        raise ValueError(f"{what} must have one input and one output.") from None
    if inputs != tuple(spec.observation_shape) or outputs != (spec.num_actions,):
        raise ValueError(
            f"{what} takes observations {inputs} and gives {outputs} outputs, but "
            f"{spec.env_id} has observations {tuple(spec.observation_shape)} and "
            f"{spec.num_actions} actions.")
