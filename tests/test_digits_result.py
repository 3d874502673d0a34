"""The classic result of Hinton et al. (2015), reproduced by the example."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

EXAMPLE = pathlib.Path(__file__).parents[1] / "examples" / "digits_distillation.py"


def test_example_runs_on_a_tiny_budget(tmp_path):
    run = subprocess.run([sys.executable, str(EXAMPLE), "--out", str(tmp_path / "d.json"),
                          "--figure", str(tmp_path / "d.png")], capture_output=True, text=True,
                         timeout=600, env={**os.environ, "TFKD_EXAMPLE_TINY": "1",
                                           "TF_CPP_MIN_LOG_LEVEL": "2", "MPLBACKEND": "Agg"})
    assert run.returncode == 0, run.stderr[-3000:]
    assert "| mean ± std |" in run.stdout and (tmp_path / "d.png").is_file()
    assert len(json.loads((tmp_path / "d.json").read_text())["runs"]) == 1


@pytest.mark.slow
def test_distilled_student_beats_labels_only_student_on_digits(tmp_path):
    out = tmp_path / "digits.json"
    run = subprocess.run([sys.executable, str(EXAMPLE), "--seeds", "0", "1", "2", "--out",
                          str(out), "--figure", str(tmp_path / "digits.png")],
                         capture_output=True, text=True, timeout=1800,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(out.read_text())
    for r in result["runs"]:
        assert 10 * r["student_params"] <= r["teacher_params"]
    summary = result["summary"]
    assert summary["distilled_accuracy"]["mean"] > summary["labels_only_accuracy"]["mean"]
    assert summary["teacher_accuracy"]["mean"] > summary["distilled_accuracy"]["mean"] - 0.01
