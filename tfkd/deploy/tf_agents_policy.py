"""The student as a TF-Agents policy, saved with ``PolicySaver`` for TF-Agents users.

The saved policy is a SavedModel: ``tf.saved_model.load(path)`` gives an
object with ``action(time_step)``, ``get_initial_state(batch_size)`` and the
``action`` signature, greedy over the student's logits. Loading it needs
TensorFlow and TensorFlow Probability (``import tensorflow_probability``
registers the policy's distribution type), never tfkd.

TF-Agents needs ``tf.keras`` to be Keras 2 (``TF_USE_LEGACY_KERAS=1`` before
TensorFlow loads); the ``tfkd`` command sets it, a Python program must.
"""

from __future__ import annotations

import os


def save_tf_agents_policy(student, observation_shape: tuple[int, ...], num_actions: int,
                          path: str | os.PathLike) -> None:
    """Saves ``student`` (Keras 3, observations -> logits) as a greedy TF-Agents policy.

    Raises:
        ImportError: TF-Agents is not installed, or ``tf.keras`` is not Keras 2
            in this process (the message says what to do).
    """
    try:
        from tfkd.agents import StudentPolicy  # the optional `agents` extra
    except ImportError as error:
        raise ImportError(f"{error} To export without the TF-Agents policy, pass "
                          "tf_agents_policy=False.") from None
    import tensorflow as tf
    from tf_agents.policies import policy_saver
    from tf_agents.specs import tensor_spec
    from tf_agents.trajectories import time_step

    observation_spec = tensor_spec.TensorSpec(tuple(observation_shape), tf.float32,
                                              name="observation")
    action_spec = tensor_spec.BoundedTensorSpec((), tf.int64, 0, int(num_actions) - 1,
                                                name="action")
    policy = StudentPolicy(student, time_step.time_step_spec(observation_spec), action_spec)
    policy_saver.PolicySaver(policy, batch_size=None).save(os.fspath(path))
