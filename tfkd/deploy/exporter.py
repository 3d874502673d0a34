"""``tfkd.deploy.export``: write every artefact of a student and measure each one.

The folder follows the layout in :mod:`tfkd.deploy` (names in
:mod:`tfkd.deploy.layout`). ``report.json``::

    env_id, seed, eval_seeds, episodes, latency_repeats, calibration, versions,
    random:   mean_return, std_return, ci95, num_episodes,
    formats:  one entry per artefact (the teacher too, when given), each with
              format, path, bytes, bytes_gzip, params, latency_us_b1,
              throughput_b256, mean_return, std_return, ci95, num_episodes,
              normalized_score, agreement, runtime
              (Keras entries add latency_us_b1_eager: a plain ``model(obs)`` call;
              TFLite entries add layers: the dtypes of each weighted op)

Without a teacher the normalised scores are null (they are defined against
the teacher) and no teacher entry is written; everything else is measured.
"""

from __future__ import annotations

import os
from typing import Mapping

import numpy as np

from tfkd import files, provenance
from tfkd.deploy import convert, layout, runtime
from tfkd.deploy.report import measure
from tfkd.models import count_params
from tfkd.rl.envs import check_fits, env_spec, make_vector_env
from tfkd.rl.evaluation import (ReturnStats, evaluate_policy, held_out_seeds, median_call_seconds,
                                normalized_score, random_policy, selection_seeds)
from tfkd.rl.policies import EpsilonGreedyPolicy, GreedyPolicy
from tfkd.rl.rollouts import RolloutCollector

#: Env steps of the student's own rollouts that calibrate the int8 model.
CALIBRATION_STEPS = 10_000
#: Exploration while collecting them: a few off-policy states widen the ranges
#: the int8 model can represent beyond the student's exact trajectory.
CALIBRATION_EPSILON = 0.05
_CALIBRATION_ENVS = 8


def calibration_observations(student, env_id: str, seed: int = 0,
                             steps: int = CALIBRATION_STEPS) -> np.ndarray:
    """Observations from the student's own ε-greedy rollouts (ε = 0.05).

    Episodes start from ``selection_seeds(seed, 8)``: never a held-out
    episode the report is measured on.
    """
    env = make_vector_env(env_id, _CALIBRATION_ENVS)
    try:
        num_actions = env_spec(env, env_id).num_actions
        collector = RolloutCollector(env, student, seed=selection_seeds(seed, _CALIBRATION_ENVS))
        policy = EpsilonGreedyPolicy(GreedyPolicy(student, num_actions), num_actions,
                                     CALIBRATION_EPSILON)
        return collector.collect(policy, steps).observations.astype(np.float32)
    finally:
        env.close()


def export(student, env_id: str, out_dir: str | os.PathLike, teacher=None, *,
           calibration: np.ndarray | None = None, variants: Mapping[str, object] | None = None,
           seed: int = 0, eval_episodes: int = 100, latency_repeats: int = 1_000,
           tf_agents_policy: bool = True, teacher_path: str = "<teacher>",
           per_channel: bool = False) -> dict:
    """Exports ``student`` into ``out_dir`` (replaced atomically) and returns the report.

    Args:
        student: the float student, a Keras 3 model observations -> logits.
        env_id: the gymnasium env it acts in (its observation shape must match).
        out_dir: the export folder; written in a temporary folder beside it and
            swapped in whole.
        teacher: the teacher network, for normalised scores and its latency
            (None: scores are null).
        calibration: observations for the int8 calibration, e.g. the
            distillation buffer's; default: :func:`calibration_observations`.
        variants: further students by name, :class:`~tfkd.deploy.compression.CompressedStudent`
            (e.g. ``{"qat": ..., "pruned": ...}``), each exported as Keras,
            TFLite and int8 TFLite (a quantisation-aware one converted from
            its fake-quant ranges) and measured.
        seed: the run seed: held-out episodes ``held_out_seeds(seed, eval_episodes)``,
            calibration rollouts on selection seeds.
        eval_episodes: held-out episodes each artefact plays.
        latency_repeats: timed calls per batch size (>= 1000 for a report).
        tf_agents_policy: also save the TF-Agents policy (needs Keras 2 as
            ``tf.keras``, see :mod:`tfkd.deploy.tf_agents_policy`).
        teacher_path: where the teacher came from, for the report.
        per_channel: int8 weight scales per output channel, or per tensor
            (default: a smaller file; see :func:`tfkd.deploy.convert.tflite_int8`).

    Raises:
        ValueError: the student does not fit the env, or bad calibration data.
    """
    result = {}

    def write(folder: str) -> None:
        result.update(write_export(student, env_id, folder, teacher, calibration=calibration,
                                   variants=variants, seed=seed, eval_episodes=eval_episodes,
                                   latency_repeats=latency_repeats,
                                   tf_agents_policy=tf_agents_policy, teacher_path=teacher_path,
                                   per_channel=per_channel))

    files.replace_directory(write, out_dir)
    return result


