"""tfkd.Distiller under tf.distribute.MirroredStrategy on two logical CPUs.

TensorFlow's devices are fixed when it first starts, so this runs in a
subprocess."""

import json
import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import json
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    import tfkd

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 6)).astype("float32")
    teacher_q = rng.normal(size=(64, 3)).astype("float32") * 3
    weights = rng.uniform(size=64).astype("float32")

    def one_epoch(strategy):
        with strategy.scope():
            keras.utils.set_random_seed(0)
            student = tfkd.models.build_mlp((6,), 3, hidden_units=(8,))
            distiller = tfkd.Distiller(student, distillation_loss="q_value_kl")
            distiller.compile(keras.optimizers.SGD(0.5))
        data = tf.data.Dataset.from_tensor_slices((x, teacher_q, weights)).batch(32)
        logs = distiller.fit(data, epochs=1, shuffle=False, verbose=0).history
        return [w.numpy().tolist() for w in student.weights], logs["loss"][0]

    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    single = tf.distribute.OneDeviceStrategy("/cpu:0")
    w2, loss2 = one_epoch(mirrored)
    w1, loss1 = one_epoch(single)
    print("RESULT" + json.dumps({"replicas": mirrored.num_replicas_in_sync,
                                 "max_diff": max(float(np.abs(np.subtract(a, b)).max())
                                                 for a, b in zip(w1, w2)),
                                 "scale": max(float(np.abs(a).max()) for a in w1),
                                 "loss1": loss1, "loss2": loss2}))
""")


def test_mirrored_strategy_matches_one_device():
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                         env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.split("RESULT")[-1])
    assert result["replicas"] == 2
    # The same two SGD steps on two replicas (loss / global batch) as on one.
    assert result["max_diff"] < 1e-5 * max(1.0, result["scale"])
    assert abs(result["loss1"] - result["loss2"]) < 1e-5 * max(1.0, abs(result["loss1"]))
