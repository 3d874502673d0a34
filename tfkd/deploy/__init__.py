"""Deployment of a distilled student: export, quantisation, pruning and serving.

An export folder (written by ``tfkd export`` / ``tfkd.deploy.export``)::

    DIR/
      export.json                 what was exported: env_id, observation_shape,
                                  observation_dtype, num_actions, the artefacts
      saved_model/<version>/      SavedModel in TensorFlow Serving's layout;
                                  signature "serving_default":
                                  observations float32 [batch, *obs] ->
                                  {"action": int64 [batch], "logits": float32 [batch, A]}
      student.keras               the float student (Keras 3)
      student.tflite              TFLite, float32
      student-int8.tflite         TFLite, full-integer int8 (weights and activations)
      tf_agents_policy/           the student as a TF-Agents policy (PolicySaver)
      student-<variant>{.keras,.tflite,-int8.tflite}
                                  further students (--qat: "qat", --prune: "pruned")
      report.json                 size, latency, return and agreement of each artefact

No artefact needs tfkd or its custom op to load. :mod:`tfkd.deploy.runtime`
loads any of them behind one call, ``observations -> (actions, logits)``,
for the report and the server.
"""

__all__ = ["export"]


def __getattr__(name: str):
    # Lazy: the server imports tfkd.deploy.runtime, which must not load TensorFlow.
    if name == "export":
        from tfkd.deploy.exporter import export

        return export
    raise AttributeError(f"module 'tfkd.deploy' has no attribute {name!r}")
