"""Knowledge distillation as a ``keras.Model``.

    distiller.py      tfkd.Distiller, on Keras' compute_loss / compute_metrics hooks
    feature.py        tfkd.FeatureDistillation and its extractor models
    teacher_cache.py  the teacher-output cache of fit on arrays
    metrics.py        agreement, entropies and the batch-weighted means
    keras_loss.py     tfkd.KerasDistillationLoss, for keras.distillation.Distiller
    ensemble.py       several teachers of one task as one (mean policy, most confident)
"""

from tfkd.distillation.distiller import Distiller
from tfkd.distillation.ensemble import TeacherEnsemble
from tfkd.distillation.feature import FeatureDistillation
from tfkd.distillation.keras_loss import KerasDistillationLoss

__all__ = ["Distiller", "FeatureDistillation", "KerasDistillationLoss", "TeacherEnsemble"]
