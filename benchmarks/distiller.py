"""tfkd.Distiller against keras.distillation.Distiller, in one run.

Same teacher, student, data (scikit-learn's digits), batch size, epochs,
optimizer and initial student weights. Epochs of the alternatives are run
round-robin (one ``fit(..., epochs=1)`` call each, in turn), so a change in
machine load touches all of them alike. The table shows, per alternative:

- the fastest epoch (the least disturbed by other work on the machine; the
  first epoch, with tracing, excluded), the median, and the ratio of fastest
  epochs to keras (KLDivergence);
- the mean epoch over all epochs, the first included, and its ratio to keras
  (KLDivergence): the amortised cost. It counts the tracing, and for the
  cached-teacher default the teacher's one pre-pass over the data, which its
  first ``fit`` call pays (later calls find the outputs in the cache);
- the student's final test accuracy.

The "precomputed" rows train on teacher outputs computed once before the
loop; that pass is timed apart (``precompute_s`` in the JSON), not in their
epochs.

    python benchmarks/distiller.py                     # ~6 minutes on 2 cores
    python benchmarks/distiller.py --epochs 30 --out results/distiller.json
    python benchmarks/distiller.py --smoke             # seconds: a check that it runs

Alternatives:
    keras (KLDivergence)  keras.distillation.Distiller + LogitsDistillation(T,
                          loss=keras.losses.KLDivergence()): the working setup
    keras (default loss)  LogitsDistillation(T) with its default
                          loss="kl_divergence": KL on raw logits (Keras 3.15)
    tfkd (default: cached teacher)  tfkd.Distiller with its defaults: the
                          teacher runs once over the arrays (first fit call),
                          its outputs are reused; backend "auto"
    tfkd live (auto|tf|cpp)  tfkd.Distiller(cache_teacher_outputs=False): the
                          teacher runs every step; softmax_kl backend "auto",
                          "tf" or "cpp"
    tfkd precomputed      tfkd.Distiller(teacher=None) on stored teacher
                          outputs, as RL datasets give them
"""

import argparse
import json
import os
import pathlib
import platform
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from tqdm import tqdm  # noqa: E402

import tfkd  # noqa: E402

SPARSE_CE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def load_data(copies, seed):
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32")
    x_train, x_test, y_train, y_test = train_test_split(x, y.astype("int32"), train_size=0.6,
                                                        stratify=y, random_state=0)
    # A longer epoch: noisy copies of the training set.
    rng = np.random.default_rng(seed)
    x_train = np.concatenate([x_train] + [
        np.clip(x_train + rng.normal(0, 0.05, x_train.shape), 0, 1).astype("float32")
        for _ in range(copies - 1)])
    y_train = np.tile(y_train, copies)
    return x_train, x_test, y_train, y_test


