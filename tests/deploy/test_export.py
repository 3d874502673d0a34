"""``tfkd export``: a CartPole student distilled from a linear controller, exported by the
command as a user runs it, every artefact loaded again without tfkd."""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from tfkd import cli, rl
from tfkd.cli import output
from tfkd.deploy import layout, runtime
from tfkd.deploy.report import ENTRY_KEYS

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV = "CartPole-v1"
# Weights on (x, x_dot, theta, theta_dot): push right when the pole falls right.
CONTROLLER = np.array([0.1, 0.5, 1.0, 0.5], np.float32)


def _teacher() -> keras.Model:
    inputs = keras.Input((4,))
    layer = keras.layers.Dense(2, use_bias=False, name="logits")
    model = keras.Model(inputs, layer(inputs), name="linear_teacher")
    layer.set_weights([10.0 * np.stack([-CONTROLLER, CONTROLLER], axis=1)])
    return model


def _run_tfkd(*args, timeout=300):
    env = {key: value for key, value in os.environ.items()
           if key not in ("TF_CPP_MIN_LOG_LEVEL", "TF_USE_LEGACY_KERAS")}
    env["PYTHONPATH"] = REPO
    return subprocess.run([sys.executable, "-m", "tfkd.cli", *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=timeout, cwd=REPO)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A 16-unit student distilled from the controller, exported by ``tfkd export``."""
    folder = tmp_path_factory.mktemp("export")
    teacher = _teacher()
    rl.seed_everything(0)
    student = keras.Sequential([keras.Input((4,)), keras.layers.Dense(16, activation="relu"),
                                keras.layers.Dense(2)], name="student")
    rl.distill(teacher, student, rl.DistillConfig(
        env_id=ENV, total_env_steps=1_500, steps_per_round=500, train_steps_per_round=300,
        learning_rate=3e-3, eval_episodes=2, seed=0, progress=False))
    teacher.save(folder / "teacher.keras")
    student.save(folder / "student.keras")
    out = folder / "out"
    result = _run_tfkd("export", "--student", folder / "student.keras", "--env", ENV,
                       "--teacher", folder / "teacher.keras", "--out", out,
                       "--eval-episodes", 10, "--latency-repeats", 20, "--quiet")
    assert result.returncode == 0, result.stderr
    return {"folder": folder, "out": out, "student": student, "stdout": result.stdout}


def _real_observations(student, n=2_000):
    """CartPole states the student visits, on seeds apart from the held-out ones."""
    env = rl.make_vector_env(ENV, 4)
    try:
        collector = rl.RolloutCollector(env, student, seed=rl.selection_seeds(7, 4))
        return collector.collect(rl.EpsilonGreedyPolicy(rl.GreedyPolicy(student), 2, 0.1),
                                 n).observations.astype(np.float32)
    finally:
        env.close()


def test_report_has_the_fixed_keys_and_real_numbers(exported):
    with open(exported["out"] / layout.REPORT_FILE, encoding="utf-8") as file:
        report = json.load(file, parse_constant=lambda c: pytest.fail(f"not strict JSON: {c}"))
    entries = {entry["format"]: entry for entry in report["formats"]}
    assert {"teacher", "keras", "savedmodel", "tflite", "tflite-int8"} <= set(entries)
    for name in ("keras", "savedmodel", "tflite", "tflite-int8"):
        entry = entries[name]
        assert set(ENTRY_KEYS) <= set(entry)
        assert entry["bytes"] > 0 and entry["latency_us_b1"] > 0 and entry["throughput_b256"] > 0
        low, high = entry["ci95"]
        assert low <= entry["mean_return"] <= high
        assert os.path.exists(exported["out"] / entry["path"])
    # The float artefacts are the same network: the same actions, the same episodes.
    for name in ("savedmodel", "tflite"):
        assert entries[name]["agreement"] == 1.0
        assert entries[name]["mean_return"] == entries["keras"]["mean_return"]
    assert entries["teacher"]["normalized_score"] == 1.0
    assert entries["keras"]["normalized_score"] > 0.9  # the student balances like the teacher
    # (At 16 units int8 is no smaller: quantisation parameters outweigh 100 weights.)
    assert all(layer["weights"] == "int8" for layer in entries["tflite-int8"]["layers"])
    assert "tflite-int8" in exported["stdout"] and "µs/action" in exported["stdout"]
    with open(exported["out"] / layout.EXPORT_FILE, encoding="utf-8") as file:
        description = json.load(file)
    assert description["observation_shape"] == [4] and description["num_actions"] == 2


# Runs in a bare interpreter: any import of tfkd fails, so a passing run proves
# that no artefact needs it (nor its custom op).
_WITHOUT_TFKD = textwrap.dedent("""
    import sys

    class NoTfkd:
        def find_spec(self, name, path=None, target=None):
            if name == "tfkd" or name.startswith("tfkd."):
                raise ImportError("tfkd must not be needed")

    sys.meta_path.insert(0, NoTfkd())
    import numpy as np
    import tensorflow as tf
    import tensorflow_probability  # registers the TF-Agents policy's distribution type
    from ai_edge_litert.interpreter import Interpreter

    out, observations = sys.argv[1], np.load(sys.argv[2])
    results = {}
    signature = tf.saved_model.load(out + "/saved_model/1").signatures["serving_default"]
    served = signature(observations=tf.constant(observations))
    results["savedmodel_logits"] = served["logits"].numpy()
    results["savedmodel_action"] = served["action"].numpy()
    for name in ("student.tflite", "student-int8.tflite"):
        interpreter = Interpreter(model_path=out + "/" + name)
        detail = interpreter.get_input_details()[0]
        interpreter.resize_tensor_input(detail["index"], observations.shape)
        interpreter.allocate_tensors()
        interpreter.set_tensor(detail["index"], observations)
        interpreter.invoke()
        results[name] = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
        weights = [d for d in interpreter.get_tensor_details()
                   if "MatMul" in d["name"] and len(d["shape"]) == 2 and d["shape"][0] != 1]
        results[name + "_weight_dtypes"] = np.array([np.dtype(d["dtype"]).name for d in weights])
    policy = tf.saved_model.load(out + "/tf_agents_policy")
    n = len(observations)
    step = dict(step_type=tf.zeros(n, tf.int32), reward=tf.zeros(n), discount=tf.ones(n),
                observation=tf.constant(observations))
    results["policy_action"] = policy.signatures["action"](
        **{"0/" + key: value for key, value in step.items()})["action"].numpy()
    assert not any(name.split(".")[0] == "tfkd" for name in sys.modules)
    np.savez(sys.argv[3], **results)
""")


def test_every_artefact_loads_without_tfkd_and_matches_the_student(exported, tmp_path):
    student = exported["student"]
    real = _real_observations(student)
    rng = np.random.default_rng(0)
    random = rng.normal(size=(256, 4)).astype(np.float32)
    observations = np.concatenate([random, real])
    np.save(tmp_path / "observations.npy", observations)
    script = tmp_path / "load.py"
    script.write_text(_WITHOUT_TFKD)
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    result = subprocess.run([sys.executable, str(script), str(exported["out"]),
                             str(tmp_path / "observations.npy"), str(tmp_path / "out.npz")],
                            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = np.load(tmp_path / "out.npz")
    expected = np.asarray(student(observations), dtype=np.float64)
    actions = expected.argmax(axis=1)
    np.testing.assert_allclose(loaded["savedmodel_logits"], expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(loaded["savedmodel_action"], actions)
    np.testing.assert_allclose(loaded["student.tflite"], expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(loaded["policy_action"], actions)
    assert list(loaded["student-int8.tflite_weight_dtypes"]) == ["int8"] * 2
    assert list(loaded["student.tflite_weight_dtypes"]) == ["float32"] * 2
    int8_actions = loaded["student-int8.tflite"][len(random):].argmax(axis=1)
    assert np.mean(int8_actions == actions[len(random):]) >= 0.95


def test_runtime_runs_each_artefact_like_the_student(exported):
    student, out = exported["student"], exported["out"]
    observations = _real_observations(student, 200)
    expected = np.asarray(student(observations))
    for name, relative in layout.ARTEFACTS.items():
        artefact = runtime.load(out / relative, name)
        actions, logits = artefact(observations)
        assert logits.shape == expected.shape and actions.dtype == np.int64
        if name != "tflite-int8":
            np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)


def _one_line_error(capsys, argv, message):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_bad_input_is_one_line(exported, tmp_path, capsys):
    folder = exported["folder"]
    base = ["export", "--env", ENV, "--out", str(tmp_path / "out"), "--quiet"]
    _one_line_error(capsys, [*base, "--student", str(tmp_path / "missing.keras")],
                    "no such student model file")
    corrupt = tmp_path / "corrupt.keras"
    corrupt.write_bytes(b"not a zip archive")
    _one_line_error(capsys, [*base, "--student", str(corrupt)], "corrupt or not a Keras model")
    _one_line_error(capsys, ["export", "--env", "Acrobot-v1", "--out", str(tmp_path / "out"),
                             "--student", str(folder / "student.keras")],
                    "but Acrobot-v1 has observations (6,)")
    _one_line_error(capsys, [*base, "--student", str(folder / "student.keras"), "--qat"],
                    "give --teacher")


def test_a_failed_export_leaves_the_previous_one_whole(exported, tmp_path, capsys, monkeypatch):
    import shutil

    from tfkd.deploy import convert

    out = tmp_path / "out"
    shutil.copytree(exported["out"], out)
    before = sorted(os.listdir(out))
    report = (out / layout.REPORT_FILE).read_bytes()

    def fail(*args, **kwargs):
        raise ValueError("calibration failed on purpose")

    monkeypatch.setattr(convert, "tflite_int8", fail)
    _one_line_error(capsys, ["export", "--env", ENV, "--out", str(out), "--quiet",
                             "--student", str(exported["folder"] / "student.keras"),
                             "--no-tf-agents"], "calibration failed on purpose")
    assert sorted(os.listdir(out)) == before  # no staging folder left, nothing half-replaced
    assert (out / layout.REPORT_FILE).read_bytes() == report
    assert not any(name.startswith(output.STAGING_PREFIX) for name in os.listdir(out))
