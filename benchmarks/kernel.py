"""Benchmark: forward + gradient of the batch-mean, T^2-scaled softmax KL.

Compares, in one run and on the same inputs, tfkd's C++ kernel (through its
TensorFlow op and through its raw NumPy entry), TensorFlow's own paths
(composite ops, softmax_cross_entropy_with_logits, XLA) and PyTorch when it
is importable, and the floor of this machine:

    floor = max(bytes moved / memory bandwidth, exponentials * exp time / cores)

with the bandwidth (NumPy copies on all cores at once) and the SIMD exp time
(NumPy's float32 exp, one core) measured here. Every TF path, tfkd's
included, runs as a ``tf.function`` step (loss and gradient); "+ XLA" rows
compile that whole step with ``jit_compile=True``, where tfkd's "auto" uses
TensorFlow ops, so "tfkd auto + XLA" compares with "TF + XLA" and "tfkd
auto" with the TF rows without XLA.

Calls are made in 30 interleaved turns of at least 5 calls each. The table
gives each alternative's median in its least disturbed turn (the JSON also
has the median over all turns). Each ratio is taken turn by turn, between
calls made within the same second or so, and the median over the turns is
shown: on a noisy, shared machine the ratios hold far better than the times.

Usage:
    python benchmarks/kernel.py [--repeats 30] [--out results/kernel.json]
    python benchmarks/kernel.py --smoke    # seconds: one small size, few turns; a check only
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# libgomp (PyTorch's OpenMP) lets idle workers spin for GOMP_SPINCOUNT (300k pause
# loops, ~10 ms on recent Intel cores) after every parallel region: on a small
# machine they would take the cores from whatever is timed next. Idle threads
# sleep instead, as in any process that runs one library at a time.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tfkd.ops  # noqa: E402

SIZES = [(256, 4), (4096, 18), (65536, 18), (16384, 256)]
TEMPERATURE = 2.0


def interleaved_ms(fns: dict, repeats: int, blocks: int = 30,
                   min_total_s: float = 0.5) -> dict:
    """Milliseconds per call of each function, turn by turn.

    The calls run in `blocks` turns, each function a run of consecutive calls
    per turn, in a new random order each turn, so a change in machine load
    touches all alike, and one library's worker threads (which spin for a
    while after a call) slow each of the others in some turns only. At least
    `repeats` calls each, more for fast calls (about `min_total_s` of calls
    per function).

    Returns:
        For each function, the median of its calls in each turn (a list, one
        per turn, in turn order).
    """
    for fn in fns.values():  # warm up / trace
        fn()
        fn()
    slowest = max(_time(fn) for fn in fns.values())
    calls = int(min(2000, max(repeats, min_total_s / max(slowest, 1e-6))))
    per_block = max(5, calls // blocks)  # the median of 5 shrugs off a late thread wake-up
    turns = {name: [] for name in fns}
    order = list(fns)
    rng = random.Random(0)
    for _ in range(blocks):
        rng.shuffle(order)  # who runs after whom changes: spinning threads hit all alike
        for name in order:
            fn = fns[name]
            fn()  # the first call after another library's is not counted
            turns[name].append(1e3 * statistics.median(_time(fn) for _ in range(per_block)))
    return turns


def paired_ratio(turns: dict, slower: list, faster: str) -> float:
    """How many times faster `faster` is than the fastest of `slower`.

    Compared turn by turn (the same minute of the same machine) and the
    median taken over the turns: a noisy, shared machine moves both sides of
    each ratio together, so it disturbs the ratio far less than the times.
    """
    return statistics.median(min(turns[name][k] for name in slower) / turns[faster][k]
                             for k in range(len(turns[faster])))


def tf_loss_and_grad(kl_fn, jit_compile=False):
    """A step computing the loss T^2 mean(kl_fn(t, s)) and its gradient."""
    return loss_and_grad(lambda t, s: TEMPERATURE**2 * tf.reduce_mean(kl_fn(t, s)), jit_compile)


def loss_and_grad(loss_fn, jit_compile=False):
    @tf.function(jit_compile=jit_compile)
    def step(t, s):
        with tf.GradientTape() as tape:
            tape.watch(s)
            loss = loss_fn(t, s)
        return loss, tape.gradient(loss, s)

    return step


def kl_composite(t, s):
    log_p = tf.nn.log_softmax(t / TEMPERATURE)
    log_q = tf.nn.log_softmax(s / TEMPERATURE)
    return tf.reduce_sum(tf.exp(log_p) * (log_p - log_q), axis=-1)


def kl_xent(t, s):
    # KL(p || q) = H(p, q) - H(p)
    p = tf.nn.softmax(t / TEMPERATURE)
    entropy = -tf.reduce_sum(p * tf.nn.log_softmax(t / TEMPERATURE), axis=-1)
    return tf.nn.softmax_cross_entropy_with_logits(labels=p, logits=s / TEMPERATURE) - entropy


def tfkd_op(backend):
    return lambda t, s: tfkd.ops.softmax_kl(t, s, TEMPERATURE, backend=backend)


def tfkd_fused_mean(t, s):
    """The whole loss in tfkd's op: each gradient row scaled by T^2 / n in the kernel's pass."""
    return tfkd.ops.softmax_kl_mean(t, s, TEMPERATURE, scale=TEMPERATURE**2, backend="cpp")


def torch_step():
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        return None
    torch.set_num_threads(os.cpu_count() or 1)

    def run(t_np, s_np):
        t = torch.from_numpy(t_np)
        s = torch.from_numpy(s_np).requires_grad_(True)

        def step():
            s.grad = None
            loss = F.kl_div(F.log_softmax(s / TEMPERATURE, -1), F.log_softmax(t / TEMPERATURE, -1),
                            log_target=True, reduction="batchmean") * TEMPERATURE**2
            loss.backward()
            return s.grad

        return step

    return run


def measure_floor_inputs(cores, mebibytes=256, copies=20):
    """Memory bandwidth (bytes/s; one NumPy copy per core, at once) and ns per exp."""
    big = np.ones(mebibytes * 2**18, dtype=np.float32)  # 256 MiB: well past the caches
    out = np.empty_like(big)
    slices = [slice(k * big.size // cores, (k + 1) * big.size // cores) for k in range(cores)]
    with ThreadPoolExecutor(cores) as pool:  # np.copyto releases the GIL
        def copy():
            list(pool.map(lambda part: np.copyto(out[part], big[part]), slices))

        copy()
        copy_s = min(_time(copy) for _ in range(copies))  # the best: the machine's, not its load's
    bandwidth = 2 * big.nbytes / copy_s  # read + write
    x = -np.random.default_rng(0).random(2**20, dtype=np.float32) * 10
    y = np.empty_like(x)
    exp_s = min(_time(lambda: np.exp(x, out=y)) for _ in range(max(5, copies)))
    return bandwidth, 1e9 * exp_s / x.size


def _time(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--out", type=Path, default=Path("results/kernel.json"))
    parser.add_argument("--smoke", action="store_true",
                        help="seconds: one small size, 3 turns, no PyTorch, a small bandwidth "
                             "probe (into a temporary file unless --out is given); a check only")
    args = parser.parse_args(argv)
    sizes, blocks, min_total_s, floor_probe = SIZES, 30, 0.5, {}
    if args.smoke:
        sizes, blocks, min_total_s = [(256, 4)], 3, 0.01
        args.repeats = min(args.repeats, 5)
        floor_probe = {"mebibytes": 16, "copies": 3}
        if "--out" not in (sys.argv[1:] if argv is None else argv):
            args.out = Path(tempfile.mkdtemp(prefix="tfkd-kernel-smoke-")) / "kernel.json"

    cores = os.cpu_count() or 1
    bandwidth, exp_ns = measure_floor_inputs(cores, **floor_probe)
    info = tfkd.ops.kernel_info()
    print(f"kernel: {info}  cores: {cores}  memory bandwidth: {bandwidth / 1e9:.1f} GB/s  "
          f"NumPy float32 exp: {exp_ns:.2f} ns")

    tf_paths = {
        "TF composite": tf_loss_and_grad(kl_composite),
        "TF softmax_xent": tf_loss_and_grad(kl_xent),
        "TF + XLA": tf_loss_and_grad(kl_composite, jit_compile=True),
    }
    tfkd_paths = {
        "tfkd cpp (TF op)": tf_loss_and_grad(tfkd_op("cpp")),
        "tfkd cpp fused mean": loss_and_grad(tfkd_fused_mean),
        "tfkd auto": tf_loss_and_grad(tfkd_op("auto")),
        "tfkd auto + XLA": tf_loss_and_grad(tfkd_op("auto"), jit_compile=True),
    }
    torch_run = None if args.smoke else torch_step()
    rng = np.random.default_rng(0)
    rows = []
    for n, a in sizes:
        t_np = (3 * rng.standard_normal((n, a))).astype(np.float32)
        s_np = (3 * rng.standard_normal((n, a))).astype(np.float32)
        t, s = tf.constant(t_np), tf.constant(s_np)
        result = {"batch": n, "actions": a}
        # Eager calls of a tf.function run synchronously on the CPU; only the
        # scalar loss is fetched, as in training (the gradient stays a tensor
        # for the optimizer).
        calls = {name: (lambda step=step: step(t, s)[0].numpy())
                 for name, step in {**tf_paths, **tfkd_paths}.items()}
        calls["tfkd raw (NumPy)"] = lambda: tfkd.ops.softmax_kl_numpy(t_np, s_np, TEMPERATURE)
        if torch_run is not None:
            calls["PyTorch"] = torch_run(t_np, s_np)
        turns = interleaved_ms(calls, args.repeats, blocks=blocks, min_total_s=min_total_s)
        result.update({name: min(ms) for name, ms in turns.items()})
        result["median over all turns"] = {name: statistics.median(ms)
                                           for name, ms in turns.items()}
        bytes_moved = 3 * n * a * 4  # read t and s, write the gradient
        result["floor"] = 1e3 * max(bytes_moved / bandwidth, 2 * n * a * exp_ns * 1e-9 / cores)
        result["cpp op speed-up vs best TF"] = paired_ratio(turns, list(tf_paths),
                                                            "tfkd cpp (TF op)")
        result["fused mean vs best TF"] = paired_ratio(turns, list(tf_paths),
                                                       "tfkd cpp fused mean")
        result["auto vs TF composite"] = paired_ratio(turns, ["TF composite"], "tfkd auto")
        result["auto + XLA vs TF + XLA"] = paired_ratio(turns, ["TF + XLA"], "tfkd auto + XLA")
        result["raw / floor"] = result["tfkd raw (NumPy)"] / result["floor"]
        rows.append(result)
        print(f"  {n} x {a} done", flush=True)

    columns = [k for k in rows[0] if k not in ("batch", "actions", "median over all turns")]
    header = "| batch x actions | " + " | ".join(columns) + " |"
    print("\nmilliseconds (median of the least disturbed turn) and ratios (median over turns)\n")
    print(header)
    print("|" + "---|" * (len(columns) + 1))
    for r in rows:
        cells = [f"{r[c]:.3f}" if "floor" == c or "ms" in c or c not in r else
                 (f"{r[c]:.2f}x" if "speed-up" in c or "/" in c or " vs " in c else f"{r[c]:.3f}") for c in columns]
        print(f"| {r['batch']} x {r['actions']} | " + " | ".join(cells) + " |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {"kernel": info, "cores": cores, "bandwidth_GBps": bandwidth / 1e9,
               "exp_ns": exp_ns, "temperature": TEMPERATURE, "unit": "ms", "rows": rows}
    args.out.write_text(json.dumps(payload, indent=2))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
