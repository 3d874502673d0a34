"""FitNets-style feature distillation: a student hidden layer, through a
learned projection, matched to a teacher hidden layer."""

import keras

from tfkd.losses import FEATURE_DISTANCES, feature_distance

__all__ = ["FeatureDistillation", "FeatureExtractors"]


@keras.saving.register_keras_serializable(package="tfkd")
class FeatureDistillation(keras.layers.Layer):
    """Distance between a teacher layer and a projected student layer.

        loss = weight * distance(teacher_layer(x), W · student_layer(x))

    ``W`` is a trainable linear map on the last axis (a 1x1 convolution for
    feature maps), as the "regressor" of Romero et al. (2015), "FitNets:
    Hints for Thin Deep Nets". Give it to ``tfkd.Distiller(...,
    feature_distillation=...)``, which finds the layers by name in the
    (functional) teacher and student and trains ``W`` with the student.

    Args:
        teacher_layer_name: name of a layer of the teacher model.
        student_layer_name: name of a layer of the student model.
        distance: "mse" (default), "l2" or "cosine"; see
            ``tfkd.losses.feature_distance``.
        weight: factor on this term inside the distillation loss.
    """

    def __init__(self, teacher_layer_name, student_layer_name, distance="mse", weight=1.0,
                 **kwargs):
        super().__init__(**kwargs)
        if distance not in FEATURE_DISTANCES:
            raise ValueError(f"distance must be one of {FEATURE_DISTANCES}, got {distance!r}")
        if not weight >= 0:
            raise ValueError(f"weight must be >= 0, got {weight!r}")
        self.teacher_layer_name = teacher_layer_name
        self.student_layer_name = student_layer_name
        self.distance = distance
        self.weight = float(weight)
        self.projection = None

    def build_for(self, teacher_shape, student_shape):
        """Creates the projection from the two layers' output shapes."""
        if len(teacher_shape) != len(student_shape) or tuple(teacher_shape[1:-1]) != tuple(
                student_shape[1:-1]):
            raise ValueError(
                f"feature distillation maps the last axis only: teacher layer "
                f"{self.teacher_layer_name!r} has shape {teacher_shape}, student layer "
                f"{self.student_layer_name!r} has shape {student_shape}")
        self.projection = keras.layers.Dense(teacher_shape[-1], use_bias=False,
                                             name="projection")
        self.projection.build(tuple(student_shape))
        self.built = True

    def call(self, teacher_features, student_features):
        """Per-example ``weight * distance``, shape ``[batch]``."""
        projected = keras.ops.cast(self.projection(student_features), "float32")
        teacher_features = keras.ops.cast(teacher_features, "float32")
        return self.weight * feature_distance(teacher_features, projected, self.distance)

    def get_config(self):
        return {**super().get_config(), "teacher_layer_name": self.teacher_layer_name,
                "student_layer_name": self.student_layer_name, "distance": self.distance,
                "weight": self.weight}


class FeatureExtractors:
    """One forward pass of teacher and student that also returns the named hidden layers.

    Two functional views, ``teacher`` and ``student``, each mapping
    observations to ``[outputs, feature_1, ..., feature_k]``; they share the
    models' layers (nothing is copied, and the weights are saved once, under
    the models). Building them builds each feature's projection.

    Args:
        features: ``FeatureDistillation`` layers.
        teacher, student: functional ``keras.Model`` s with one output.

    Raises:
        ValueError: a model that is not functional, or a layer name it lacks.
    """

    def __init__(self, features, teacher, student):
        self.features = list(features)
        for model, role in ((teacher, "teacher"), (student, "student")):
            if not isinstance(model, keras.Model) or not getattr(model, "inputs", None):
                raise ValueError(f"feature distillation needs a functional keras.Model as "
                                 f"{role}, got {type(model).__name__}")
        teacher_layers = [_layer(teacher, f.teacher_layer_name, "teacher") for f in self.features]
        student_layers = [_layer(student, f.student_layer_name, "student") for f in self.features]
        for feature, t_layer, s_layer in zip(self.features, teacher_layers, student_layers):
            if not feature.built:
                feature.build_for(t_layer.output.shape, s_layer.output.shape)
        self.teacher = keras.Model(teacher.inputs,
                                   [teacher.outputs[0]] + [l.output for l in teacher_layers])
        self.student = keras.Model(student.inputs,
                                   [student.outputs[0]] + [l.output for l in student_layers])

    def losses(self, teacher_features, student_features):
        """Each feature's per-example loss ``[batch]``; no gradient reaches the teacher."""
        return [feature(keras.ops.stop_gradient(t), s) for feature, t, s
                in zip(self.features, teacher_features, student_features)]


def _layer(model, name, role):
    try:
        return model.get_layer(name)
    except ValueError:
        raise ValueError(f"the {role} model {model.name!r} has no layer named {name!r}; "
                         f"its layers are {[l.name for l in model.layers]}") from None
