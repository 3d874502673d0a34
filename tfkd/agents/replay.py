"""A distillation dataset from a TF-Agents replay buffer.

The states a DQN teacher stored while it trained are a ready-made offline
distillation set: each observation is labelled with the teacher's Q-values
and the pairs feed :class:`tfkd.Distiller` as ``(observations,
teacher_outputs)`` (Rusu et al. 2016, "Policy Distillation", distil from the
teacher's replay memory).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import tensorflow as tf

from tfkd.rl.datasets import to_tf_dataset

__all__ = ["replay_buffer_arrays", "replay_buffer_dataset"]


def replay_buffer_arrays(replay_buffer: Any, teacher: Callable[[Any], Any],
                         max_transitions: int | None = None, label_batch_size: int = 1024,
                         ) -> tuple[np.ndarray, np.ndarray]:
    """Every state in ``replay_buffer`` where an action was taken, labelled by the teacher.

    Args:
      replay_buffer: a TF-Agents replay buffer of ``Trajectory`` items (e.g. a
        ``TFUniformReplayBuffer``); read once, in storage order.
      teacher: ``observations -> (batch, num_actions)`` — e.g.
        ``tfkd.agents.as_teacher(agent)`` or a Keras model.
      max_transitions: keep at most this many (the most recently stored ones
        are not preferred: storage order).
      label_batch_size: observations per teacher call.

    Returns:
      ``(observations, teacher_outputs)`` as numpy arrays.

    Raises:
      ValueError: if the buffer is empty.
    """
    if int(replay_buffer.num_frames()) == 0:
        raise ValueError("The replay buffer is empty: collect some experience first.")
    items = replay_buffer.as_dataset(single_deterministic_pass=True)
    # A boundary item (LAST -> FIRST) holds an episode's final state, where no action is taken.
    items = items.filter(lambda item, _: tf.logical_not(item.is_boundary()))
    observations = items.map(lambda item, _: item.observation).batch(label_batch_size)
    if max_transitions is not None:
        observations = observations.unbatch().take(max_transitions).batch(label_batch_size)
    observation_batches, output_batches = [], []
    for batch in observations:
        observation_batches.append(batch.numpy())
        output_batches.append(np.asarray(teacher(batch), dtype=np.float32))
    if not observation_batches:
        raise ValueError("The replay buffer holds no state where an action was taken.")
    return np.concatenate(observation_batches), np.concatenate(output_batches)


def replay_buffer_dataset(replay_buffer: Any, teacher: Callable[[Any], Any],
                          batch_size: int = 256, max_transitions: int | None = None,
                          shuffle: bool = True, seed: int = 0) -> tf.data.Dataset:
    """A ``tf.data.Dataset`` of ``(observations, teacher_outputs)`` batches.

    Example:
      >>> dataset = replay_buffer_dataset(replay_buffer, as_teacher(agent))
      >>> distiller.fit(dataset, epochs=5)

    Args:
      replay_buffer: a TF-Agents replay buffer (see :func:`replay_buffer_arrays`).
      teacher: labels observations with its outputs.
      batch_size: examples per batch.
      max_transitions: keep at most this many transitions.
      shuffle: reshuffle the examples every epoch.
      seed: shuffle seed.

    Returns:
      A finite, batched dataset; iterate it again for another epoch.
    """
    observations, teacher_outputs = replay_buffer_arrays(replay_buffer, teacher,
                                                         max_transitions=max_transitions)
    return to_tf_dataset(observations, teacher_outputs, batch_size, shuffle=shuffle, seed=seed)
