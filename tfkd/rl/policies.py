"""Control policies: who picks the actions while data is collected.

A *network* is any callable mapping a batch of observations to one logit or
Q-value per action: a Keras model, a TF-Agents Q-network wrapped by
``tfkd.agents``, a SavedModel signature. A *policy* maps a batch of
observations (and a random generator) to a batch of integer actions.

Policies used in distillation:

- :class:`GreedyPolicy` — argmax of a network (teacher or student);
- :class:`MixturePolicy` — per step and per environment, the teacher acts
  with probability β and the student otherwise: the DAgger mixture
  π_i = β_i π* + (1 − β_i) π̂_i (Ross et al. 2011, "A Reduction of Imitation
  Learning and Structured Prediction to No-Regret Online Learning");
- :class:`EpsilonGreedyPolicy` — any policy, with a uniformly random action
  with probability ε (widens the visited state distribution, as in Rusu et
  al. 2016, "Policy Distillation");
- :class:`UniformRandomPolicy` — the baseline of the normalised score.

Randomness comes only from the ``numpy.random.Generator`` a policy is called
with, so a seeded generator makes a run reproducible.
"""

from __future__ import annotations

import abc
from typing import Callable

import numpy as np
import tensorflow as tf

Network = Callable[..., object]


class Policy(abc.ABC):
    """Maps observations ``[batch, ...]`` to integer actions ``[batch]``."""

    @abc.abstractmethod
    def __call__(self, observations: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Returns one integer action per observation."""


class NetworkOutputs:
    """A network as a NumPy function, traced once by ``tf.function``.

    Calling a Keras model eagerly costs about a millisecond per call; rollouts
    call it once per environment step, so the forward pass is compiled.

    Args:
        network: callable observations -> ``[batch, num_actions]`` outputs.
        num_actions: if given, the output width is checked.
    """

    def __init__(self, network: Network, num_actions: int | None = None):
        if isinstance(network, NetworkOutputs):
            network = network.network
        if not callable(network):
            raise TypeError(f"network must be callable, got {type(network).__name__}.")
        self.network = network
        self.num_actions = num_actions
        self._forward = {}

    def _concrete_forward(self, observations: np.ndarray):
        # One concrete function per observation shape and dtype, with a free
        # batch axis: calling it directly skips tf.function's per-call dispatch.
        key = (observations.shape[1:], observations.dtype)
        if key not in self._forward:
            spec = tf.TensorSpec((None, *key[0]), key[1])
            try:
                forward = tf.function(lambda x: self.network(x)).get_concrete_function(spec)
            except Exception as error:  # Keras and TF raise many types for a bad input
                raise ValueError(
                    f"the network cannot take observations of shape {key[0]} and dtype "
                    f"{key[1]}: {error}"
                ) from error
            self._forward[key] = forward
        return self._forward[key]

    def __call__(self, observations: np.ndarray) -> np.ndarray:
        observations = np.asarray(observations)
        if observations.dtype == np.float64:
            observations = observations.astype(np.float32)
        forward = self._concrete_forward(observations)
        outputs = np.asarray(forward(tf.constant(observations)))
        if outputs.ndim != 2 or outputs.shape[0] != observations.shape[0]:
            raise ValueError(
                f"network must return [batch, num_actions] outputs, got shape {outputs.shape} "
                f"for {observations.shape[0]} observations."
            )
        if self.num_actions is not None and outputs.shape[1] != self.num_actions:
            raise ValueError(
                f"network returns {outputs.shape[1]} outputs per observation, "
                f"the environment has {self.num_actions} actions."
            )
        return outputs


def network_outputs(network: Network, num_actions: int | None = None) -> NetworkOutputs:
    """Wraps ``network`` as a compiled NumPy function (idempotent)."""
    if isinstance(network, NetworkOutputs) and num_actions in (None, network.num_actions):
        return network
    return NetworkOutputs(network, num_actions)


class GreedyPolicy(Policy):
    """Acts with ``argmax_a network(s)[a]``."""

    def __init__(self, network: Network, num_actions: int | None = None):
        self.outputs = network_outputs(network, num_actions)

    def __call__(self, observations: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return np.argmax(self.outputs(observations), axis=-1)


class MixturePolicy(Policy):
    """The DAgger β-mixture: the teacher acts w.p. ``beta``, else the student.

    Args:
        teacher: the expert policy π*.
        student: the learner's policy π̂.
        beta: probability that the teacher acts, in [0, 1]; mutable, so a
            schedule can lower it between rounds.
    """

    def __init__(self, teacher: Policy, student: Policy, beta: float):
        self.teacher, self.student = teacher, student
        self.beta = beta
        self._both = None
        greedy = isinstance(teacher, GreedyPolicy) and isinstance(student, GreedyPolicy)
        if greedy and teacher.outputs.num_actions == student.outputs.num_actions is not None:
            # Both greedy on known widths: one compiled call gives both
            # networks' outputs, so a mixed step costs one network call, not two.
            networks = (teacher.outputs.network, student.outputs.network)
            self._both = NetworkOutputs(
                lambda x: tf.concat([tf.cast(network(x), tf.float32) for network in networks], -1),
                2 * student.outputs.num_actions)

    @property
    def beta(self) -> float:
        return self._beta

    @beta.setter
    def beta(self, value: float) -> None:
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"beta must be in [0, 1], got {value}.")
        self._beta = float(value)

    def __call__(self, observations: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if self._beta == 1.0:
            return self.teacher(observations, rng)
        if self._beta == 0.0:
            return self.student(observations, rng)
        teacher_acts = rng.random(len(observations)) < self._beta
        if self._both is None:
            return np.where(
                teacher_acts, self.teacher(observations, rng), self.student(observations, rng)
            )
        both = self._both(observations)
        teacher_outputs, student_outputs = np.split(both, 2, axis=-1)
        return np.where(teacher_acts, teacher_outputs.argmax(-1), student_outputs.argmax(-1))


class EpsilonGreedyPolicy(Policy):
    """Replaces the action of ``policy`` by a uniform one with probability ``epsilon``."""

    def __init__(self, policy: Policy, num_actions: int, epsilon: float):
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1], got {epsilon}.")
        if num_actions < 1:
            raise ValueError(f"num_actions must be >= 1, got {num_actions}.")
        self.policy, self.num_actions, self.epsilon = policy, num_actions, float(epsilon)

    def __call__(self, observations: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        actions = self.policy(observations, rng)
        if self.epsilon == 0.0:
            return actions
        explore = rng.random(len(actions)) < self.epsilon
        return np.where(explore, rng.integers(self.num_actions, size=len(actions)), actions)


class UniformRandomPolicy(Policy):
    """Picks each action uniformly at random from the ``rng`` it is called with."""

    def __init__(self, num_actions: int):
        if isinstance(num_actions, bool) or int(num_actions) != num_actions or num_actions < 1:
            raise ValueError(f"num_actions must be a positive integer, got {num_actions!r}.")
        self.num_actions = int(num_actions)

    def __call__(self, observations: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return rng.integers(self.num_actions, size=len(observations))


def as_policy(policy_or_network: Policy | Network) -> Policy:
    """A :class:`Policy` as is; any other callable is a network, acted on greedily."""
    if isinstance(policy_or_network, Policy):
        return policy_or_network
    return GreedyPolicy(policy_or_network)
