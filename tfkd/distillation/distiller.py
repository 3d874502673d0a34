"""``tfkd.Distiller``: a keras.Model that trains a student from a teacher.

    loss = alpha * task_loss + (1 - alpha) * distillation_loss

The loss and the distillation metrics live in Keras' ``compute_loss`` hook
and the label metrics in ``compute_metrics``, so Keras' own ``test_step``
evaluates; ``train_step`` adds only the guard that no non-finite step is
applied.
"""

from __future__ import annotations

import inspect
import numbers

import keras
import tensorflow as tf

from tfkd import losses as tfkd_losses
from tfkd.distillation import metrics as metrics_lib
from tfkd.distillation.feature import FeatureExtractors
from tfkd.distillation.teacher_cache import TeacherOutputCache, array_leaves

__all__ = ["Distiller", "LABELS", "TEACHER_OUTPUTS"]

TEACHER_OUTPUTS = "teacher_outputs"
LABELS = "labels"

NON_FINITE = ("tfkd.Distiller: the loss or its gradient is NaN or inf; training stopped "
              "without applying that step, so the weights are the last finite ones.")

_TASK_LOSSES = {
    "sparse_categorical_crossentropy": lambda: keras.losses.SparseCategoricalCrossentropy(
        from_logits=True),
    "categorical_crossentropy": lambda: keras.losses.CategoricalCrossentropy(from_logits=True),
    "mse": keras.losses.MeanSquaredError,
}


