"""tfkd.Distiller under tf.distribute: MirroredStrategy on two logical CPUs,
and MultiWorkerMirroredStrategy with two worker processes on loopback.

TensorFlow's devices and cluster are fixed when it first starts, so each run
is a subprocess."""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np

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


# ------------------------------------------------- MultiWorkerMirroredStrategy

# One worker of the cluster in TF_CONFIG (set by the test, as a launcher
# would). Every worker reads the same arrays and trains from the same initial
# weights on three inputs:
#   same_data:     the same dataset on every worker, batched by the global
#                  batch, auto-sharded by DATA: each worker takes its part of
#                  every global batch (the chief alone checkpoints this run);
#   from_function: each worker its own shard (every 2nd example), batched by
#                  the per-worker batch, through distribute_datasets_from_function;
#   shard_off:     that shard passed to fit as a plain dataset with
#                  auto-sharding OFF, the pitfall docs/scaling.md warns of;
# and reports which examples of a shuffled dataset it gets.
WORKER = textwrap.dedent("""
    import json
    import os
    import sys
    import numpy as np
    import tensorflow as tf

    strategy = tf.distribute.MultiWorkerMirroredStrategy()  # reads TF_CONFIG
    import keras
    import tfkd

    arrays, out, epochs = sys.argv[1], sys.argv[2], int(sys.argv[3])
    task = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
    d = np.load(arrays)
    global_batch = int(d["global_batch"])
    examples = tf.data.Dataset.from_tensor_slices(
        (d["x"], {"teacher_outputs": d["teacher"], "labels": d["labels"]}, d["weights"]))

    def distiller():
        with strategy.scope():
            student = tfkd.models.build_mlp((6,), 3, hidden_units=(8,))
            student.set_weights([d["w1"], d["b1"], d["w2"], d["b2"]])
            model = tfkd.Distiller(student, alpha=0.5, temperature=2.0)
            model.compile(keras.optimizers.SGD(float(d["learning_rate"])))
        return model

    def auto_shard(dataset, policy):
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = policy
        return dataset.with_options(options)

    def own_shard(context):
        return examples.shard(context.num_input_pipelines, context.input_pipeline_id).batch(
            context.get_per_replica_batch_size(global_batch))

    Policy = tf.data.experimental.AutoShardPolicy
    same_data = auto_shard(examples.batch(global_batch), Policy.DATA)
    model = distiller()
    checkpoint = os.path.join(out, "distiller.keras")
    callbacks = [keras.callbacks.ModelCheckpoint(checkpoint)] if task == 0 else []
    history = model.fit(same_data, epochs=epochs, verbose=0, callbacks=callbacks).history
    result = {"replicas": strategy.num_replicas_in_sync, "history": history,
              "weights": [w.numpy().tolist() for w in model.student.weights],
              "evaluate": model.evaluate(same_data, verbose=0, return_dict=True)}
    if task == 0:
        saved = keras.saving.load_model(checkpoint).student.weights
        result["checkpoint"] = [w.numpy().tolist() for w in saved]
    for name, data in [
            ("from_function", strategy.distribute_datasets_from_function(own_shard)),
            ("shard_off", auto_shard(examples.shard(2, task).batch(global_batch // 2),
                                     Policy.OFF))]:
        model = distiller()
        model.fit(data, epochs=epochs, verbose=0)
        result[name] = [w.numpy().tolist() for w in model.student.weights]
    # The examples each worker gets of each global batch of a dataset
    # shuffled with a seed, reshuffled every epoch, over two epochs.
    ids = tf.data.Dataset.range(len(d["x"])).shuffle(len(d["x"]), seed=0).batch(global_batch)
    result["shuffled"] = [
        [strategy.experimental_local_results(batch)[0].numpy().tolist()
         for batch in strategy.experimental_distribute_dataset(auto_shard(ids, Policy.DATA))]
        for epoch in range(2)]
    print("RESULT" + json.dumps(result))
""")

GLOBAL_BATCH, LEARNING_RATE, EPOCHS, ALPHA, TEMPERATURE = 32, 0.5, 3, 0.5, 2.0
COLUMNS = ("x", "teacher", "labels", "weights")


