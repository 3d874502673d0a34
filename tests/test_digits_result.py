"""The classic result of Hinton et al. (2015), reproduced by the example.

Its smoke run is in tests/test_examples.py.
"""

import json
import os
import pathlib
import subprocess
import sys

import pytest

EXAMPLE = pathlib.Path(__file__).parents[1] / "examples" / "digits_distillation.py"


@pytest.mark.slow
def test_distilled_student_beats_labels_only_student_on_digits(tmp_path):
    run = subprocess.run([sys.executable, str(EXAMPLE), "--seed", "0", "--num-seeds", "3",
                          "--out", str(tmp_path)], capture_output=True, text=True, timeout=1800,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "MPLBACKEND": "Agg"})
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads((tmp_path / "results.json").read_text())
    for r in result["runs"]:
        assert 10 * r["student_params"] <= r["teacher_params"]
    summary = result["summary"]
    assert summary["distilled_accuracy"]["mean"] > summary["labels_only_accuracy"]["mean"]
    assert summary["teacher_accuracy"]["mean"] > summary["distilled_accuracy"]["mean"] - 0.01