@keras.saving.register_keras_serializable(package="tfkd")
class Distiller(keras.Model):
    """Knowledge distillation from a frozen teacher into a student.

    For each batch, with per-example terms averaged over the global batch
    (``sum_i w_i l_i / N``, so it is right under ``tf.distribute``)::

        loss = alpha * task_loss(labels, s) + (1 - alpha) * distillation_loss(t, s)
        distillation_loss(t, s) = loss_fn(t, s) + sum_k feature_k(x)

    where ``t`` are the teacher's outputs, ``s`` the student's (logits or
    Q-values). Hinton et al. (2015), "Distilling the Knowledge in a Neural
    Network"; Rusu et al. (2016), "Policy Distillation". A ``loss_fn`` that
    opts into the fused batch-mean protocol (``fused_batch_mean = True``, see
    ``tfkd.losses``; the KL losses do) trains through its ``batch_mean``;
    any other is reduced from its per-example values.

    Data (``fit`` / ``evaluate``): ``x`` = observations. With a live teacher,
    ``y`` = task labels (optional). With ``teacher=None``, ``y`` = the
    teacher's outputs, or a dict ``{"teacher_outputs": ..., "labels": ...}``
    (labels optional). A dict with "teacher_outputs" is used as is even when
    a teacher is given. ``predict`` returns the student's outputs.

    Teacher-output cache (``cache_teacher_outputs=True``, the default): when
    ``fit`` gets in-memory arrays (NumPy arrays or tensors, or a dict / list
    of them) and the teacher is a ``keras.Model``, the teacher runs once over
    ``x`` (``teacher.predict``, in inference mode) and training reads its
    outputs from ``y = {"teacher_outputs": ..., "labels": y}`` instead of
    running it every step of every epoch. The latest outputs are kept (one
    entry, not saved with the model) and reused by later ``fit`` calls while
    ``x`` and the teacher's weights are unchanged (checked by hashing both);
    otherwise they are recomputed. The teacher runs live for a
    ``tf.data.Dataset``, a generator or a ``PyDataset``, with feature
    distillation, with ``class_weight``, for a teacher that is not a
    ``keras.Model``, and for ``validation_data`` and ``evaluate``. A teacher
    whose outputs must be recomputed every step (e.g. a stochastic one) needs
    ``cache_teacher_outputs=False``.

    Metrics: loss, task_loss (when a task term is in play), distillation_loss,
    agreement (argmax of student = argmax of teacher), teacher_entropy and
    student_entropy (of softmax of the outputs, in nats), and any
    ``compile(metrics=...)``, which are computed against the labels.

    Args:
        student: the keras.Model to train.
        teacher: a keras.Model, any callable ``observations -> outputs`` (its
            variables never train), or None when the data carries the
            teacher's outputs.
        distillation_loss: a loss ``(teacher_outputs, student_outputs)`` on
            logits / Q-values: a ``keras.losses.Loss`` (its unreduced ``call``
            is used), a callable returning per-example values, or a name for
            ``tfkd.losses.get``. Default: ``tfkd.losses.SoftTargetKL``.
        alpha: weight in [0, 1] of the task loss.
        task_loss: None, a loss ``(labels, student_outputs)`` (Loss, callable
            or one of "sparse_categorical_crossentropy",
            "categorical_crossentropy" (both from logits) and "mse"). With
            None and ``alpha > 0`` it is sparse categorical cross-entropy
            from logits on class / action labels.
        temperature: temperature of a default or named KL loss.
        backend: ``tfkd.ops.softmax_kl`` backend ("auto", "cpp", "tf") for the
            KL losses; None keeps the loss's own (default "auto").
        feature_distillation: a ``tfkd.FeatureDistillation`` or a list of
            them (needs functional teacher and student).
        cache_teacher_outputs: whether ``fit`` on arrays runs a Keras teacher
            once and trains on its stored outputs (see above); False runs the
            teacher every step.
        name: the model's name.

    Raises:
        ValueError: alpha outside [0, 1], temperature <= 0, a non-bool
            cache_teacher_outputs, teacher and student outputs of different
            shapes, an unknown loss name, a Keras loss on probabilities as
            distillation_loss (``keras.losses.KLDivergence``, "kld",
            ``CategoricalCrossentropy(from_logits=False)``, ...: use
            ``tfkd.losses.SoftTargetKL``), or (at the first step) data
            without teacher outputs or labels that the configuration needs.
    """

    def __init__(self, student, teacher=None, distillation_loss=None, alpha=0.0,
                 task_loss=None, temperature=None, backend=None, feature_distillation=None,
                 cache_teacher_outputs=True, name="distiller", **kwargs):
        super().__init__(name=name, **kwargs)
        if not isinstance(student, keras.Model):
            raise ValueError(f"student must be a keras.Model, got {type(student).__name__}")
        if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not 0 <= alpha <= 1:
            raise ValueError(f"alpha must be a number in [0, 1], got {alpha!r}")
        if teacher is not None and not callable(teacher):
            raise ValueError(f"teacher must be a keras.Model, a callable or None, got "
                             f"{type(teacher).__name__}")
        if not isinstance(cache_teacher_outputs, bool):
            raise ValueError(f"cache_teacher_outputs must be True or False, got "
                             f"{cache_teacher_outputs!r}")
        self.student = student
        self.cache_teacher_outputs = cache_teacher_outputs
        object.__setattr__(self, "_teacher_cache", TeacherOutputCache())
        self.alpha = float(alpha)
        self.backend = backend
        self._set_teacher(teacher)
        self.distillation_loss = _with_backend(
            tfkd_losses.get(distillation_loss, temperature=temperature, backend=backend), backend)
        if temperature is not None and not isinstance(distillation_loss, (str, type(None))):
            raise ValueError("temperature= applies only to a default or named loss; set it on "
                             "the loss object instead")
        self._task_loss_arg = task_loss
        self.task_loss = _task_loss(task_loss, self.alpha)
        self.feature_distillation = _as_list(feature_distillation)
        _check_output_shapes(self.teacher, self.student)
        # Functional views sharing the models' layers; not tracked, so the
        # weights are saved once, under the student and the teacher.
        object.__setattr__(self, "_extractors", FeatureExtractors(
            self.feature_distillation, self.teacher, self.student)
            if self.feature_distillation else None)

        names = ["loss"] + (["task_loss"] if self.task_loss else []) + [
            "distillation_loss", "agreement", "teacher_entropy", "student_entropy"]
        self.distillation_metrics = metrics_lib.Means(names, name="distillation_metrics")
        self.nonfinite_steps = keras.metrics.Sum(name="nonfinite_steps")
        self.label_metrics = []
        self.built = student.built

    def _set_teacher(self, teacher):
        if isinstance(teacher, keras.layers.Layer):
            teacher.trainable = False
            self.teacher = teacher
        else:
            # Not a Keras 3 object (e.g. a tf_keras network): keep it out of
            # Keras' tracking so none of its variables can be trained or saved.
            object.__setattr__(self, "teacher", teacher)

    def compile(self, optimizer="adam", loss=None, metrics=None, **kwargs):
        """Like ``keras.Model.compile``; ``metrics`` compare labels with the student.

        Raises:
            ValueError: a ``loss`` (the task loss is ``Distiller(task_loss=...)``).
        """
        if loss is not None:
            raise ValueError("Distiller.compile takes no loss: pass task_loss= and "
                             "distillation_loss= to Distiller(...)")
        self.label_metrics = [metrics_lib.label_metric(m) for m in _as_list(metrics)]
        super().compile(optimizer=optimizer, **kwargs)

    @property
    def metrics(self):
        metrics = [self.distillation_metrics] + list(self.label_metrics)
        if self.compiled and self.jit_compile:
            metrics.append(self.nonfinite_steps)
        return metrics

    # ------------------------------------------------------------- training

    def call(self, inputs, training=None):
        return self.student(inputs, training=training)

    def fit(self, *args, **kwargs):
        """``keras.Model.fit``; a NaN or inf loss raises ``FloatingPointError``.

        The step with the non-finite loss or gradient makes no update, so the
        weights are those of the last finite step. With array data and a
        Keras teacher, the teacher's outputs are computed once and cached (see
        the class docstring).

        Raises:
            ValueError: ``x`` with no examples.
            FloatingPointError: a non-finite loss or gradient.
        """
        arguments = inspect.signature(super().fit).bind(*args, **kwargs).arguments
        _check_not_empty(arguments.get("x"))
        callbacks = list(arguments.get("callbacks") or [])
        if self.jit_compile:  # XLA drops tf.debugging.Assert: check after each step
            callbacks.append(_StopOnNonFiniteLoss())
        arguments["callbacks"] = callbacks
        if self._uses_teacher_cache(arguments):
            targets = {TEACHER_OUTPUTS: self._teacher_cache.outputs(
                self.teacher, arguments["x"], arguments.get("batch_size"))}
            if arguments.get("y") is not None:
                targets[LABELS] = arguments["y"]
            arguments["y"] = targets
        try:
            return super().fit(**arguments)
        except tf.errors.InvalidArgumentError as error:
            if NON_FINITE in str(error):
                raise FloatingPointError(NON_FINITE) from error
            raise

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Keras (3.15, TensorFlow backend) builds a model made under a strategy
        # from its first distributed batch, mean-reduced across replicas by one
        # `strategy.reduce` call on the whole (x, y, sample_weight) nest. Across
        # workers, MultiWorkerMirroredStrategy refuses a nest there
        # (keras-team/keras#20585), so fit and evaluate fail before the first
        # step. The build needs only shapes and dtypes: this worker's share of
        # the batch gives them, without a collective.
        if (iterator is not None and data_batch is None
                and _multi_worker(self.distribute_strategy)):
            for _, _, batches in iterator:
                data_batch = _local_values(self.distribute_strategy, next(batches))
                break
            iterator = None
        return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    def _uses_teacher_cache(self, arguments):
        y = arguments.get("y")
        return (self.cache_teacher_outputs and isinstance(self.teacher, keras.Model)
                and not self.feature_distillation and arguments.get("class_weight") is None
                and not (isinstance(y, dict) and TEACHER_OUTPUTS in y)
                and array_leaves(arguments.get("x")) is not None)

    def train_step(self, data):
        """One optimizer step; a step with a non-finite loss or gradient is not applied.

        Otherwise Keras' own step: ``compute_loss``, the gradient of the
        scaled loss, the update, ``compute_metrics``.
        """
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            y_pred = self._student_forward(x, training=True)
            loss = self.compute_loss(x, y, y_pred, sample_weight, training=True)
            scaled_loss = self.optimizer.scale_loss(loss)
        weights = self.trainable_weights
        gradients = tape.gradient(scaled_loss, weights)
        self._apply_if_finite(loss, gradients, weights)
        return self.compute_metrics(x, y, y_pred, sample_weight)

    def _student_forward(self, x, training):
        """The student's outputs, or ``[outputs, *features]`` with feature distillation."""
        if self._extractors is not None:
            return self._extractors.student(x, training=training)
        return self(x, training=training)

    def _apply_if_finite(self, loss, gradients, weights):
        finite = tf.math.is_finite(loss)
        if not isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer):
            # (it skips such steps itself.) A NaN or inf anywhere makes the sum
            # non-finite: one check, not one per tensor.
            finite = tf.logical_and(finite, tf.math.is_finite(
                tf.add_n([tf.reduce_sum(g) for g in gradients if g is not None])))
        if self.jit_compile:
            def apply():
                self.optimizer.apply_gradients(zip(gradients, weights))
                return tf.constant(0.0)

            skipped = tf.cond(finite, apply, lambda: tf.constant(1.0))
            self.nonfinite_steps.update_state(skipped)
        else:
            check = tf.debugging.Assert(finite, [NON_FINITE + " loss =", loss])
            with tf.control_dependencies([check]):
                gradients = [None if g is None else tf.identity(g) for g in gradients]
            self.optimizer.apply_gradients(zip(gradients, weights))

    # ---------------------------------------------------------- Keras hooks

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """The scalar loss of a batch (see the class docstring); updates the
        distillation metrics.

        ``y_pred`` is the student's outputs (``self(x)``, as Keras'
        ``test_step`` passes it), ``[outputs, *features]`` from the student's
        feature extractor, or None (the student runs here).
        """
        teacher_outputs, labels, sample_weight = self._targets(y, sample_weight)
        student_outputs, student_features = self._split_prediction(x, y_pred, training)
        features = []
        if self._extractors is not None:
            live, *teacher_features = self._extractors.teacher(x, training=False)
            teacher_outputs = live if teacher_outputs is None else teacher_outputs
            features = self._extractors.losses(teacher_features, student_features)
        elif teacher_outputs is None:
            teacher_outputs = self._call_teacher(x)
        s = tf.cast(student_outputs, tf.float32)
        t = tf.stop_gradient(tf.cast(teacher_outputs, tf.float32))
        _assert_same_shape(t.shape, s.shape)

        if tfkd_losses.has_fused_batch_mean(self.distillation_loss):
            # Its share of the loss comes from one pass that also scales the gradient rows.
            kl_loss, distill = self._fused_batch_mean(t, s, sample_weight)
            losses = [kl_loss]
            per_example = [(1.0 - self.alpha) * f for f in features]
        else:
            distill = _per_example(self.distillation_loss, t, s)
            losses = []
            per_example = [(1.0 - self.alpha) * v for v in [distill] + features]
        terms = {"distillation_loss": tf.add_n([distill] + features)}
        if self.task_loss is not None:
            if labels is None:
                raise ValueError(
                    f"the task loss (alpha={self.alpha}) needs labels: give (x, labels) with a "
                    f"live teacher, or y={{'teacher_outputs': ..., 'labels': ...}}")
            terms["task_loss"] = _per_example(self.task_loss, labels, s)
            per_example.append(self.alpha * terms["task_loss"])
        if per_example:
            losses.append(tf.nn.compute_average_loss(tf.add_n(per_example),
                                                     sample_weight=sample_weight))
        loss = tf.add_n(losses)
        self._update_distillation_metrics(loss, terms, t, s, sample_weight)
        return loss

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        """Updates the ``compile(metrics=...)`` against the labels; returns all results."""
        if self.label_metrics:
            _, labels, sample_weight = self._targets(y, sample_weight)
            if labels is None:
                raise ValueError("compile(metrics=...) are computed against task labels, but "
                                 "the data has none")
            s = tf.cast(y_pred[0] if isinstance(y_pred, (list, tuple)) else y_pred, tf.float32)
            for metric in self.label_metrics:
                metric.update_state(labels, s, sample_weight=sample_weight)
        results = self.get_metrics_result()
        if _multi_worker(self.distribute_strategy):
            # Keras reduces a step's results across workers with
            # strategy.reduce("MEAN", value, axis=0), which a scalar cannot
            # take: give it each scalar as [value], so the result is the
            # scalar mean over the replicas, as under MirroredStrategy.
            results = {name: tf.reshape(value, [1]) if value.shape.rank == 0 else value
                       for name, value in results.items()}
        return results

    def _split_prediction(self, x, y_pred, training):
        """(student outputs, student features or []) from ``y_pred``."""
        if self._extractors is None:
            return (self(x, training=training) if y_pred is None else y_pred), []
        if not isinstance(y_pred, (list, tuple)):  # outputs alone: features need the extractor
            y_pred = self._extractors.student(x, training=training)
        return y_pred[0], list(y_pred[1:])

    def _targets(self, y, sample_weight):
        """(precomputed teacher outputs or None, labels or None, per-example sample weight)."""
        if isinstance(sample_weight, dict) and TEACHER_OUTPUTS in sample_weight:
            # Keras copies a per-example sample_weight to every key of a dict y.
            sample_weight = sample_weight[TEACHER_OUTPUTS]
        if isinstance(y, dict) and TEACHER_OUTPUTS in y:
            unknown = set(y) - {TEACHER_OUTPUTS, LABELS}
            if unknown:
                raise ValueError(f"unexpected keys {sorted(unknown)} in y; expected "
                                 f"{TEACHER_OUTPUTS!r} and optionally {LABELS!r}")
            return y[TEACHER_OUTPUTS], y.get(LABELS), sample_weight
        if self.teacher is not None:
            return None, y, sample_weight
        if y is None:
            raise ValueError("teacher=None, so the data must carry the teacher's outputs: give "
                             "(observations, teacher_outputs) or (observations, "
                             "{'teacher_outputs': ..., 'labels': ...}), or pass a teacher")
        if isinstance(y, dict):
            raise ValueError(f"teacher=None and y is a dict without {TEACHER_OUTPUTS!r} "
                             f"(keys: {sorted(y)}); put the teacher's outputs under "
                             f"{TEACHER_OUTPUTS!r}")
        return y, None, sample_weight

    def _fused_batch_mean(self, t, s, sample_weight):
        """The fused loss's share of ``compute_average_loss(total, w)``.

        (1 - alpha) sum_i w_i loss_i / N over the global batch of N examples,
        each example's loss the mean over its rows (all axes but the first and
        the last), and the per-example losses (without gradient).
        """
        weights = None
        if sample_weight is not None:  # one per example, the same for each of its rows
            rows_per_example = [1] * (s.shape.rank - 2)
            weights = tf.broadcast_to(
                tf.reshape(tf.cast(sample_weight, s.dtype), [-1] + rows_per_example),
                tf.shape(s)[:-1])
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        loss, values = self.distillation_loss.batch_mean(
            t, s, sample_weight=weights, scale=(1.0 - self.alpha) / replicas)
        return loss, metrics_lib.mean_over_rows(values)

    def _call_teacher(self, x):
        if isinstance(self.teacher, keras.layers.Layer):
            return self.teacher(x, training=False)
        return self.teacher(x)

    def _update_distillation_metrics(self, loss, terms, t, s, sample_weight):
        agree = tf.cast(tf.equal(tf.argmax(t, -1), tf.argmax(s, -1)), tf.float32)
        per_example = {**terms,
                       "agreement": metrics_lib.mean_over_rows(agree),
                       "teacher_entropy": metrics_lib.mean_over_rows(metrics_lib.entropy(t)),
                       "student_entropy": metrics_lib.mean_over_rows(metrics_lib.entropy(s))}
        stacked = tf.stack([per_example[name] for name in self.distillation_metrics.names[1:]])
        replicas = tf.cast(tf.distribute.get_strategy().num_replicas_in_sync, tf.float32)
        values = tf.concat([[loss * replicas],
                            metrics_lib.batch_mean(stacked, sample_weight)], axis=0)
        self.distillation_metrics.update_state(values, tf.shape(s)[0])

    # -------------------------------------------------------------- saving

    def get_config(self):
        if self.teacher is not None and not isinstance(self.teacher, keras.layers.Layer):
            raise NotImplementedError(
                f"a Distiller with a non-Keras teacher ({type(self.teacher).__name__}) cannot be "
                f"serialised; save the student (distiller.student.save(...)) or the weights")
        ser = keras.saving.serialize_keras_object
        task_loss = self._task_loss_arg
        return {
            "name": self.name,
            "trainable": self.trainable,
            "dtype": ser(self.dtype_policy),
            "student": ser(self.student),
            "teacher": ser(self.teacher),
            "distillation_loss": ser(self.distillation_loss),
            "alpha": self.alpha,
            "task_loss": task_loss if task_loss is None or isinstance(task_loss, str)
            else ser(task_loss),
            "backend": self.backend,
            "feature_distillation": [ser(f) for f in self.feature_distillation],
            "cache_teacher_outputs": self.cache_teacher_outputs,
        }

    def get_compile_config(self):
        if not self.compiled:
            return None
        ser = keras.saving.serialize_keras_object
        return {"optimizer": ser(self.optimizer),
                "metrics": [ser(m) for m in self.label_metrics]}

    def compile_from_config(self, config):
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if self.built:
            self.optimizer.build(self.trainable_variables)

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        load = lambda value: keras.saving.deserialize_keras_object(  # noqa: E731
            value, custom_objects=custom_objects)
        for key in ("student", "teacher", "distillation_loss", "dtype"):
            if config.get(key) is not None:
                config[key] = load(config[key])
        if config.get("task_loss") is not None and not isinstance(config["task_loss"], str):
            config["task_loss"] = load(config["task_loss"])
        config["feature_distillation"] = [load(f) for f in config.get("feature_distillation", [])]
        return cls(**config)


