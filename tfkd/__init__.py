"""tfkd: knowledge distillation for reinforcement learning in TensorFlow / Keras 3.

The public names load lazily (PEP 562), so ``import tfkd`` does not import
TensorFlow. That lets an entry point that tfkd owns — the ``tfkd`` command —
choose ``TF_USE_LEGACY_KERAS=1`` (Keras 2 for TF-Agents' ``tf.keras``) before
TensorFlow loads; ``import keras`` would fix the choice for the process.
"""

import importlib

_ATTRIBUTES = {
    "Distiller": "tfkd.distillation",
    "FeatureDistillation": "tfkd.distillation",
    "KerasDistillationLoss": "tfkd.distillation",
}
_SUBMODULES = ("losses", "models", "ops")

__all__ = [
    "Distiller",
    "FeatureDistillation",
    "KerasDistillationLoss",
    "losses",
    "models",
    "ops",
]


def __getattr__(name):
    if name in _ATTRIBUTES:
        value = getattr(importlib.import_module(_ATTRIBUTES[name]), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"tfkd.{name}")
    else:
        raise AttributeError(f"module 'tfkd' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
