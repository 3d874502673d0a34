"""Collection and labelling on Ray actors: many processes step envs at once.

A distillation round spends most of its collection time stepping envs,
acting and labelling states. With ``DistillConfig(workers=N)`` that work runs
on ``N`` Ray actors (https://docs.ray.io), each a process with its own vector
env, teacher and student copy, one CPU each:

1. the learner puts the student's current weights into Ray's object store
   once per round (``ray.put``); every actor reads them from there;
2. actor ``k`` collects its share of the round's env steps under the
   β-mixture (ε-greedy as configured) and labels them with its teacher;
3. the learner gathers the labelled states in actor order, adds them to its
   buffer and fits, as without workers.

The buffer, the fit and the evaluation stay in the learner. Actor ``k`` of a
run started at round ``r`` seeds its env and random draws with
``derived_seed(seed, r, task, k)``, so a run is reproducible for a given
number of workers (and differs from the single-process one, whose envs are
seeded otherwise).

Networks travel as a Keras 3 model's config and weights (rebuilt in the
actor with ``keras.saving.deserialize_keras_object``); nothing is pickled to
disk. :func:`label_observations` labels a large saved observation set on
actors the same way.

Ray is the ``ray`` extra: ``pip install 'tfkd[ray]'``.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Any, Iterator

import keras
import numpy as np

from tfkd.rl.envs import make_vector_env
from tfkd.rl.policies import EpsilonGreedyPolicy, GreedyPolicy, MixturePolicy, network_outputs
from tfkd.rl.rollouts import LABEL_BATCH, Rollout, RolloutCollector, label_in_batches
from tfkd.rl.seeding import derived_seed

INSTALL_HINT = "pip install 'tfkd[ray]' (or add ray to the Makefile's EXTRAS)"
# Ray binds even a local cluster's services to the machine's network address
# (it rewrites 127.0.0.1 to it) unless this is set when it is first imported;
# then it uses loopback. A cluster tfkd starts for one run listens on loopback.
LOOPBACK_ONLY = ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
# Ray lowers its worker processes' priority to niceness 15 (RayConfig
# worker_niceness). The learner waits for its actors every round, so behind
# any busy process at niceness 0 (the learner's own fit, another job) they
# starve: importing TensorFlow in an actor took 118 s instead of 13 s on a
# busy 2-core machine. A cluster tfkd starts runs its actors at niceness 0.
LEARNER_PRIORITY = ("RAY_worker_niceness", "0")


def require_ray(local: bool = False):
    """The ``ray`` module, or an ImportError that says how to install it.

    Args:
        local: the process will start a local cluster, not join one: where
            Ray is not imported yet, make it use loopback addresses.
    """
    if local and "ray" not in sys.modules:
        os.environ.setdefault(*LOOPBACK_ONLY)
    try:
        import ray
    except ImportError:
        raise ImportError(f"workers run on Ray, which is not installed: {INSTALL_HINT}") from None
    return ray


@contextlib.contextmanager
def ray_cluster(address: str | None, num_workers: int) -> Iterator[Any]:
    """Ray, connected for the duration of the block.

    Args:
        address: an existing cluster to join (``"auto"``, ``"ray://host:port"``,
            ``"host:port"``), or None: a local cluster started here and shut
            down after the block, with a CPU per worker even where the
            machine has fewer (the actors then share the cores), on loopback
            addresses where Ray is first imported here, its actors at the
            learner's priority (niceness 0, not Ray's 15). Where Ray is
            already initialised in this process it is used as it is and left
            running.
        num_workers: actors the block will start.
    """
    ray = require_ray(local=address is None)
    if ray.is_initialized():
        yield ray
        return
    if address is None:
        os.environ.setdefault(*LEARNER_PRIORITY)  # read by the cluster's processes at start
        ray.init(num_cpus=max(num_workers, os.cpu_count() or 1), include_dashboard=False,
                 log_to_driver=False, configure_logging=False)
    else:
        ray.init(address=address, log_to_driver=False, configure_logging=False)
    try:
        yield ray
    finally:
        ray.shutdown()


def check_shippable(network: Any, what: str) -> None:
    """Raises a ValueError unless ``network`` is a Keras 3 model (what workers rebuild)."""
    if not isinstance(network, keras.Model):
        raise ValueError(
            f"workers rebuild the {what} from a Keras 3 model's config and weights; got a "
            f"{type(network).__name__} (a TF-Agents teacher, an ensemble or a plain function "
            f"cannot travel). Train the teacher with `tfkd train-teacher --backend keras`, "
            f"or collect without workers.")


def shippable(network: keras.Model) -> dict:
    """A Keras 3 network as plain data an actor can rebuild: its config and weights."""
    check_shippable(network, "network")
    return {"config": keras.saving.serialize_keras_object(network),
            "weights": network.get_weights()}


def _rebuild(shipped: dict) -> keras.Model:
    network = keras.saving.deserialize_keras_object(shipped["config"])
    network.set_weights(shipped["weights"])
    return network


def _single_threaded() -> None:
    # Each actor is one CPU of the cluster: TensorFlow's thread pools would
    # otherwise each claim every core of the machine.
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)


class _CollectorActor:
    """One actor's env, teacher, student and control policy (a Ray actor class)."""

    def __init__(self, env_id: str, teacher: dict, student: dict, num_envs: int,
                 epsilon: float, seed: int):
        _single_threaded()
        self.student = _rebuild(student)
        env = make_vector_env(env_id, num_envs)
        num_actions = int(env.single_action_space.n)
        teacher_outputs = network_outputs(_rebuild(teacher), num_actions)
        self.mixture = MixturePolicy(GreedyPolicy(teacher_outputs),
                                     GreedyPolicy(self.student, num_actions), 1.0)
        self.control = self.mixture
        if epsilon > 0:
            self.control = EpsilonGreedyPolicy(self.mixture, num_actions, epsilon)
        self.collector = RolloutCollector(env, teacher_outputs, seed=seed)

    def collect(self, beta: float, num_steps: int, weights: list[np.ndarray]) -> Rollout:
        self.student.set_weights(weights)
        self.mixture.beta = beta
        return self.collector.collect(self.control, num_steps)