class _StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Raises after a skipped step under XLA, where the in-graph assertion is dropped."""

    def on_train_batch_end(self, batch, logs=None):
        if logs and logs.get("nonfinite_steps", 0) > 0:
            raise FloatingPointError(NON_FINITE)


# ---------------------------------------------------------------- helpers


def _check_not_empty(x):
    """Raises for fit's ``x`` with no examples (arrays or a dataset of known size 0)."""
    leaves = array_leaves(x)
    if leaves is not None:
        sizes = {tuple(a.shape)[0] if len(a.shape) else None for _, a in leaves}
        if 0 in sizes:
            raise ValueError("Distiller.fit got x with 0 examples; give it at least one "
                             "observation")
    elif isinstance(x, tf.data.Dataset) and int(x.cardinality()) == 0:
        raise ValueError("Distiller.fit got an empty tf.data.Dataset as x; give it at least "
                         "one batch")


def _multi_worker(strategy):
    """Whether ``strategy`` spans several workers (Keras' own test before it reduces)."""
    return (isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
            and strategy.extended._in_multi_worker_mode())


def _local_values(strategy, batch):
    """``batch`` with each distributed value replaced by this worker's first replica's."""
    def local(value):
        if isinstance(value, tf.distribute.DistributedValues):
            return strategy.experimental_local_results(value)[0]
        return value

    return tf.nest.map_structure(local, batch)


