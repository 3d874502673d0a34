"""``tfkd.Distiller``: a keras.Model that trains a student from a teacher.

    loss = alpha * task_loss + (1 - alpha) * distillation_loss

Teacher outputs come from a live teacher (a keras.Model or any callable
observations -> logits / Q-values) or are read from the dataset (RL datasets
store them); ``fit`` on arrays runs a Keras teacher once and reuses its
outputs. See notes/CONTRACTS.md for the data layout.
"""

from __future__ import annotations

import inspect
import numbers

import keras
import tensorflow as tf
from keras.src.optimizers.loss_scale_optimizer import LossScaleOptimizer
from keras.src.saving import serialization_lib

from tfkd import losses as tfkd_losses
from tfkd import _distiller_parts as parts
from tfkd.feature_distillation import FeatureDistillation  # noqa: F401  (registers it for loading)

__all__ = ["Distiller"]

TEACHER_OUTPUTS = "teacher_outputs"
LABELS = "labels"


@keras.saving.register_keras_serializable(package="tfkd")
class Distiller(keras.Model):
    """Knowledge distillation from a frozen teacher into a student.

    For each batch, with per-example terms averaged over the global batch
    (``sum_i w_i l_i / N``, so it is right under ``tf.distribute``)::

        loss = alpha * task_loss(labels, s) + (1 - alpha) * distillation_loss(t, s)
        distillation_loss(t, s) = loss_fn(t, s) + sum_k feature_k(x)

    where ``t`` are the teacher's outputs, ``s`` the student's (logits or
    Q-values). Hinton et al. (2015), "Distilling the Knowledge in a Neural
    Network"; Rusu et al. (2016), "Policy Distillation".

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
    otherwise they are recomputed. The teacher runs live as before for a
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
        distillation_loss: a loss ``(teacher_outputs, student_outputs)``: a
            ``keras.losses.Loss`` (its unreduced ``call`` is used), a callable
            returning per-example values, or a name for ``tfkd.losses.get``.
            Default: ``tfkd.losses.SoftTargetKL`` (KL on logits, never on
            raw values).
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
            cache_teacher_outputs, teacher and
            student outputs of different shapes, an unknown loss name, or
            (at the first step) data without teacher outputs or labels that
            the configuration needs.
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
        # (key, teacher outputs) of the latest fit on arrays; not tracked, not saved.
        object.__setattr__(self, "_teacher_cache", None)
        self.alpha = float(alpha)
        self.backend = backend
        self._set_teacher(teacher)
        self.distillation_loss = parts.with_backend(
            tfkd_losses.get(distillation_loss, temperature=temperature, backend=backend), backend)
        if temperature is not None and not isinstance(distillation_loss, (str, type(None))):
            raise ValueError("temperature= applies only to a default or named loss; set it on "
                             "the loss object instead")
        parts.reject_probability_kl(self.distillation_loss)
        self._task_loss_arg = task_loss
        self.task_loss = parts.resolve_task_loss(task_loss, self.alpha)
        self.feature_distillation = parts.as_list(feature_distillation)
        self._check_output_shapes()
        self._build_feature_extractors()

        names = ["loss"] + (["task_loss"] if self.task_loss else []) + [
            "distillation_loss", "agreement", "teacher_entropy", "student_entropy"]
        self.distillation_metrics = parts.Means(names, name="distillation_metrics")
        self.nonfinite_steps = keras.metrics.Sum(name="nonfinite_steps")
        self.label_metrics = []
        self.built = student.built

    # ----------------------------------------------------------------- set-up

    def _set_teacher(self, teacher):
        if isinstance(teacher, keras.layers.Layer):
            teacher.trainable = False
            self.teacher = teacher
        else:
            # Not a Keras 3 object (e.g. a tf_keras network): keep it out of
            # Keras' tracking so none of its variables can be trained or saved.
            object.__setattr__(self, "teacher", teacher)

    def _check_output_shapes(self):
        t_shape = parts.static_output_shape(self.teacher)
        s_shape = parts.static_output_shape(self.student)
        if t_shape is not None and s_shape is not None:
            parts.assert_same_shape(t_shape, s_shape)

    def _build_feature_extractors(self):
        self._teacher_extractor = self._student_extractor = None
        if not self.feature_distillation:
            return
        for model, role in ((self.teacher, "teacher"), (self.student, "student")):
            if not isinstance(model, keras.Model) or not getattr(model, "inputs", None):
                raise ValueError(f"feature distillation needs a functional keras.Model as "
                                 f"{role}, got {type(model).__name__}")
        teacher_layers = [self._layer(self.teacher, f.teacher_layer_name, "teacher")
                          for f in self.feature_distillation]
        student_layers = [self._layer(self.student, f.student_layer_name, "student")
                          for f in self.feature_distillation]
        for feature, t_layer, s_layer in zip(self.feature_distillation, teacher_layers,
                                             student_layers):
            if not feature.built:
                feature.build_for(t_layer.output.shape, s_layer.output.shape)
        # Functional views that share the models' layers; not tracked, so the
        # weights are saved once, under the student and the teacher.
        object.__setattr__(self, "_teacher_extractor", keras.Model(
            self.teacher.inputs, [self.teacher.outputs[0]] + [l.output for l in teacher_layers]))
        object.__setattr__(self, "_student_extractor", keras.Model(
            self.student.inputs, [self.student.outputs[0]] + [l.output for l in student_layers]))

    @staticmethod
    def _layer(model, name, role):
        try:
            return model.get_layer(name)
        except ValueError:
            raise ValueError(f"the {role} model {model.name!r} has no layer named {name!r}; "
                             f"its layers are {[l.name for l in model.layers]}") from None

    def compile(self, optimizer="adam", loss=None, metrics=None, **kwargs):
        """Like ``keras.Model.compile``; ``metrics`` compare labels with the student.

        Raises:
            ValueError: a ``loss`` (the task loss is ``Distiller(task_loss=...)``).
        """
        if loss is not None:
            raise ValueError("Distiller.compile takes no loss: pass task_loss= and "
                             "distillation_loss= to Distiller(...)")
        self.label_metrics = [parts.resolve_metric(m) for m in parts.as_list(metrics)]
        super().compile(optimizer=optimizer, **kwargs)

    # ------------------------------------------------------------ the steps

    def call(self, inputs, training=None):
        return self.student(inputs, training=training)

    def fit(self, *args, **kwargs):
        """``keras.Model.fit``; a NaN or inf loss raises ``FloatingPointError``.

        The step with the non-finite loss or gradient makes no update, so the
        weights are those of the last finite step. With array data and a
        Keras teacher, the teacher's outputs are computed once and cached (see
        the class docstring).
        """
        arguments = inspect.signature(super().fit).bind(*args, **kwargs).arguments
        callbacks = list(arguments.get("callbacks") or [])
        if self.jit_compile:  # XLA drops tf.debugging.Assert: check after each step
            callbacks.append(parts.StopOnNonFiniteLoss())
        arguments["callbacks"] = callbacks
        self._add_cached_teacher_outputs(arguments)
        try:
            return super().fit(**arguments)
        except tf.errors.InvalidArgumentError as error:
            if parts.NON_FINITE in str(error):
                raise FloatingPointError(parts.NON_FINITE) from error
            raise

    def _add_cached_teacher_outputs(self, arguments):
        """Replaces ``y`` in fit's arguments by ``{"teacher_outputs": ..., "labels": y}``."""
        y = arguments.get("y")
        if (not self.cache_teacher_outputs or not isinstance(self.teacher, keras.Model)
                or self.feature_distillation or arguments.get("class_weight") is not None
                or (isinstance(y, dict) and TEACHER_OUTPUTS in y)):
            return
        leaves = parts.array_leaves(arguments.get("x"))
        if leaves is None:
            return
        key = (tuple(path for path, _ in leaves), parts.fingerprint(a for _, a in leaves),
               parts.fingerprint(w.numpy() for w in self.teacher.weights))
        if self._teacher_cache is None or self._teacher_cache[0] != key:
            object.__setattr__(self, "_teacher_cache", None)  # free the old outputs first
            batch_size = max(arguments.get("batch_size") or 32, 1024)
            outputs = self.teacher.predict(arguments["x"], batch_size=batch_size, verbose=0)
            object.__setattr__(self, "_teacher_cache", (key, outputs))
        targets = {TEACHER_OUTPUTS: self._teacher_cache[1]}
        if y is not None:
            targets[LABELS] = y
        arguments["y"] = targets

    def train_step(self, data):
        x, teacher_outputs, labels, sample_weight = self._unpack(data)
        with tf.GradientTape() as tape:
            terms = self._loss_terms(x, teacher_outputs, labels, sample_weight, training=True)
            loss = terms["loss"]
            scaled_loss = self.optimizer.scale_loss(loss)
        weights = self.trainable_weights
        gradients = tape.gradient(scaled_loss, weights)
        finite = tf.math.is_finite(loss)
        if not isinstance(self.optimizer, LossScaleOptimizer):  # it skips such steps itself
            # A NaN or inf anywhere makes the sum non-finite: one check, not one per tensor.
            finite = tf.logical_and(finite, tf.math.is_finite(
                tf.add_n([tf.reduce_sum(g) for g in gradients if g is not None])))
        if self.jit_compile:
            def apply():
                self.optimizer.apply_gradients(zip(gradients, weights))
                return tf.constant(0.0)

            skipped = tf.cond(finite, apply, lambda: tf.constant(1.0))
            self.nonfinite_steps.update_state(skipped)
        else:
            check = tf.debugging.Assert(finite, [parts.NON_FINITE + " loss =", loss])
            with tf.control_dependencies([check]):
                gradients = [None if g is None else tf.identity(g) for g in gradients]
            self.optimizer.apply_gradients(zip(gradients, weights))
        return self._update_metrics(terms, labels, sample_weight)

    def test_step(self, data):
        x, teacher_outputs, labels, sample_weight = self._unpack(data)
        terms = self._loss_terms(x, teacher_outputs, labels, sample_weight, training=False)
        return self._update_metrics(terms, labels, sample_weight)

    def _unpack(self, data):
        """(x, teacher outputs or None, labels or None, sample_weight) of a batch."""
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        teacher_outputs, labels = self._targets(y)
        if isinstance(sample_weight, dict) and TEACHER_OUTPUTS in sample_weight:
            # Keras copies a per-example sample_weight to every key of a dict y.
            sample_weight = sample_weight[TEACHER_OUTPUTS]
        return x, teacher_outputs, labels, sample_weight

    def _targets(self, y):
        """(precomputed teacher outputs or None, labels or None) from ``y``."""
        if isinstance(y, dict) and TEACHER_OUTPUTS in y:
            unknown = set(y) - {TEACHER_OUTPUTS, LABELS}
            if unknown:
                raise ValueError(f"unexpected keys {sorted(unknown)} in y; expected "
                                 f"{TEACHER_OUTPUTS!r} and optionally {LABELS!r}")
            return y[TEACHER_OUTPUTS], y.get(LABELS)
        if self.teacher is not None:
            return None, y
        if y is None:
            raise ValueError("teacher=None, so the data must carry the teacher's outputs: give "
                             "(observations, teacher_outputs) or (observations, "
                             "{'teacher_outputs': ..., 'labels': ...}), or pass a teacher")
        if isinstance(y, dict):
            raise ValueError(f"teacher=None and y is a dict without {TEACHER_OUTPUTS!r} "
                             f"(keys: {sorted(y)}); put the teacher's outputs under "
                             f"{TEACHER_OUTPUTS!r}")
        return y, None

    def _loss_terms(self, x, teacher_outputs, labels, sample_weight, training):
        teacher_features = student_features = []
        if self.feature_distillation:
            student_outputs, *student_features = self._student_extractor(x, training=training)
            live, *teacher_features = self._teacher_extractor(x, training=False)
            teacher_outputs = live if teacher_outputs is None else teacher_outputs
        else:
            student_outputs = self.student(x, training=training)
            if teacher_outputs is None:
                teacher_outputs = self._call_teacher(x)
        s = tf.cast(student_outputs, tf.float32)
        t = tf.stop_gradient(tf.cast(teacher_outputs, tf.float32))
        parts.assert_same_shape(t.shape, s.shape)

        features = [feature(tf.stop_gradient(t_feat), s_feat) for feature, t_feat, s_feat
                    in zip(self.feature_distillation, teacher_features, student_features)]
        if parts.has_fused_batch_mean(self.distillation_loss):
            # Its share of the loss comes from one kernel pass that also scales the gradient rows.
            kl_loss, distill = self._kl_loss(t, s, sample_weight)
            losses = [kl_loss]
            per_example = [(1.0 - self.alpha) * f for f in features]
        else:
            distill = parts.per_example(self.distillation_loss, t, s)
            losses = []
            per_example = [(1.0 - self.alpha) * v for v in [distill] + features]
        distill = tf.add_n([distill] + features)
        terms = {"distillation_loss": distill, "teacher": t, "student": s}
        if self.task_loss is not None:
            if labels is None:
                raise ValueError(
                    f"the task loss (alpha={self.alpha}) needs labels: give (x, labels) with a "
                    f"live teacher, or y={{'teacher_outputs': ..., 'labels': ...}}")
            task = parts.per_example(self.task_loss, labels, s)
            terms["task_loss"] = task
            per_example.append(self.alpha * task)
        if per_example:
            losses.append(tf.nn.compute_average_loss(tf.add_n(per_example),
                                                     sample_weight=sample_weight))
        terms["loss"] = tf.add_n(losses)
        return terms

    def _kl_loss(self, t, s, sample_weight):
        """The KL distillation loss's share of ``compute_average_loss(total, w)``.

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
        return loss, parts.mean_over_rows(values)

    def _call_teacher(self, x):
        if isinstance(self.teacher, keras.layers.Layer):
            return self.teacher(x, training=False)
        return self.teacher(x)

    def _update_metrics(self, terms, labels, sample_weight):
        t, s = terms["teacher"], terms["student"]
        agree = tf.cast(tf.equal(tf.argmax(t, -1), tf.argmax(s, -1)), tf.float32)
        per_example = {"task_loss": terms.get("task_loss"),
                       "distillation_loss": terms["distillation_loss"],
                       "agreement": parts.mean_over_rows(agree),
                       "teacher_entropy": parts.mean_over_rows(parts.entropy(t)),
                       "student_entropy": parts.mean_over_rows(parts.entropy(s))}
        stacked = tf.stack([per_example[name] for name in self.distillation_metrics.names[1:]])
        values = tf.concat([[terms["loss"] * parts.num_replicas()],
                            parts.batch_mean(stacked, sample_weight)], axis=0)
        self.distillation_metrics.update_state(values, tf.shape(s)[0])
        if self.label_metrics:
            if labels is None:
                raise ValueError("compile(metrics=...) are computed against task labels, but "
                                 "the data has none")
            for metric in self.label_metrics:
                metric.update_state(labels, s, sample_weight=sample_weight)
        return self.get_metrics_result()

    @property
    def metrics(self):
        metrics = [self.distillation_metrics] + list(self.label_metrics)
        if self.compiled and self.jit_compile:
            metrics.append(self.nonfinite_steps)
        return metrics

    # -------------------------------------------------------------- saving

    def get_config(self):
        if self.teacher is not None and not isinstance(self.teacher, keras.layers.Layer):
            raise NotImplementedError(
                f"a Distiller with a non-Keras teacher ({type(self.teacher).__name__}) cannot be "
                f"serialised; save the student (distiller.student.save(...)) or the weights")
        ser = serialization_lib.serialize_keras_object
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
        ser = serialization_lib.serialize_keras_object
        return {"optimizer": ser(self.optimizer),
                "metrics": [ser(m) for m in self.label_metrics]}

    def compile_from_config(self, config):
        config = serialization_lib.deserialize_keras_object(config)
        self.compile(**config)
        if self.built:
            self.optimizer.build(self.trainable_variables)

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        for key in ("student", "teacher", "distillation_loss", "dtype"):
            if config.get(key) is not None:
                config[key] = serialization_lib.deserialize_keras_object(
                    config[key], custom_objects=custom_objects)
        if config.get("task_loss") is not None and not isinstance(config["task_loss"], str):
            config["task_loss"] = serialization_lib.deserialize_keras_object(
                config["task_loss"], custom_objects=custom_objects)
        config["feature_distillation"] = [
            serialization_lib.deserialize_keras_object(f, custom_objects=custom_objects)
            for f in config.get("feature_distillation", [])]
        return cls(**config)