def _arrays(n=64):
    rng = np.random.default_rng(0)
    return {"x": rng.normal(size=(n, 6)).astype("float32"),
            "teacher": (3 * rng.normal(size=(n, 3))).astype("float32"),
            "labels": rng.integers(0, 3, size=n).astype("int32"),
            "weights": rng.uniform(0.5, 1.5, size=n).astype("float32"),
            "w1": (rng.normal(size=(6, 8)) / np.sqrt(6)).astype("float32"),
            "b1": np.zeros(8, "float32"),
            "w2": (rng.normal(size=(8, 3)) / np.sqrt(8)).astype("float32"),
            "b2": np.zeros(3, "float32"),
            "global_batch": GLOBAL_BATCH, "learning_rate": LEARNING_RATE}


def _log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def _batch_loss(params, x, t, y, w):
    """float64 Distiller loss of one batch and its gradient by hand.

    loss = sum_i w_i [(1 - a) T^2 KL(softmax(t_i/T) || softmax(s_i/T)) + a CE(y_i, s_i)] / N
    for the student s = relu(x W1 + b1) W2 + b2.
    """
    w1, b1, w2, b2 = params
    pre = x @ w1 + b1
    h = np.maximum(pre, 0.0)
    s = h @ w2 + b2
    log_p, log_q, log_s = _log_softmax(t / TEMPERATURE), _log_softmax(s / TEMPERATURE), \
        _log_softmax(s)
    kl = TEMPERATURE ** 2 * np.sum(np.exp(log_p) * (log_p - log_q), -1)
    ce = -log_s[np.arange(len(y)), y]
    n = len(x)
    loss = np.sum(w * ((1 - ALPHA) * kl + ALPHA * ce)) / n
    ds = w[:, None] * ((1 - ALPHA) * TEMPERATURE * (np.exp(log_q) - np.exp(log_p))
                       + ALPHA * (np.exp(log_s) - np.eye(s.shape[1])[y])) / n
    dh = (ds @ w2.T) * (pre > 0)
    return loss, [x.T @ dh, dh.sum(0), h.T @ ds, ds.sum(0)]


def _single_process_sgd(arrays, batch, learning_rate, epochs):
    """The weights and per-epoch mean losses of plain SGD on one process, in float64."""
    params = [arrays[k].astype(np.float64) for k in ("w1", "b1", "w2", "b2")]
    columns = [arrays[k].astype(np.float64) for k in ("x", "teacher")] + [
        arrays["labels"], arrays["weights"].astype(np.float64)]
    losses = []
    for _ in range(epochs):
        epoch = []
        for start in range(0, len(arrays["x"]), batch):
            loss, grads = _batch_loss(params, *(c[start:start + batch] for c in columns))
            epoch.append(loss)
            params = [p - learning_rate * g for p, g in zip(params, grads)]
        losses.append(float(np.mean(epoch)))
    final_loss = float(np.mean([_batch_loss(params, *(c[s:s + batch] for c in columns))[0]
                                for s in range(0, len(arrays["x"]), batch)]))
    return params, losses, final_loss


def _max_diff(a, b):
    return max(float(np.abs(np.asarray(x, np.float64) - y).max()) for x, y in zip(a, b))


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _run_cluster(script, args, logs, workers=2, timeout=240):
    """Runs ``script args`` as each worker of a cluster on loopback; their stdouts.

    Each worker gets its own TF_CONFIG, as a launcher sets it on each machine.
    A worker blocks while a peer is missing, so the first failure, or the
    deadline, kills them all.
    """
    cluster = {"worker": [f"127.0.0.1:{port}" for port in _free_ports(workers)]}
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2",
           "no_proxy": "127.0.0.1,localhost", "NO_PROXY": "127.0.0.1,localhost"}
    processes = []
    try:
        for index in range(workers):
            config = {"cluster": cluster, "task": {"type": "worker", "index": index}}
            with open(logs / f"{index}.out", "w") as out, open(logs / f"{index}.err", "w") as err:
                processes.append(subprocess.Popen(
                    [sys.executable, "-c", script, *map(str, args)], stdout=out, stderr=err,
                    env={**env, "TF_CONFIG": json.dumps(config)}, start_new_session=True))
        deadline = time.monotonic() + timeout
        while any(p.poll() is None for p in processes):
            if any(p.poll() for p in processes) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    finally:
        for p in processes:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    report = "\n".join(f"worker {i}: exit {p.returncode}\n"
                       f"{(logs / f'{i}.err').read_text()[-3000:]}"
                       for i, p in enumerate(processes))
    assert all(p.returncode == 0 for p in processes), report
    return [(logs / f"{i}.out").read_text() for i in range(workers)]