def _with_backend(loss, backend):
    if backend is None or getattr(loss, "backend", backend) == backend:
        return loss
    return loss.__class__.from_config({**loss.get_config(), "backend": backend})


def _task_loss(task_loss, alpha):
    if task_loss is None:
        return _TASK_LOSSES["sparse_categorical_crossentropy"]() if alpha > 0 else None
    if isinstance(task_loss, str):
        if task_loss not in _TASK_LOSSES:
            raise ValueError(f"unknown task_loss {task_loss!r}; expected one of "
                             f"{sorted(_TASK_LOSSES)}, a keras Loss or a callable")
        return _TASK_LOSSES[task_loss]()
    if not callable(task_loss):
        raise ValueError(f"task_loss must be a name, a loss or a callable, got {task_loss!r}")
    return task_loss


def _per_example(loss, y_true, y_pred):
    """Unreduced values of a Loss or callable, averaged to shape [batch]."""
    values = loss.call(y_true, y_pred) if isinstance(loss, keras.losses.Loss) else loss(
        y_true, y_pred)
    values = tf.cast(values, tf.float32)
    if values.shape.rank == 0:
        raise ValueError(f"the loss {getattr(loss, 'name', loss)!r} returned a scalar; tfkd "
                         f"needs one value per example (reduction happens in the Distiller)")
    return metrics_lib.mean_over_rows(values)


def _as_list(value):
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _check_output_shapes(teacher, student):
    shapes = []
    for model in (teacher, student):
        outputs = getattr(model, "outputs", None) if isinstance(model, keras.Model) else None
        shapes.append(tuple(outputs[0].shape) if outputs and len(outputs) == 1 else None)
    if None not in shapes:
        _assert_same_shape(*shapes)


def _assert_same_shape(teacher_shape, student_shape):
    teacher_shape, student_shape = tuple(teacher_shape), tuple(student_shape)
    if len(teacher_shape) != len(student_shape) or any(
            a is not None and b is not None and a != b
            for a, b in zip(teacher_shape, student_shape)):
        raise ValueError(f"teacher and student outputs differ in shape: teacher "
                         f"{teacher_shape}, student {student_shape}; they must output the "
                         f"same number of actions / classes")
