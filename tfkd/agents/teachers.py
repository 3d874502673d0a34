"""TF-Agents agents, networks and policies as tfkd teachers.

A tfkd teacher is any callable ``observations -> teacher outputs`` (Q-values
or logits, shape ``(batch, num_actions)``); :class:`tfkd.Distiller` and
``tfkd.rl`` call it and never train it. TF-Agents objects are Keras 2
(``tf_keras``); a Keras 3 student does not track their variables, so only the
student trains when a :class:`QNetworkTeacher` labels its batches.

* A ``DqnAgent``, a ``QNetwork`` or a Q-policy (``QPolicy``, and the greedy /
  epsilon-greedy policies wrapping one) give the teacher's Q-values — what
  Policy Distillation (Rusu et al. 2016) distils.
* Any other ``TFPolicy``, or a policy loaded from a ``PolicySaver`` SavedModel,
  gives its logits when its action distribution is categorical, otherwise a
  one-hot of its action scaled by ``margin`` (hard labels).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf
from tf_agents.agents.dqn import dqn_agent
from tf_agents.networks import network as tfa_network
from tf_agents.policies import epsilon_greedy_policy, greedy_policy, q_policy
from tf_agents.trajectories import time_step as ts

__all__ = ["PolicyTeacher", "QNetworkTeacher", "as_teacher"]


class QNetworkTeacher:
    """A TF-Agents Q-network as a frozen teacher: ``observations -> Q-values``.

    Args:
      q_network: a TF-Agents ``QNetwork`` (or any ``Network`` returning Q-values).
      env_id: the environment it was trained on, if known.
    """

    def __init__(self, q_network: tfa_network.Network, env_id: str | None = None) -> None:
        self.q_network = q_network
        self.env_id = env_id
        self.observation_spec = q_network.input_tensor_spec
        dummy = tf.zeros((1, *self.observation_spec.shape), self.observation_spec.dtype)
        self.num_actions = int(self(dummy).shape[-1])  # Also builds the network.

    def __call__(self, observations: Any, training: bool = False) -> tf.Tensor:
        """Q-values, shape ``(batch, num_actions)``, as float32; never trains."""
        observations = tf.cast(observations, self.observation_spec.dtype)
        q_values, _ = self.q_network(observations, training=False)
        return tf.stop_gradient(tf.cast(q_values, tf.float32))

    @property
    def variables(self) -> list[tf.Variable]:
        """The Q-network's variables (never trained through this teacher);
        ``tfkd.models.count_params`` counts them."""
        return list(self.q_network.variables)

    weights = variables


class PolicyTeacher:
    """Any TF-Agents policy as a teacher: its logits, or a scaled one-hot action.

    Args:
      policy: a ``TFPolicy`` or a policy loaded with ``tf.saved_model.load``
        from a ``PolicySaver`` directory.
      num_actions: size of the discrete action space.
      margin: value of the chosen action's logit when only actions are known.
    """

    def __init__(self, policy: Any, num_actions: int, margin: float = 10.0) -> None:
        self.policy = policy
        self.num_actions = int(num_actions)
        self.margin = float(margin)

    def __call__(self, observations: Any, training: bool = False) -> tf.Tensor:
        observations = tf.convert_to_tensor(observations)
        batch = tf.shape(observations)[0]
        time_step = ts.TimeStep(
            step_type=tf.fill([batch], tf.constant(ts.StepType.MID, tf.int32)),
            reward=tf.zeros([batch], tf.float32),
            discount=tf.ones([batch], tf.float32),
            observation=observations)
        distribution = getattr(self.policy, "distribution", None)
        if distribution is not None and hasattr(self.policy, "time_step_spec"):
            action_distribution = distribution(time_step).action
            if hasattr(action_distribution, "logits_parameter"):
                return tf.stop_gradient(tf.cast(action_distribution.logits_parameter(),
                                                tf.float32))
        action = self.policy.action(time_step).action
        return self.margin * tf.one_hot(tf.cast(action, tf.int32), self.num_actions)


def _q_network_of(policy: Any) -> tfa_network.Network | None:
    while isinstance(policy, (greedy_policy.GreedyPolicy,
                              epsilon_greedy_policy.EpsilonGreedyPolicy)):
        policy = policy.wrapped_policy
    if isinstance(policy, q_policy.QPolicy):
        return policy._q_network
    return None


def as_teacher(source: Any, num_actions: int | None = None) -> QNetworkTeacher | PolicyTeacher:
    """Turns a TF-Agents object into a tfkd teacher.

    Args:
      source: a ``DqnAgent``, a TF-Agents ``Network`` returning Q-values, a
        Q-policy (possibly greedy / epsilon-greedy), any other ``TFPolicy``,
        or a loaded ``PolicySaver`` SavedModel.
      num_actions: needed only for a policy that is not a Q-policy.

    Returns:
      A callable ``observations -> (batch, num_actions)`` float32 tensor.

    Raises:
      TypeError: if ``source`` is none of these.
    """
    if isinstance(source, (QNetworkTeacher, PolicyTeacher)):
        return source
    if isinstance(source, dqn_agent.DqnAgent):
        return QNetworkTeacher(source._q_network)
    if isinstance(source, tfa_network.Network):
        return QNetworkTeacher(source)
    network = _q_network_of(source)
    if network is not None:
        return QNetworkTeacher(network)
    if hasattr(source, "action"):
        if num_actions is None:
            spec = getattr(source, "action_spec", None)
            if spec is None or not hasattr(spec, "maximum"):
                raise TypeError("as_teacher: pass num_actions for a policy without an "
                                "action_spec.")
            num_actions = int(np.asarray(spec.maximum).max()) + 1
        return PolicyTeacher(source, num_actions)
    raise TypeError(
        f"as_teacher: expected a DqnAgent, a TF-Agents Network or a policy, got "
        f"{type(source).__name__}.")