def make_alternatives(teacher, student_weights, args):
    def new_student():
        student = tfkd.models.build_mlp((64,), 10, hidden_units=(args.student_units,),
                                        name="student")
        student.set_weights(student_weights)
        return student

    def keras_distiller(loss):
        distillation = (keras.distillation.LogitsDistillation(temperature=args.temperature)
                        if loss is None else
                        keras.distillation.LogitsDistillation(temperature=args.temperature,
                                                              loss=loss))
        model = keras.distillation.Distiller(teacher, new_student(), distillation,
                                             student_loss_weight=args.alpha)
        model.compile(keras.optimizers.Adam(args.learning_rate), loss=SPARSE_CE)
        return model

    def tfkd_distiller(backend=None, live=True, cache=False):
        model = tfkd.Distiller(new_student(), teacher if live else None, alpha=args.alpha,
                               temperature=args.temperature, backend=backend,
                               cache_teacher_outputs=cache)
        model.compile(keras.optimizers.Adam(args.learning_rate))
        return model

    return {
        "keras (KLDivergence)": (keras_distiller(keras.losses.KLDivergence()), "labels"),
        "keras (default loss)": (keras_distiller(None), "labels"),
        "tfkd (default: cached teacher)": (tfkd_distiller(cache=True), "labels"),
        "tfkd live (auto)": (tfkd_distiller("auto"), "labels"),
        "tfkd live (tf)": (tfkd_distiller("tf"), "labels"),
        "tfkd live (cpp)": (tfkd_distiller("cpp"), "labels"),
        "tfkd precomputed (auto)": (tfkd_distiller("auto", live=False), "stored"),
        "tfkd precomputed (tf)": (tfkd_distiller("tf", live=False), "stored"),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--copies", type=int, default=4, help="noisy copies of the train set")
    parser.add_argument("--teacher-units", type=int, default=1024)
    parser.add_argument("--student-units", type=int, default=32)
    parser.add_argument("--temperature", type=float, default=4.0)
    parser.add_argument("--alpha", type=float, default=0.1)
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--teacher-epochs", type=int, default=5)
    parser.add_argument("--out", default="results/distiller.json")
    parser.add_argument("--smoke", action="store_true",
                        help="seconds: 2 epochs, one copy, a 64-unit teacher trained 1 epoch "
                             "(into a temporary file unless --out is given); a check only")
    args = parser.parse_args(argv)
    if args.smoke:
        args.epochs, args.copies, args.teacher_units, args.teacher_epochs = 2, 1, 64, 1
        if "--out" not in (sys.argv[1:] if argv is None else argv):
            args.out = os.path.join(tempfile.mkdtemp(prefix="tfkd-distiller-smoke-"),
                                    "distiller.json")
    if args.epochs < 2:
        parser.error("--epochs must be at least 2 (the first epoch, with tracing, is not timed)")

    keras.utils.set_random_seed(args.seed)
    x_train, x_test, y_train, y_test = load_data(args.copies, args.seed)
    teacher = tfkd.models.build_mlp((64,), 10, hidden_units=(args.teacher_units,) * 2,
                                    name="teacher")
    teacher.compile(keras.optimizers.Adam(1e-3), SPARSE_CE, metrics=["accuracy"])
    teacher.fit(x_train, y_train, epochs=args.teacher_epochs, batch_size=128, verbose=0)
    teacher_accuracy = teacher.evaluate(x_test, y_test, verbose=0)[1]
    start = time.perf_counter()
    stored = {"teacher_outputs": teacher.predict(x_train, batch_size=1024, verbose=0),
              "labels": y_train}
    precompute_s = time.perf_counter() - start
    student_weights = tfkd.models.build_mlp((64,), 10, hidden_units=(args.student_units,)
                                            ).get_weights()
    alternatives = make_alternatives(teacher, student_weights, args)

    times = {name: [] for name in alternatives}
    with tqdm(total=args.epochs * len(alternatives), desc="epochs",
              disable=args.smoke) as progress:
        for _ in range(args.epochs):
            for name, (model, targets) in alternatives.items():
                y = y_train if targets == "labels" else stored
                start = time.perf_counter()
                model.fit(x_train, y, batch_size=args.batch_size, epochs=1, verbose=0)
                times[name].append(time.perf_counter() - start)
                progress.update()

    reference = min(times["keras (KLDivergence)"][1:])
    reference_mean = statistics.mean(times["keras (KLDivergence)"])
    rows = []
    for name, (model, _) in alternatives.items():
        epoch = min(times[name][1:])
        mean_all = statistics.mean(times[name])
        accuracy = float((model.student.predict(x_test, verbose=0).argmax(-1) == y_test).mean())
        rows.append({"alternative": name, "epoch_s": epoch,
                     "median_epoch_s": statistics.median(times[name][1:]),
                     "speedup_vs_keras": reference / epoch, "mean_epoch_all_s": mean_all,
                     "amortised_speedup_vs_keras": reference_mean / mean_all,
                     "student_accuracy": accuracy, "epoch_times_s": times[name]})

    print(f"\ndigits x{args.copies} ({len(x_train)} train samples), batch {args.batch_size}, "
          f"{args.epochs} epochs, teacher {tfkd.models.count_params(teacher)} parameters "
          f"(test accuracy {teacher_accuracy:.4f}), student "
          f"{tfkd.models.count_params(alternatives['tfkd live (tf)'][0].student)}")
    print("| alternative | fastest epoch (s) | median epoch (s) | speed-up vs keras "
          "(KLDivergence) | mean epoch, all (s) | amortised speed-up vs keras | "
          "student accuracy |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['alternative']} | {r['epoch_s']:.3f} | {r['median_epoch_s']:.3f} | "
              f"{r['speedup_vs_keras']:.2f}x | {r['mean_epoch_all_s']:.3f} | "
              f"{r['amortised_speedup_vs_keras']:.2f}x | {r['student_accuracy']:.4f} |")
    print(f"\nmean epoch, all: over all {args.epochs} epochs, the first (tracing; the "
          f"cached default's teacher pre-pass) included. precomputed rows: teacher outputs "
          f"computed before the loop in {precompute_s:.3f} s, not in their epochs.")
    by_name = {r["alternative"]: r for r in rows}
    print(f"\nbackend cpp / tf epoch time (live teacher): "
          f"{by_name['tfkd live (cpp)']['epoch_s'] / by_name['tfkd live (tf)']['epoch_s']:.2f}")

    pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"args": vars(args), "teacher_accuracy": teacher_accuracy,
                   "precompute_s": precompute_s, "rows": rows,
                   "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                               "tensorflow": tf.__version__, "keras": keras.__version__,
                               "kernel": tfkd.ops.kernel_info()}}, f, indent=1)
    print(f"results: {args.out}")


if __name__ == "__main__":
    main()
