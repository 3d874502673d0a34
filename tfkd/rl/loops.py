"""Policy distillation in gymnasium, on top of ``tfkd.Distiller.fit``: one
task, or several tasks into one student.

One loop, round after round:

1. collect env steps under a *control policy*, label every visited state
   with the teacher's outputs, add them to a bounded buffer;
2. fit the student on the buffer for ``train_steps_per_round`` minibatches
   with ``tfkd.Distiller`` (``teacher=None``: the labels are in the data);
3. evaluate the greedy student on the selection episodes (keep-best,
   target return), report the round to callbacks, write a checkpoint.

``DistillConfig.control`` says who controls the environment:

- ``"teacher"`` (offline; Rusu et al. 2016, "Policy Distillation"): the
  teacher acts (optionally ε-greedy), β = 1 always; the buffer is a FIFO
  replay memory;
- ``"student"`` (online, DAgger; Ross et al. 2011, Czarnecki et al. 2019,
  "Distilling Policy Distillation"): the β-mixture of teacher and student
  acts, β_i = max(β_min, β_0 · decay^i), so the teacher labels the states the
  student actually visits; the buffer aggregates all rounds under a memory
  bound by reservoir sampling.

Multi-task (:func:`distill_multi_task`; Rusu et al. 2016, §4): one teacher
per task and a student with a shared trunk and a head per task
(:func:`tfkd.models.build_multi_task_student`). Each round collects the same
number of env steps in every task under that task's control policy, into
that task's buffer; every training step takes a minibatch from each task's
buffer (sizes in the proportions ``task_proportions``) and trains on all of
them in one ``Distiller`` step: the tasks' logits side by side, narrower
heads padded with a logit no softmax gives weight to. Keep-best selects on
the mean normalised score over the tasks.

Workers (``config.workers = N``, :mod:`tfkd.rl.workers`): step 1 runs on
``N`` Ray actors per task, each with its own envs and copies of the teacher
and student, the student's weights broadcast at each round; the buffer, the
fit and the evaluation stay here. The student's minibatch updates run up to
:data:`MOST_STEPS_PER_EXECUTION` per compiled call, and the selection
episodes side by side, so the loop's own overhead stays small next to the
work (``benchmarks/profile_loop.py`` shows where the time goes).

Reproducibility: ``config.seed`` fixes the global seeds (see
:func:`tfkd.rl.seeding.seed_everything`), the environments' resets, the ε and
β draws, reservoir sampling and the order of minibatches, each from its own
stream. The student's initial weights are the caller's: seed before building
it. The same seed on the same machine gives the same history and weights.

Checkpoints (``checkpoint_dir``, see :mod:`tfkd.rl.checkpoint`) hold
everything but the environments' mid-episode state, which gymnasium cannot
save in general: a resumed run starts fresh episodes, reset with a seed
derived from ``seed`` and the round it resumes at, so it is itself
deterministic but does not replay the uninterrupted run's later rounds.

Ctrl-C (KeyboardInterrupt) ends the run at a clean point: the student gets
back the weights of the last finished round (or of the best one, with
``keep_best``), and the history, which holds only finished rounds, says
``interrupted=True``. With ``checkpoint_dir``, a round that finished before
the interrupt is checkpointed too (if its checkpoint was not yet written),
so a rerun resumes after it.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import replace
from typing import Any, Sequence

import keras
import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from tfkd import Distiller
from tfkd.models import task_model, task_names
from tfkd.rl import checkpoint as checkpoints
from tfkd.rl.callbacks import LOG_KEYS, RoundCSVLogger, RoundTensorBoard
from tfkd.rl.datasets import DistillationBuffer
from tfkd.rl.envs import env_spec, make_vector_env
from tfkd.rl.evaluation import (
    action_agreement,
    evaluate_policy,
    normalized_score,
    random_policy,
    selection_seeds,
)
from tfkd.rl.loop_config import DistillationHistory, DistillConfig, MultiTaskHistory
from tfkd.rl.policies import (
    EpsilonGreedyPolicy,
    GreedyPolicy,
    MixturePolicy,
    Network,
    Policy,
    network_outputs,
)
from tfkd.rl.rollouts import RolloutCollector
from tfkd.rl.seeding import derived_seed, rng_streams, seed_everything
from tfkd.rl.workers import RayCollectors, check_shippable, ray_cluster

__all__ = [
    "DistillConfig",
    "DistillationHistory",
    "MultiTaskHistory",
    "distill",
    "distill_multi_task",
    "distill_student_driven",
    "distill_teacher_driven",
]


def distill(teacher: Network, student: keras.Model, config: DistillConfig) -> DistillationHistory:
    """Distils ``teacher`` into ``student`` (trained in place); returns the history.

    Seeds the global generators with ``config.seed`` first. See the module
    docstring for the loop, checkpoints and interruption.

    Raises:
        ValueError: ``config.env_id`` names several tasks (use
            :func:`distill_multi_task`).
        tfkd.rl.checkpoint.CheckpointMismatchError: ``checkpoint_dir`` holds a
            run made with other settings.
    """
    if len(config.env_ids) != 1:
        raise ValueError(f"config.env_id names {len(config.env_ids)} tasks; distil several "
                         "tasks with distill_multi_task.")
    return _distill([teacher], student, [student], config)


def distill_multi_task(teachers: Sequence[Network], student: keras.Model,
                       config: DistillConfig) -> MultiTaskHistory:
    """Distils one teacher per task into one multi-task student (trained in place).

    Rusu et al. 2016, "Policy Distillation", §4: a student with a shared
    trunk and a head per task (:func:`tfkd.models.build_multi_task_student`)
    learns every task from its own teacher; see the module docstring.

    Args:
        teachers: one network per task, in the order of ``config.env_id``.
        student: a multi-task student whose tasks are ``config.env_id``, in order.
        config: the run's settings; ``env_id`` is the sequence of tasks.

    Raises:
        ValueError: the teachers, the student's tasks and ``config.env_id`` disagree.
        tfkd.rl.checkpoint.CheckpointMismatchError: ``checkpoint_dir`` holds a
            run made with other settings.
    """
    env_ids = config.env_ids
    if len(teachers) != len(env_ids):
        raise ValueError(f"{len(teachers)} teachers for {len(env_ids)} tasks ({', '.join(env_ids)}).")
    if task_names(student) != list(env_ids):
        raise ValueError(f"the student's tasks ({', '.join(task_names(student))}) are not "
                         f"config.env_id ({', '.join(env_ids)}), in order.")
    task_students = [task_model(student, env_id) for env_id in env_ids]
    return _distill(list(teachers), student, task_students, config)


def _distill(teachers, student, task_students, config):
    seed_everything(config.seed)
    if config.checkpoint_dir is not None:
        checkpoints.check_directory(config.checkpoint_dir)
    envs = []
    try:
        for env_id in config.env_ids:
            envs.append(make_vector_env(env_id, config.num_envs))
        return _Run(teachers, student, task_students, config, envs).run()
    finally:
        for env in envs:
            env.close()


def distill_teacher_driven(
    teacher: Network, student: keras.Model, config: DistillConfig
) -> DistillationHistory:
    """:func:`distill` with the teacher in control (Rusu et al. 2016), whatever
    ``config.control`` says."""
    return distill(teacher, student, replace(config, control="teacher"))


def distill_student_driven(
    teacher: Network, student: keras.Model, config: DistillConfig
) -> DistillationHistory:
    """:func:`distill` with the β-mixture in control (DAgger), whatever
    ``config.control`` says."""
    return distill(teacher, student, replace(config, control="student"))


class _Task:
    """One task of a run: its env, teacher, student network, buffer and history."""

    def __init__(self, index: int, env_id: str, env, teacher, student: keras.Model,
                 config: DistillConfig, rngs: dict[str, np.random.Generator]):
        spec = env_spec(env, env_id)  # checks the action and observation spaces
        self.index, self.env_id, self.env = index, env_id, env
        self.teacher, self.student = teacher, student
        if config.workers:  # before anything runs: what cannot travel is an error now
            check_shippable(teacher, "teacher")
            check_shippable(student, "student")
        self.num_actions = spec.num_actions
        self.teacher_outputs = network_outputs(teacher, spec.num_actions)
        self.student_outputs = network_outputs(student, spec.num_actions)
        self.control_rng = rngs[_stream("control", index)]
        self.buffer = DistillationBuffer(
            config.buffer_capacity,
            spec.observation_shape,
            spec.num_actions,
            observation_dtype=spec.observation_dtype,
            replacement=config.replacement,
            seed=int(rngs[_stream("buffer", index)].integers(2**31)),
        )
        self.mixture = MixturePolicy(
            GreedyPolicy(self.teacher_outputs), GreedyPolicy(self.student_outputs), 1.0
        )
        self.control: Policy = self.mixture
        if config.epsilon > 0:
            self.control = EpsilonGreedyPolicy(self.mixture, spec.num_actions, config.epsilon)
        self.seeds = selection_seeds(config.seed, config.eval_episodes) if config.eval_episodes else []
        self.history = DistillationHistory(selection_seeds=list(self.seeds))
        self.collector: RolloutCollector | RayCollectors | None = None
        self._rollout = None  # a round's rollout between start_round and finish_round
        self.visited: np.ndarray | None = None  # the last round's observations

    def start_collecting(self, config: DistillConfig, start_round: int) -> None:
        """Makes the collector of the rounds from ``start_round`` on: in this
        process, or ``config.workers`` Ray actors."""
        if config.workers:
            self.collector = RayCollectors(
                self.env_id, self.teacher, self.student, num_workers=config.workers,
                num_envs=config.num_envs, epsilon=config.epsilon, seed=config.seed,
                start_round=start_round, task_index=self.index)
        else:
            # Task 0 keeps the single-task derivation, so one-task runs are unchanged.
            keys = (start_round,) if self.index == 0 else (start_round, self.index)
            self.collector = RolloutCollector(self.env, self.teacher_outputs,
                                              seed=derived_seed(config.seed, *keys))
            self.collector.rng = self.control_rng
        self.collector.total_steps = self.history.env_steps[-1] if self.history.env_steps else 0

    def stop_collecting(self) -> None:
        if isinstance(self.collector, RayCollectors):
            self.collector.close()

    def start_round(self, beta: float, num_steps: int) -> None:
        """Starts one round's collection (on the workers it runs while the other tasks start)."""
        self.mixture.beta = beta
        if isinstance(self.collector, RayCollectors):
            self.collector.start(beta, num_steps)
        else:
            self._rollout = self.collector.collect(self.control, num_steps)

    def finish_round(self) -> dict[str, Any]:
        """Adds the round's labelled states to the buffer; returns the round's record so far."""
        if isinstance(self.collector, RayCollectors):
            rollout = self.collector.finish()
        else:
            rollout, self._rollout = self._rollout, None
        beta = self.mixture.beta
        self.buffer.add(rollout.observations, rollout.teacher_outputs)
        self.visited = rollout.observations
        returns = rollout.episode_returns
        return {
            "env_steps": self.collector.total_steps,
            "beta": beta,
            "buffer_size": len(self.buffer),
            "control_return": float(np.mean(returns)) if returns else None,
        }

    def agreement(self) -> dict[str, float]:
        """After training: how often the student picks the teacher's action on the round's states."""
        return {"agreement": action_agreement(
            self.teacher_outputs, self.student_outputs, self.visited)}

    def evaluate(self) -> dict[str, Any]:
        # A greedy policy draws nothing at random, so its episodes do not depend
        # on how many run side by side: all at once, one network call a step.
        stats = evaluate_policy(self.env_id, GreedyPolicy(self.student_outputs), self.seeds,
                                num_envs=len(self.seeds))
        history = self.history
        return {
            "student_return_mean": stats.mean,
            "student_return_std": stats.std,
            "normalized_score": normalized_score(
                stats.mean, history.random_return, history.teacher_return),
        }

    def evaluate_baselines(self) -> None:
        """Teacher and uniform-random returns on the selection seeds, for the normalised score."""
        teacher = GreedyPolicy(self.teacher_outputs)
        uniform = random_policy(self.num_actions)
        self.history.teacher_return = evaluate_policy(self.env_id, teacher, self.seeds).mean
        self.history.random_return = evaluate_policy(self.env_id, uniform, self.seeds).mean