class _LabellerActor:
    """One actor's teacher copy, labelling shards of observations."""

    def __init__(self, teacher: dict):
        _single_threaded()
        self.outputs = network_outputs(_rebuild(teacher))

    def label(self, observations: np.ndarray, batch_size: int) -> np.ndarray:
        return label_in_batches(self.outputs, observations, batch_size)


def split_steps(num_steps: int, num_workers: int, num_envs: int) -> list[int]:
    """Each worker's share of a round's env steps, whole vector steps each.

    The shares add up to ``num_steps`` rounded down to a multiple of
    ``num_envs`` (a round's steps already are one), differ by at most one
    vector step, and the first workers take the larger ones.
    """
    vector_steps, extra = divmod(num_steps // num_envs, num_workers)
    return [(vector_steps + (k < extra)) * num_envs for k in range(num_workers)]


class RayCollectors:
    """``num_workers`` Ray actors collecting one task's rounds side by side.

    Args:
        env_id: the task's gymnasium id.
        teacher: the task's teacher, a Keras 3 model.
        student: the task's student network, a Keras 3 model (its weights are
            read again at every round).
        num_workers: actors.
        num_envs: envs each actor steps in parallel.
        epsilon: the control policy's ε.
        seed, start_round, task_index: seed actor ``k`` with
            ``derived_seed(seed, start_round, task_index, k)``.
    """

    def __init__(self, env_id: str, teacher: keras.Model, student: keras.Model, *,
                 num_workers: int, num_envs: int, epsilon: float, seed: int,
                 start_round: int, task_index: int):
        ray = require_ray()
        self.ray, self.student, self.num_envs = ray, student, num_envs
        actor_class = ray.remote(num_cpus=1)(_CollectorActor)
        teacher_ref, student_ref = ray.put(shippable(teacher)), ray.put(shippable(student))
        self.actors = [
            actor_class.remote(env_id, teacher_ref, student_ref, num_envs, epsilon,
                               derived_seed(seed, start_round, task_index, k))
            for k in range(num_workers)
        ]
        self.total_steps = 0
        self._pending: list = []

    def start(self, beta: float, num_steps: int) -> None:
        """Broadcasts the student's weights and starts every actor's share of the round."""
        weights = self.ray.put(self.student.get_weights())
        shares = split_steps(num_steps, len(self.actors), self.num_envs)
        self._pending = [actor.collect.remote(beta, share, weights)
                         for actor, share in zip(self.actors, shares) if share > 0]

    def finish(self) -> Rollout:
        """The round's labelled states, the actors' in actor order."""
        rollouts = self.ray.get(self._pending)
        self._pending = []
        rollout = Rollout(
            observations=np.concatenate([r.observations for r in rollouts]),
            teacher_outputs=np.concatenate([r.teacher_outputs for r in rollouts]),
            actions=np.concatenate([r.actions for r in rollouts]),
            rewards=np.concatenate([r.rewards for r in rollouts]),
            episode_returns=[x for r in rollouts for x in r.episode_returns],
            episode_lengths=[x for r in rollouts for x in r.episode_lengths],
        )
        self.total_steps += rollout.num_steps
        return rollout

    def close(self) -> None:
        for actor in self.actors:
            self.ray.kill(actor)
        self.actors = []


def label_observations(teacher: keras.Model, observations: np.ndarray, num_workers: int, *,
                       batch_size: int = LABEL_BATCH, address: str | None = None) -> np.ndarray:
    """The teacher's outputs for a large observation set, labelled on Ray actors.

    The observations are cut into ``num_workers`` contiguous shards; actor
    ``k`` labels shard ``k`` in batches of ``batch_size``; the outputs come
    back in the observations' order, float32.

    Args:
        teacher: a Keras 3 network.
        observations: ``[n, *observation_shape]``.
        num_workers: actors.
        batch_size: observations per network call in an actor.
        address: the Ray cluster to join (see :func:`ray_cluster`).
    """
    observations = np.asarray(observations)
    if observations.ndim < 2 or len(observations) == 0:
        raise ValueError(f"observations must be [n > 0, ...], got shape {list(observations.shape)}")
    if num_workers < 1 or batch_size < 1:
        raise ValueError(f"num_workers and batch_size must be >= 1, got {num_workers}, {batch_size}")
    with ray_cluster(address, num_workers) as ray:
        actor_class = ray.remote(num_cpus=1)(_LabellerActor)
        teacher_ref = ray.put(shippable(teacher))
        actors = [actor_class.remote(teacher_ref) for _ in range(num_workers)]
        try:
            shards = np.array_split(observations, num_workers)
            labels = ray.get([actor.label.remote(shard, batch_size)
                              for actor, shard in zip(actors, shards) if len(shard)])
        finally:
            for actor in actors:
                ray.kill(actor)
    return np.concatenate(labels)

