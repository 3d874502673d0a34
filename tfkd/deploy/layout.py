"""The names inside an export folder (described in :mod:`tfkd.deploy`); no imports, so a
server can read them without loading TensorFlow."""

EXPORT_FILE = "export.json"
REPORT_FILE = "report.json"
SAVED_MODEL_DIR = "saved_model"
SAVED_MODEL_VERSION = 1
KERAS_FILE = "student.keras"
TFLITE_FILE = "student.tflite"
TFLITE_INT8_FILE = "student-int8.tflite"
TF_AGENTS_POLICY_DIR = "tf_agents_policy"
#: Further students made by compression beyond distillation (quantisation-aware
#: distillation, pruning), named ``student-<variant>`` with the same three suffixes.
VARIANT_FILES = ("student-{variant}.keras", "student-{variant}.tflite",
                 "student-{variant}-int8.tflite")

#: The four artefacts every export has, by format name (the names report.json uses).
ARTEFACTS = {
    "keras": KERAS_FILE,
    "savedmodel": f"{SAVED_MODEL_DIR}/{SAVED_MODEL_VERSION}",
    "tflite": TFLITE_FILE,
    "tflite-int8": TFLITE_INT8_FILE,
}