class _Run:
    """The state of one distillation run, single- or multi-task: what a checkpoint
    saves and restores."""

    def __init__(self, teachers, student: keras.Model, task_students, config: DistillConfig, envs):
        self.config, self.student = config, student
        self.multi_task = len(envs) > 1
        names = ("control", "shuffle", "buffer") + tuple(
            _stream(name, k) for k in range(1, len(envs)) for name in ("control", "buffer"))
        self.rngs = rng_streams(config.seed, names)
        self.tasks = [
            _Task(k, env_id, env, teacher, task_student, config, self.rngs)
            for k, (env_id, env, teacher, task_student)
            in enumerate(zip(config.env_ids, envs, teachers, task_students))
        ]
        trained = student
        if self.multi_task:
            trained = _packed_view(student, [task.num_actions for task in self.tasks])
        self.distiller = Distiller(
            trained,
            teacher=None,
            distillation_loss=config.distillation_loss,
            temperature=config.temperature,
        )
        self.distiller.compile(optimizer=keras.optimizers.Adam(config.learning_rate),
                               steps_per_execution=steps_per_execution(config.train_steps_per_round))
        self.distiller.optimizer.build(self.distiller.trainable_variables)
        self.plan = config.round_steps()
        self.task_plans = config.task_round_steps()
        shapes = [list(weight.shape) for weight in student.weights]
        self.settings = {**config.settings(), "student_weight_shapes": shapes}
        self.fingerprint = checkpoints.fingerprint(self.settings)
        self.best_value, self.best_round, self.best_weights = -math.inf, -1, None
        self.finished_weights = student.get_weights()
        self.stopped = False
        self.wall_offset = 0.0
        self.in_round = False
        self.saved_round = -1

    @property
    def num_rounds(self) -> int:
        return self.tasks[0].history.num_rounds

    def result(self) -> DistillationHistory | MultiTaskHistory:
        if not self.multi_task:
            return self.tasks[0].history
        first = self.tasks[0].history
        return MultiTaskHistory(
            tasks={task.env_id: task.history for task in self.tasks},
            kept_round=first.kept_round,
            interrupted=first.interrupted,
            resumed_from=first.resumed_from,
        )

    def _set_on_every_task(self, **values) -> None:
        for task in self.tasks:
            for name, value in values.items():
                setattr(task.history, name, value)

    # ------------------------------------------------------------------ the loop

    def run(self) -> DistillationHistory | MultiTaskHistory:
        config = self.config
        start_round = self._restore() if config.checkpoint_dir is not None else 0
        callbacks = self._callbacks()
        label = config.env_ids[0] if not self.multi_task else f"{len(self.tasks)} tasks"
        bar = tqdm(total=len(self.plan), initial=start_round, desc=f"distil {label}",
                   disable=not config.progress)
        # Ray, when the run collects on workers: started for the run, or joined.
        cluster = (ray_cluster(config.ray_address, config.workers * len(self.tasks))
                   if config.workers else contextlib.nullcontext())
        try:
            with cluster:
                self._rounds(start_round, callbacks, bar)
        except KeyboardInterrupt:
            self._set_on_every_task(interrupted=True)
            # Between rounds the state is that of the last finished round: keep it.
            if config.checkpoint_dir is not None and not self.in_round:
                if self.num_rounds - 1 > self.saved_round:
                    self._save(self.num_rounds - 1)
        finally:
            bar.close()
        self._keep_final_weights()
        for callback in callbacks:
            callback.on_train_end({})
        return self.result()

    def _rounds(self, start_round: int, callbacks, bar) -> None:
        config = self.config
        started = time.perf_counter() - self.wall_offset
        if start_round == 0 and config.eval_episodes:
            for task in self.tasks:
                task.evaluate_baselines()
        try:
            for task in self.tasks:
                task.start_collecting(config, start_round)
            for round_index in range(start_round, len(self.plan)):
                if self.stopped:
                    break
                self.in_round = True
                records, loss = self._round(round_index)
                self._finish_round(round_index, records, loss, time.perf_counter() - started)
                self.in_round = False
                logs = self.result().round_logs(round_index)
                for callback in callbacks:
                    callback.on_epoch_end(round_index, logs)
                self.stopped = self._should_stop(round_index)
                if config.checkpoint_dir is not None:
                    self._save(round_index)
                bar.update(1)
                bar.set_postfix(self._postfix(records, loss))
        finally:
            for task in self.tasks:
                task.stop_collecting()

    def _round(self, round_index: int) -> tuple[list[dict[str, Any]], float]:
        """Collects, trains and evaluates one round; returns each task's record and the loss."""
        config = self.config
        for task, plan in zip(self.tasks, self.task_plans):
            task.start_round(config.beta(round_index), plan[round_index])
        records = [task.finish_round() for task in self.tasks]
        shuffle_seed = int(self.rngs["shuffle"].integers(2**31))
        fit = self.distiller.fit(
            self._dataset(shuffle_seed),
            steps_per_epoch=config.train_steps_per_round,
            epochs=1,
            shuffle=False,
            verbose=0,
        )
        last = round_index == len(self.plan) - 1
        evaluate = bool(config.eval_episodes) and (last or (round_index + 1) % config.eval_every == 0)
        for task, record in zip(self.tasks, records):
            record.update(task.agreement())
            record.update(task.evaluate() if evaluate else dict.fromkeys(
                ("student_return_mean", "student_return_std", "normalized_score")))
        return records, float(fit.history["loss"][-1])

    def _dataset(self, shuffle_seed: int) -> tf.data.Dataset:
        """Minibatches for one round: one task's buffer, or every task's, side by side."""
        sizes = self.config.task_batch_sizes()
        if not self.multi_task:
            return self.tasks[0].buffer.as_dataset(sizes[0], seed=shuffle_seed).repeat()
        datasets = tuple(
            task.buffer.as_dataset(size, seed=derived_seed(shuffle_seed, task.index)).repeat()
            for task, size in zip(self.tasks, sizes))
        width = max(task.num_actions for task in self.tasks)
        input_names = [tensor.name for tensor in self.student.inputs]

        def side_by_side(*batches):
            observations = {name: x for name, (x, _) in zip(input_names, batches)}
            return observations, tf.concat([_pad_actions(t, width) for _, t in batches], axis=0)

        return tf.data.Dataset.zip(datasets).map(side_by_side)

    def _finish_round(self, round_index: int, records, loss: float, wall_time_s: float) -> None:
        """Appends the round to the histories and remembers its weights (and the best)."""
        for task, record in zip(self.tasks, records):
            for name, value in {**record, "loss": loss, "wall_time_s": wall_time_s}.items():
                getattr(task.history, name).append(value)
        self.finished_weights = self.student.get_weights()
        value = self._selection_value(round_index)
        eligible = round_index >= self.config.keep_best_from_round
        if eligible and value is not None and value >= self.best_value:
            self.best_value, self.best_round = value, round_index
            if self.config.keep_best:
                self.best_weights = self.finished_weights

    def _selection_value(self, round_index: int) -> float | None:
        """What keep-best maximises: the return (one task), the mean normalised score (several)."""
        if self.multi_task:
            return self.result().mean_normalized_score[round_index]
        return self.tasks[0].history.student_return_mean[round_index]

    def _should_stop(self, round_index: int) -> bool:
        target = self.config.target_return
        mean = self.tasks[0].history.student_return_mean[round_index]
        reached = target is not None and mean is not None and mean >= target
        return reached or bool(getattr(self.student, "stop_training", False))

    def _postfix(self, records, loss: float) -> dict[str, str]:
        postfix = {"loss": f"{loss:.4f}"}
        if not self.multi_task:
            record = records[0]
            mean = record["student_return_mean"]
            postfix.update(steps=str(record["env_steps"]), agree=f"{record['agreement']:.3f}",
                           ret="-" if mean is None else f"{mean:.1f}")
        else:
            score = self.result().mean_normalized_score[-1]
            postfix["score"] = "-" if score is None else f"{score:.3f}"
        return postfix

    def _keep_final_weights(self) -> None:
        if self.config.keep_best and self.best_weights is not None:
            self.student.set_weights(self.best_weights)
            kept = self.best_round
        else:
            self.student.set_weights(self.finished_weights)
            kept = self.num_rounds - 1
        self._set_on_every_task(kept_round=kept)

    def _callbacks(self) -> list[keras.callbacks.Callback]:
        config = self.config
        callbacks = list(config.callbacks)
        if config.tensorboard_dir is not None:
            callbacks.append(RoundTensorBoard(config.tensorboard_dir))
        csv_logger = None
        if config.csv_path is not None:
            keys = MultiTaskHistory.log_keys(config.env_ids) if self.multi_task else LOG_KEYS
            csv_logger = RoundCSVLogger(config.csv_path, keys=keys)
            callbacks.append(csv_logger)
        self.student.stop_training = False
        for callback in callbacks:
            callback.set_model(self.student)
            callback.on_train_begin({})
        if csv_logger is not None:  # a resumed run's file starts with the restored rounds
            result = self.result()
            for round_index in range(self.num_rounds):
                csv_logger.on_epoch_end(round_index, result.round_logs(round_index))
        return callbacks

    # ------------------------------------------------------------- checkpoints

    def _save(self, round_index: int) -> None:
        buffer_arrays, task_states = {}, []
        for task in self.tasks:
            arrays, meta = task.buffer.get_state()
            buffer_arrays.update({f"task{task.index}_{name}": a for name, a in arrays.items()})
            task_states.append({"history": task.history.as_dict(), "buffer": meta})
        state = {
            "round": round_index,
            "fingerprint": self.fingerprint,
            "settings": self.settings,
            "tasks": task_states,
            "stopped": self.stopped,
            "best": {"value": _finite_or_none(self.best_value), "round": self.best_round},
            "rng": {name: rng.bit_generator.state for name, rng in self.rngs.items()},
            "tf_global_generator": tf.random.get_global_generator().state.numpy().tolist(),
        }
        checkpoints.save_round(
            self.config.checkpoint_dir,
            checkpoints.RoundCheckpoint(
                round_index=round_index,
                state=state,
                student_weights=self.finished_weights,
                optimizer_variables=[v.numpy() for v in self.distiller.optimizer.variables],
                best_weights=self.best_weights,
                buffer_arrays=buffer_arrays,
            ),
        )
        self.saved_round = round_index

    def _restore(self) -> int:
        """Loads the last finished round, if any; returns the round to start at."""
        saved = checkpoints.load_latest(self.config.checkpoint_dir, self.fingerprint, self.settings)
        if saved is None:
            return 0
        state = saved.state
        for task, task_state in zip(self.tasks, state["tasks"], strict=True):
            task.history = DistillationHistory(**task_state["history"])
            prefix = f"task{task.index}_"
            arrays = {name[len(prefix):]: array for name, array in saved.buffer_arrays.items()
                      if name.startswith(prefix)}
            task.buffer.set_state(arrays, task_state["buffer"])
        self.student.set_weights(saved.student_weights)
        self.finished_weights = saved.student_weights
        optimizer_variables = self.distiller.optimizer.variables
        for variable, value in zip(optimizer_variables, saved.optimizer_variables, strict=True):
            variable.assign(value)
        for name, rng in self.rngs.items():
            rng.bit_generator.state = state["rng"][name]
        tf.random.get_global_generator().reset(state["tf_global_generator"])
        best = state["best"]
        self.best_value = -math.inf if best["value"] is None else best["value"]
        self.best_round, self.best_weights = best["round"], saved.best_weights
        self.stopped = state["stopped"]
        self.saved_round = saved.round_index
        self.wall_offset = self.tasks[0].history.wall_time_s[-1]
        self._set_on_every_task(interrupted=False, resumed_from=saved.round_index + 1)
        return saved.round_index + 1