def write_export(student, env_id: str, folder: str, teacher=None, *,
                 calibration: np.ndarray | None = None,
                 variants: Mapping[str, object] | None = None, seed: int = 0,
                 eval_episodes: int = 100, latency_repeats: int = 1_000,
                 tf_agents_policy: bool = True, teacher_path: str = "<teacher>",
                 per_channel: bool = False, progress=print) -> dict:
    """:func:`export` into an existing empty ``folder`` (the caller makes it atomic).

    ``progress`` is called with one line per step (``None``: silent).
    """
    say = progress or (lambda line: None)
    spec = _check_student(student, env_id)
    shape, num_actions = tuple(spec.observation_shape), spec.num_actions
    source = "given"
    if calibration is None:
        say(f"calibrating int8 on {CALIBRATION_STEPS:,} env steps of the student's rollouts ...")
        calibration, source = calibration_observations(student, env_id, seed), "student rollouts"
    calibration = np.asarray(calibration, dtype=np.float32)
    if calibration.ndim < 2 or calibration.shape[1:] != shape:
        raise ValueError(f"calibration observations of shape {list(calibration.shape[1:])} "
                         f"do not match {env_id}'s {list(shape)}")

    say("writing the SavedModel, TFLite float32 and int8 ...")
    paths = {name: os.path.join(folder, relative) for name, relative in layout.ARTEFACTS.items()}
    student.save(paths["keras"])
    convert.save_serving_model(student, paths["savedmodel"], shape)
    int8_layers = _write_tflite(student, shape, calibration, paths["tflite"], paths["tflite-int8"],
                                seed, per_channel)
    if tf_agents_policy:
        from tfkd.deploy.tf_agents_policy import save_tf_agents_policy

        save_tf_agents_policy(student, shape, num_actions,
                              os.path.join(folder, layout.TF_AGENTS_POLICY_DIR))
    variant_paths = {}
    for variant, compressed in (variants or {}).items():
        model = compressed.plain
        _check_student(model, env_id)
        keras_path, float_path, int8_path = (os.path.join(folder, name.format(variant=variant))
                                             for name in layout.VARIANT_FILES)
        model.save(keras_path)
        if compressed.quantized is None:
            _write_tflite(model, shape, calibration, float_path, int8_path, seed, per_channel)
        else:
            with open(float_path, "wb") as file:
                file.write(convert.tflite_float(model, shape))
            _write_int8(convert.tflite_from_fake_quant(compressed.quantized), int8_path)
        variant_paths[variant] = (keras_path, float_path, int8_path)

    say(f"measuring each artefact: {eval_episodes} held-out episodes, {latency_repeats} timed "
        "calls at batch 1 and 256 ...")
    eval_seeds = held_out_seeds(seed, eval_episodes)
    random_return = evaluate_policy(env_id, random_policy(num_actions), eval_seeds)
    reference = runtime.load(paths["keras"])
    common = dict(env_id=env_id, seeds=eval_seeds, observations=calibration,
                  repeats=latency_repeats, reference=reference, random_return=random_return)
    entries, teacher_return = [], None
    if teacher is not None:
        teacher_entry = _measure_keras("teacher", teacher, shape, num_actions, teacher_path,
                                       count_params(teacher), {**common, "reference": None},
                                       None)
        teacher_return = _stats_of(teacher_entry)
        entries.append(_with_score(teacher_entry, teacher_return, random_return))
    common["teacher_return"] = teacher_return
    params = count_params(student)
    entries.append(_measure_keras("keras", student, shape, num_actions, paths["keras"], params,
                                  common, teacher_return))
    entries.append(measure("savedmodel", runtime.load(paths["savedmodel"]), params=params,
                           runtime="SavedModel serving_default signature", **common))
    entries.append(measure("tflite", runtime.load(paths["tflite"]), params=params,
                           runtime="LiteRT interpreter",
                           layers=convert_layers(paths["tflite"]), **common))
    entries.append(measure("tflite-int8", runtime.load(paths["tflite-int8"], "tflite-int8"),
                           params=params, runtime="LiteRT interpreter", layers=int8_layers,
                           **common))
    for variant, (keras_path, float_path, int8_path) in variant_paths.items():
        model = variants[variant].plain
        entries.append(measure(f"{variant}-tflite", runtime.load(float_path, "tflite"),
                               params=count_params(model), runtime="LiteRT interpreter",
                               sparsity=_sparsity(model), **common))
        entries.append(measure(f"{variant}-tflite-int8", runtime.load(int8_path, "tflite-int8"),
                               params=count_params(model), runtime="LiteRT interpreter",
                               sparsity=_sparsity(model), layers=convert_layers(int8_path),
                               **common))
    for entry in entries:
        entry["path"] = os.path.relpath(entry["path"], folder) \
            if entry["path"].startswith(folder) else entry["path"]

    artefacts = {name: os.path.relpath(path, folder) for name, path in paths.items()}
    if tf_agents_policy:
        artefacts["tf-agents-policy"] = layout.TF_AGENTS_POLICY_DIR
    for variant, variant_files in variant_paths.items():
        for kind, path in zip(("keras", "tflite", "tflite-int8"), variant_files):
            artefacts[f"{variant}-{kind}"] = os.path.relpath(path, folder)
    versions = provenance.versions(("ai-edge-litert",))
    files.write_json(os.path.join(folder, layout.EXPORT_FILE), {
        "env_id": env_id, "observation_shape": list(shape), "observation_dtype": "float32",
        "num_actions": num_actions, "artefacts": artefacts, "versions": versions})
    report = {
        "env_id": env_id, "seed": seed, "eval_seeds": list(eval_seeds),
        "episodes": eval_episodes, "latency_repeats": latency_repeats,
        "calibration": {"source": source, "observations": int(len(calibration)),
                        "weights": "per-channel" if per_channel else "per-tensor"},
        "versions": versions,
        "random": {"mean_return": random_return.mean, "std_return": random_return.std,
                   "ci95": list(random_return.ci95), "num_episodes": random_return.num_episodes},
        "formats": entries,
    }
    files.write_json(os.path.join(folder, layout.REPORT_FILE), report)
    return report


