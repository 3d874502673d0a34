"""The Distiller's metrics: per-example statistics and their batch-weighted means."""

import keras
import tensorflow as tf

__all__ = ["Means", "batch_mean", "entropy", "label_metric", "mean_over_rows"]


class Means(keras.metrics.Metric):
    """Several batch-weighted means in one metric: two variable updates a step.

    ``result()`` is a dict ``{name: sum_b n_b v_b / sum_b n_b}`` over the
    batches ``b`` of ``n_b`` examples seen since the last reset.

    Args:
        names: the names of the means, in the order of ``update_state``'s values.
    """

    def __init__(self, names, **kwargs):
        super().__init__(**kwargs)
        self.names = list(names)
        self.total = self.add_variable(shape=(len(self.names),), initializer="zeros",
                                       name="total")
        self.count = self.add_variable(shape=(), initializer="zeros", name="count")

    def update_state(self, values, batch_size):
        batch_size = tf.cast(batch_size, self.total.dtype)
        self.total.assign_add(tf.cast(values, self.total.dtype) * batch_size)
        self.count.assign_add(batch_size)

    def result(self):
        means = tf.math.divide_no_nan(self.total, self.count)
        return {name: means[i] for i, name in enumerate(self.names)}

    def get_config(self):
        return {**super().get_config(), "names": self.names}


def mean_over_rows(values):
    """``[batch, ...]`` values averaged to ``[batch]`` (over each example's rows)."""
    if values.shape.rank > 1:
        values = tf.reduce_mean(values, axis=list(range(1, values.shape.rank)))
    return values


def batch_mean(values, sample_weight):
    """``mean_i w_i v_i`` over the last (batch) axis of ``values``; ``w = 1`` if None."""
    if sample_weight is not None:
        values = values * tf.cast(tf.reshape(sample_weight, [-1]), values.dtype)
    return tf.reduce_mean(values, axis=-1)


def entropy(logits):
    """``H(softmax(z)) = -sum_a p_a log p_a`` in nats, over the last axis."""
    log_p = tf.nn.log_softmax(logits, axis=-1)
    return -tf.reduce_sum(tf.exp(log_p) * log_p, axis=-1)


def label_metric(metric):
    """A metric object for ``Distiller.compile(metrics=[...])`` (labels vs student outputs).

    "accuracy" / "acc" is sparse categorical accuracy (class or action
    labels); other names go through ``keras.metrics.get``; objects are kept.
    """
    if metric in ("accuracy", "acc"):
        return keras.metrics.SparseCategoricalAccuracy(name="accuracy")
    if isinstance(metric, str):
        metric = keras.metrics.get(metric)
        if isinstance(metric, type):
            return metric()
        return keras.metrics.MeanMetricWrapper(metric, name=metric.__name__)
    return metric