# A logit no action of a task's head has: the padded actions of a narrower
# head get probability exp(MASKED_LOGIT - max) = 0 in both the teacher's and
# the student's softmax, so they add nothing to the KL and get no gradient.
MASKED_LOGIT = -1e9

#: Most minibatch updates in one compiled call of the student's training step.
MOST_STEPS_PER_EXECUTION = 50


def steps_per_execution(train_steps: int, most: int = MOST_STEPS_PER_EXECUTION) -> int:
    """The largest divisor of ``train_steps`` that is at most ``most``.

    Keras runs that many minibatch updates per compiled call, saving the
    Python dispatch of the others (2–16% of a 64×64 student's fit on an idle
    CPU, more on a busy one: ``benchmarks/profile_loop.py
    --compare-steps-per-execution``); it rounds an epoch up to a multiple of
    it, so it must divide the round's updates exactly.
    """
    return max(d for d in range(1, min(most, train_steps) + 1) if train_steps % d == 0)


def _pad_actions(outputs, width: int):
    """``[batch, A]`` outputs padded to ``[batch, width]`` with :data:`MASKED_LOGIT`."""
    extra = width - outputs.shape[-1]
    return outputs if extra == 0 else tf.pad(outputs, [[0, 0], [0, extra]],
                                             constant_values=MASKED_LOGIT)


class _SideBySide(keras.layers.Layer):
    """Stacks the tasks' output batches into one ``[sum of batches, max actions]`` tensor."""

    def __init__(self, width: int, **kwargs):
        super().__init__(**kwargs)
        self.width = width

    def call(self, outputs):
        return keras.ops.concatenate(
            [_pad_actions(keras.ops.cast(o, "float32"), self.width) for o in outputs], axis=0)


def _packed_view(student: keras.Model, num_actions: list[int]) -> keras.Model:
    """The multi-task student as one output: its heads' logits side by side.

    A training view, never saved: it shares the student's layers, so
    ``tfkd.Distiller`` trains the multi-task student on the stacked batches
    of all tasks in one step, with its one loss and fused kernel.
    """
    outputs = _SideBySide(max(num_actions), name="side_by_side")(list(student.outputs))
    return keras.Model(student.inputs, outputs, name=f"{student.name}_side_by_side")


def _stream(name: str, task_index: int) -> str:
    """The RNG stream of a task (task 0's are the single-task names)."""
    return name if task_index == 0 else f"{name}_{task_index}"


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None
