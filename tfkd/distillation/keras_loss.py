"""tfkd's logits losses inside Keras' own ``keras.distillation.Distiller``."""

import keras

from tfkd import losses as tfkd_losses

__all__ = ["KerasDistillationLoss"]


@keras.saving.register_keras_serializable(package="tfkd")
class KerasDistillationLoss(keras.distillation.DistillationLoss):
    """Adapts a tfkd loss to ``keras.distillation.DistillationLoss``.

    ``keras.distillation.LogitsDistillation(temperature=T)`` with its default
    ``loss="kl_divergence"`` computes the KL on raw logits (Keras 3.15); this
    adapter hands the logits to a tfkd loss, which applies the softmax and
    temperature itself:

        keras.distillation.Distiller(
            teacher, student,
            distillation_losses=KerasDistillationLoss(SoftTargetKL(temperature=4.0)))

    Args:
        loss: a tfkd loss object or name (see ``tfkd.losses.get``); default
            ``SoftTargetKL()``.
    """

    def __init__(self, loss=None):
        self.loss = tfkd_losses.get(loss)

    def compute_loss(self, teacher_outputs, student_outputs, **kwargs):
        """Batch mean of the tfkd loss: a scalar."""
        student_outputs = keras.ops.cast(student_outputs, "float32")
        teacher_outputs = keras.ops.cast(teacher_outputs, "float32")
        return keras.ops.mean(self.loss.call(teacher_outputs, student_outputs))

    def get_config(self):
        return {"loss": keras.saving.serialize_keras_object(self.loss)}

    @classmethod
    def from_config(cls, config):
        return cls(keras.saving.deserialize_keras_object(config["loss"]))
