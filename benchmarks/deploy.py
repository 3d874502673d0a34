"""Benchmark: the per-action latency and throughput of every artefact of an export, side by side.

Reads an export folder written by ``tfkd export`` (its ``export.json`` and
``report.json``) and times, in the same run and in interleaved order, each
artefact in the runtime a user deploys it with (LiteRT for ``.tflite``, the
``serving_default`` signature for the SavedModel, Keras for ``.keras``) and
the teacher's Keras call, eager (``model(obs)``, as a user writes it) and
compiled (``tf.function``). Each run measures the median of ``--repeats``
calls at batch 1 and at batch 256 (``tfkd.deploy.report.speed``); the table
gives the median over ``--runs`` runs and their range, and each artefact's
batch-1 speed-up over the teacher's eager call, taken run by run. Returns,
scores and agreement are the export's own (``report.json``: held-out
episodes played through each artefact).

Usage:
    python benchmarks/deploy.py --export DIR --teacher TEACHER [--runs 5] [--repeats 1000]
    python benchmarks/deploy.py --smoke    # seconds: a tiny CartPole export, a check only
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile

import numpy as np

from tfkd import provenance


def _artefacts(folder: str) -> dict:
    from tfkd.deploy import runtime

    with open(os.path.join(folder, "export.json"), encoding="utf-8") as file:
        description = json.load(file)
    loaded = {}
    for name, relative in description["artefacts"].items():
        if name == "tf-agents-policy" or name.endswith("-keras") and name != "keras":
            continue
        fmt = "tflite-int8" if name.endswith("int8") else "tflite" if name.endswith("tflite") \
            else name
        loaded[name] = runtime.load(os.path.join(folder, relative), fmt)
    return description, loaded


def _teacher(path: str, env_id: str, description: dict) -> dict:
    from tfkd.cli.inputs import load_teacher
    from tfkd.deploy import runtime

    teacher, _ = load_teacher(path, env_id)
    shape, actions = tuple(description["observation_shape"]), description["num_actions"]
    return {"teacher (Keras eager)": runtime.from_model(teacher, shape, actions, path, eager=True),
            "teacher (Keras tf.function)": runtime.from_model(teacher, shape, actions, path)}


def _observations(env_id: str, n: int = 256) -> np.ndarray:
    from tfkd.rl import make_vector_env, selection_seeds

    env = make_vector_env(env_id, 8)
    observations, _ = env.reset(seed=selection_seeds(0, 8))
    rows, rng = [observations], np.random.default_rng(0)
    while sum(len(r) for r in rows) < n:
        observations, *_ = env.step(rng.integers(env.single_action_space.n, size=8))
        rows.append(observations)
    env.close()
    return np.concatenate(rows)[:n].astype(np.float32)


def run(folder: str, teacher_path: str | None, runs: int, repeats: int) -> dict:
    from tfkd.deploy.report import size_bytes, speed

    description, artefacts = _artefacts(folder)
    env_id = description["env_id"]
    if teacher_path:
        artefacts = {**_teacher(teacher_path, env_id, description), **artefacts}
    with open(os.path.join(folder, "report.json"), encoding="utf-8") as file:
        report = {entry["format"]: entry for entry in json.load(file)["formats"]}
    observations = _observations(env_id)
    timings = {name: {"latency_us_b1": [], "throughput_b256": []} for name in artefacts}
    for index in range(runs):
        order = list(artefacts) if index % 2 == 0 else list(reversed(artefacts))
        for name in order:
            latency, throughput = speed(artefacts[name], observations, repeats)
            timings[name]["latency_us_b1"].append(latency)
            timings[name]["throughput_b256"].append(throughput)
        print(f"run {index + 1}/{runs} done", flush=True)
    rows = []
    baseline = timings.get("teacher (Keras eager)")
    for name, artefact in artefacts.items():
        latencies = timings[name]["latency_us_b1"]
        entry = report.get(name, {})
        size = size_bytes(artefact.path) if os.path.exists(artefact.path) else (None, None)
        speedups = [t / l for t, l in zip(baseline["latency_us_b1"], latencies)] \
            if baseline else None
        rows.append({
            "artefact": name, "path": artefact.path, "bytes": size[0], "bytes_gzip": size[1],
            "latency_us_b1": _summary(latencies),
            "throughput_b256": _summary(timings[name]["throughput_b256"]),
            "speedup_vs_teacher_eager": _summary(speedups) if speedups else None,
            "normalized_score": entry.get("normalized_score"),
            "mean_return": entry.get("mean_return"), "ci95": entry.get("ci95"),
            "agreement": entry.get("agreement")})
    return {"env_id": env_id, "export": folder, "runs": runs, "repeats": repeats,
            "rows": rows, "versions": provenance.versions(("ai-edge-litert",))}


def _summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "runs": list(values)}


def table(result: dict) -> str:
    lines = [f"{result['env_id']}: median over {result['runs']} runs [min, max], each the median "
             f"of {result['repeats']} calls",
             "| artefact | bytes | gzip | µs/action (b1) | speed-up vs teacher eager | "
             "actions/s (b256) | return [95% CI] | score | agreement |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in result["rows"]:
        lat, thr, up = row["latency_us_b1"], row["throughput_b256"], \
            row["speedup_vs_teacher_eager"]
        speedup = "" if up is None else \
            f"{up['median']:,.0f}× [{up['min']:,.0f}, {up['max']:,.0f}]"
        ret = "" if row["mean_return"] is None else \
            f"{row['mean_return']:.1f} [{row['ci95'][0]:.1f}, {row['ci95'][1]:.1f}]"
        lines.append(
            f"| {row['artefact']} | {_n(row['bytes'])} | {_n(row['bytes_gzip'])} "
            f"| {lat['median']:.1f} [{lat['min']:.1f}, {lat['max']:.1f}] "
            f"| {speedup} "
            f"| {thr['median']:,.0f} [{thr['min']:,.0f}, {thr['max']:,.0f}] | {ret} "
            f"| {_f(row['normalized_score'])} | {_f(row['agreement'])} |")
    return "\n".join(lines)


def _n(value) -> str:
    return "" if value is None else f"{value:,}"


def _f(value) -> str:
    return "" if value is None else f"{value:.3f}"


def _smoke_export(folder: str) -> str:
    import keras

    import tfkd
    from tfkd import deploy, rl

    rl.seed_everything(0)
    teacher = tfkd.models.build_mlp((4,), 2, hidden_units=(16,), name="teacher")
    student = tfkd.models.build_mlp((4,), 2, hidden_units=(4,), name="student")
    teacher_path = os.path.join(folder, "teacher.keras")
    teacher.save(teacher_path)
    deploy.export(student, "CartPole-v1", os.path.join(folder, "export"),
                       keras.models.load_model(teacher_path), eval_episodes=2,
                       latency_repeats=10, tf_agents_policy=False)
    return teacher_path


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--export", help="an export folder written by tfkd export")
    parser.add_argument("--teacher", help="its teacher (folder or .keras), timed beside it")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=1_000)
    parser.add_argument("--out", default="results/deploy.json")
    parser.add_argument("--smoke", action="store_true", help="a tiny export, 2 runs of 20 calls")
    args = parser.parse_args(argv)
    if args.smoke:
        scratch = tempfile.mkdtemp(prefix="tfkd-deploy-smoke-")
        args.teacher = _smoke_export(scratch)
        args.export, args.runs, args.repeats = os.path.join(scratch, "export"), 2, 20
    elif not args.export:
        parser.error("--export DIR is needed (or --smoke)")
    result = run(args.export, args.teacher, args.runs, args.repeats)
    print(table(result))
    from tfkd.files import write_json

    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    write_json(args.out, result)
    print(f"written to {args.out}")


if __name__ == "__main__":
    sys.exit(main())