def test_multi_worker_mirrored_strategy_matches_one_process(tmp_path):
    arrays = _arrays()
    np.savez(tmp_path / "arrays.npz", **arrays)
    (tmp_path / "out").mkdir()
    (tmp_path / "logs").mkdir()
    stdouts = _run_cluster(WORKER, [tmp_path / "arrays.npz", tmp_path / "out", EPOCHS],
                           tmp_path / "logs")
    chief, other = (json.loads(s.split("RESULT")[-1]) for s in stdouts)
    assert chief["replicas"] == other["replicas"] == 2

    # The all-reduce gives both workers the same summed gradient and they apply
    # the same update: the same weights to the bit, and the same logs.
    assert chief["weights"] == other["weights"]
    assert chief["history"] == other["history"]
    assert chief["evaluate"] == other["evaluate"]

    # Equal to plain SGD on one process over the same global batches.
    # float32 rounding (eps 6e-8) over six steps leaves about 1e-7 on weights
    # of scale 1 (measured 7e-8); the tolerance is 100 times that. What a
    # wrong reduction does (averaging over the worker's batch instead of the
    # global one: doubled steps; both workers taking whole global batches:
    # steps of 64 examples) moves them by more than 0.1, checked here to be
    # over 1000 times the tolerance.
    params, losses, final_loss = _single_process_sgd(arrays, GLOBAL_BATCH, LEARNING_RATE,
                                                     EPOCHS)
    tolerance = 1e-5 * max(1.0, max(float(np.abs(p).max()) for p in params))
    for wrong in (_single_process_sgd(arrays, GLOBAL_BATCH, 2 * LEARNING_RATE, EPOCHS),
                  _single_process_sgd(arrays, 2 * GLOBAL_BATCH, LEARNING_RATE, EPOCHS)):
        assert _max_diff(wrong[0], params) > 1e3 * tolerance
    assert _max_diff(chief["weights"], params) < tolerance
    assert _max_diff(chief["from_function"], params) < tolerance
    assert chief["from_function"] == other["from_function"]

    # The logged loss is the global batch's (the replicas' means, averaged),
    # finite and falling; evaluate's is the final weights' on all the data.
    logged = chief["history"]["loss"]
    assert np.allclose(logged, losses, rtol=1e-5, atol=0)
    assert np.all(np.isfinite(logged)) and np.all(np.diff(logged) < 0)
    assert abs(chief["evaluate"]["loss"] - final_loss) < 1e-5 * final_loss

    # The chief alone saved the checkpoint, and it holds the trained weights.
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["distiller.keras"]
    assert "checkpoint" in chief and "checkpoint" not in other
    assert chief["checkpoint"] == chief["weights"]

    # Shuffled with the same seed on every worker, DATA sharding still cuts
    # each global batch into disjoint parts: every example once per epoch.
    for epoch in range(2):
        steps = [a + b for a, b in zip(chief["shuffled"][epoch], other["shuffled"][epoch])]
        assert [len(step) for step in steps] == [GLOBAL_BATCH] * 2
        assert sorted(i for step in steps for i in step) == list(range(len(arrays["x"])))
    assert chief["shuffled"][0] != chief["shuffled"][1]

    # A worker's shard given to fit with auto-sharding OFF: fit still splits
    # each of its batches into num_replicas_in_sync pieces and ends the epoch
    # after the dataset's own count of batches, so each epoch trains on the
    # first half of the data (two steps of 16) and never sees the rest.
    half, _, _ = _single_process_sgd({**arrays, **{k: arrays[k][:32] for k in COLUMNS}},
                                     GLOBAL_BATCH // 2, LEARNING_RATE, EPOCHS)
    assert _max_diff(chief["shard_off"], half) < tolerance, "docs/scaling.md's warning is stale"
