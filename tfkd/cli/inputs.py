"""What a ``tfkd`` command is given, checked: env ids, teacher folders, Keras files.

Each function turns a bad input (an unknown env, a corrupt file, a teacher of
another env, a model that does not fit) into a one-line
:class:`~tfkd.cli.output.CliError`.
"""

from __future__ import annotations

import gymnasium as gym
import keras

from tfkd.cli.output import CliError
from tfkd.rl import teacher_io
from tfkd.rl.dqn import load_dqn_teacher as load_keras_dqn_teacher
from tfkd.rl.envs import check_fits, env_spec, is_atari, is_minatar, make_atari_env, make_env


def load_teacher(path: str, env_id: str | None):
    """A teacher from a train-teacher folder or a ``.keras`` file, and its env id.

    A teacher folder names the env it was trained on; ``env_id`` (``--env``)
    must then agree. A ``.keras`` file names none, so ``env_id`` is needed.
    """
    if path.endswith(".keras"):
        if env_id is None:
            raise CliError(f"--env is needed with the Keras teacher file {path!r} (it does not "
                           "record its environment).")
        teacher = load_keras_model(path, "teacher")
        check_model_fits(teacher, checked_env_spec(env_id), f"the teacher {path!r}")
        return teacher, env_id
    try:
        backend = teacher_io.read_teacher_description(path).get("backend")
        if backend == "keras":
            teacher, description = load_keras_dqn_teacher(path)
            saved_env = description["env_id"]
        else:
            from tfkd.agents import load_dqn_teacher  # optional extra; TF-Agents teachers only

            teacher = load_dqn_teacher(path)
            saved_env = teacher.env_id
    except (FileNotFoundError, ValueError) as error:
        raise CliError(str(error).splitlines()[0]) from None
    except gym.error.Error as error:
        raise CliError(f"the teacher in {path!r} names an environment gymnasium does not "
                       f"know: {error}") from None
    if env_id is not None and env_id != saved_env:
        trained, asked = checked_env_spec(saved_env), checked_env_spec(env_id)
        raise CliError(
            f"the teacher in {path!r} was trained on {saved_env} (observations "
            f"{trained.observation_shape}, {trained.num_actions} actions), not on {env_id} "
            f"(observations {asked.observation_shape}, {asked.num_actions} actions); drop "
            "--env to use the teacher's.")
    return teacher, saved_env


def load_keras_model(path: str, role: str) -> keras.Model:
    """:func:`tfkd.rl.teacher_io.load_keras_model`, its errors naming the file's ``role``."""
    try:
        return teacher_io.load_keras_model(path)
    except FileNotFoundError:
        raise CliError(f"no such {role} model file {path!r}.") from None
    except ValueError as error:
        raise CliError(f"the {role}: {error}") from None


def check_model_fits(model: keras.Model, spec, what: str) -> None:
    """Raises a :class:`CliError` unless ``model`` fits ``spec`` (:func:`check_fits`)."""
    library_call(check_fits, model, spec, what)


def checked_env_spec(env_id: str):
    """Checks ``env_id`` and reads its spec, or raises a one-line :class:`CliError`."""
    try:
        env = make_atari_env(env_id) if is_atari(env_id) else make_env(env_id)
    except gym.error.Error as error:
        raise CliError(f"unknown or unavailable environment {env_id!r}: {error}") from None
    except (ValueError, ImportError) as error:  # e.g. continuous actions, ale-py missing
        raise CliError(str(error)) from None
    try:
        spec = env_spec(env, env_id)
    except ValueError as error:  # e.g. a Tuple or Dict observation space
        raise CliError(str(error)) from None
    finally:
        env.close()
    if not (is_atari(env_id) or is_minatar(env_id)) and len(spec.observation_shape) != 1:
        raise CliError(
            f"{env_id} has observations of shape {spec.observation_shape}; the MLP path needs "
            "vector observations (Atari ids, ALE/..., and MinAtar ids, MinAtar/..., get a CNN).")
    return spec


def library_call(function, *args, **kwargs):
    """Calls into the library, turning its ``ValueError`` (bad settings) into a CliError."""
    try:
        return function(*args, **kwargs)
    except ValueError as error:
        raise CliError(str(error)) from None