def write_serving_files(student, env_id: str, folder: str | os.PathLike, *,
                        savedmodel: bool = True, version: int = 1) -> str:
    """Writes only what ``tfkd serve`` loads, and measures nothing.

    ``student.keras``, ``student.tflite`` (float32), with ``savedmodel``
    ``saved_model/<version>/``, then ``export.json`` with ``version``: each file
    appears whole (atomic renames) and ``export.json`` last, so a server that
    polls the folder swaps in the new version only once it is complete. For a
    quick service or a test; :func:`export` writes every artefact and measures
    each one.

    Returns:
        ``folder``, as a string.
    """
    folder = os.fspath(folder)
    spec = _check_student(student, env_id)
    shape = tuple(spec.observation_shape)
    os.makedirs(folder, exist_ok=True)
    with files.atomic_path(os.path.join(folder, layout.KERAS_FILE)) as path:
        student.save(path)
    with files.atomic_path(os.path.join(folder, layout.TFLITE_FILE)) as path:
        with open(path, "wb") as file:
            file.write(convert.tflite_float(student, shape))
    if savedmodel:
        files.replace_directory(lambda staging: convert.save_serving_model(student, staging, shape),
                                os.path.join(folder, layout.SAVED_MODEL_DIR, str(version)))
    files.write_json(os.path.join(folder, layout.EXPORT_FILE), {
        "env_id": env_id, "observation_shape": list(shape), "observation_dtype": "float32",
        "num_actions": spec.num_actions, "version": version})
    return folder


def _write_tflite(model, shape, calibration, float_path: str, int8_path: str,
                  seed: int, per_channel: bool) -> list[dict]:
    with open(float_path, "wb") as file:
        file.write(convert.tflite_float(model, shape))
    return _write_int8(convert.tflite_int8(model, shape, calibration, seed=seed,
                                           per_channel=per_channel), int8_path)


def _write_int8(content: bytes, int8_path: str) -> list[dict]:
    layers = convert.layer_dtypes(content)
    if not layers or any(layer["weights"] != "int8" or layer["input"] != "int8"
                         for layer in layers):
        raise RuntimeError(f"the int8 conversion left float weights or activations: {layers}")
    with open(int8_path, "wb") as file:
        file.write(content)
    return layers


def convert_layers(path: str) -> list[dict]:
    """:func:`tfkd.deploy.convert.layer_dtypes` of a TFLite file."""
    with open(path, "rb") as file:
        return convert.layer_dtypes(file.read())


def _measure_keras(name, model, shape, num_actions, path, params, common, teacher_return):
    compiled = runtime.from_model(model, shape, num_actions, path=path)
    entry = measure(name, compiled, params=params, runtime="Keras (tf.function)",
                    **{**common, "teacher_return": teacher_return})
    eager = runtime.from_model(model, shape, num_actions, path=path, eager=True)
    single = np.ascontiguousarray(common["observations"][:1], dtype=np.float32)
    repeats = common["repeats"]
    entry["latency_us_b1_eager"] = 1e6 * median_call_seconds(eager, single, repeats,
                                                             max(10, repeats // 20))
    return entry


def _stats_of(entry: dict) -> ReturnStats:
    # The teacher's own entry is its held-out return: rebuilt here so the
    # students' scores use the very episodes measured for it.
    return ReturnStats(entry["mean_return"], entry["std_return"], entry["num_episodes"],
                       tuple(entry["ci95"]), ())


def _with_score(entry: dict, teacher_return, random_return) -> dict:
    entry["normalized_score"] = normalized_score(entry["mean_return"], random_return.mean,
                                                 teacher_return.mean)
    return entry


def _sparsity(model) -> float:
    """Fraction of exactly-zero kernel weights (biases excluded)."""
    kernels = [np.asarray(weight) for weight in model.weights if weight.ndim > 1]
    total = sum(kernel.size for kernel in kernels)
    return float(sum(np.sum(kernel == 0) for kernel in kernels) / total) if total else 0.0


def _check_student(student, env_id: str):
    env = make_vector_env(env_id, 1)
    try:
        spec = env_spec(env, env_id)
    finally:
        env.close()
    check_fits(student, spec, "the student")
    return spec


