"""Hinton et al. (2015) on scikit-learn's digits: a small student learns more
from a teacher's soft targets than from the labels alone.

For each seed: train a teacher (a small CNN with dropout, 151,306
parameters) on the labels; then train the same MLP student (64 hidden units,
4,810 parameters, 1/31 of the teacher) twice from the same initial weights and
data order, once on the labels alone and once with tfkd.Distiller
(soft-target KL at temperature T, plus alpha times the label loss). Prints the
test accuracies (a held-out half of the digits) and writes them to
``OUT/results.json`` with a figure, ``OUT/digits_distillation.png``. About
5–10 minutes on 2 cores for 3 seeds.

    python examples/digits_distillation.py                   # seeds 0, 1, 2
    python examples/digits_distillation.py --num-seeds 5     # seeds 0 to 4
    python examples/digits_distillation.py --smoke           # seconds
"""

import argparse
import json
import os


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0,
                        help="the first seed; each seed trains its own teacher and students"
                             " (default: %(default)s)")
    parser.add_argument("--num-seeds", type=int, default=3,
                        help="independent seeds: --seed, --seed + 1, ... (default: %(default)s)")
    parser.add_argument("--train-size", type=float, default=0.5,
                        help="fraction of the digits to train on (the rest is the test set)"
                             " (default: %(default)s)")
    parser.add_argument("--teacher-units", type=int, default=128,
                        help="width of the teacher's dense layer (default: %(default)s)")
    parser.add_argument("--teacher-epochs", type=int, default=40,
                        help="epochs of the teacher (default: %(default)s)")
    parser.add_argument("--teacher-dropout", type=float, default=0.3,
                        help="dropout rate of the teacher (default: %(default)s)")
    parser.add_argument("--student-units", type=int, default=64,
                        help="width of the student's hidden layer (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=150,
                        help="epochs of each student (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=64,
                        help="minibatch size (default: %(default)s)")
    parser.add_argument("--learning-rate", type=float, default=3e-3,
                        help="Adam learning rate of the students (default: %(default)s)")
    parser.add_argument("--temperature", type=float, default=3.0,
                        help="softmax temperature T of the soft targets (default: %(default)s)")
    parser.add_argument("--alpha", type=float, default=0.3,
                        help="weight of the label loss beside the distillation loss"
                             " (default: %(default)s)")
    parser.add_argument("--out", default=None,
                        help="the only folder written to (default: runs/digits_distillation, "
                             "runs/digits_distillation-smoke with --smoke)")
    parser.add_argument("--smoke", action="store_true",
                        help="one seed, 2 epochs each: seconds (checks that everything runs)")
    args = parser.parse_args()
    args.out = args.out or ("runs/digits_distillation" + ("-smoke" if args.smoke else ""))
    if args.smoke:
        args.num_seeds, args.teacher_epochs, args.epochs = 1, 2, 2
    return args


args = parse_args()  # before the heavy imports: --help runs nothing
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

import tfkd  # noqa: E402
from tfkd.rl import seed_everything  # noqa: E402


def load_data(train_size):
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32")
    return train_test_split(x, y.astype("int32"), train_size=train_size, stratify=y,
                            random_state=0)


def build_teacher(args):
    """A small convolutional network on the 8x8 images, with dropout."""
    return keras.Sequential([
        keras.Input((64,), name="pixels"),
        keras.layers.Reshape((8, 8, 1)),
        keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
        keras.layers.Conv2D(64, 3, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Flatten(),
        keras.layers.Dropout(args.teacher_dropout),
        keras.layers.Dense(args.teacher_units, activation="relu"),
        keras.layers.Dropout(args.teacher_dropout),
        keras.layers.Dense(10, name="logits"),
    ], name="teacher")


def train_teacher(x, y, args):
    teacher = build_teacher(args)
    teacher.compile(keras.optimizers.Adam(1e-3),
                    keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                    metrics=["accuracy"])
    teacher.fit(x, y, epochs=args.teacher_epochs, batch_size=args.batch_size, verbose=0)
    return teacher


def train_student(student, x, y, x_test, y_test, args, teacher=None):
    """Labels alone (teacher=None) or distillation; returns test accuracy per epoch."""
    if teacher is None:
        model = student
        model.compile(keras.optimizers.Adam(args.learning_rate),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])
    else:
        model = tfkd.Distiller(student, teacher, alpha=args.alpha, temperature=args.temperature)
        model.compile(keras.optimizers.Adam(args.learning_rate), metrics=["accuracy"])
    history = model.fit(x, y, epochs=args.epochs, batch_size=args.batch_size,
                        validation_data=(x_test, y_test), verbose=0)
    return history.history["val_accuracy"]


def run_seed(seed, data, args):
    x_train, x_test, y_train, y_test = data
    seed_everything(seed)
    teacher = train_teacher(x_train, y_train, args)
    teacher_accuracy = teacher.evaluate(x_test, y_test, verbose=0)[1]
    seed_everything(seed + 1000)
    student = tfkd.models.build_mlp(x_train.shape[1:], 10, hidden_units=(args.student_units,),
                                    name="student")
    if 10 * tfkd.models.count_params(student) > tfkd.models.count_params(teacher):
        raise ValueError("the student should have at most 1/10 of the teacher's parameters")
    initial_weights = student.get_weights()
    labels_curve = train_student(student, x_train, y_train, x_test, y_test, args)
    student.set_weights(initial_weights)
    seed_everything(seed + 1000)
    distilled_curve = train_student(student, x_train, y_train, x_test, y_test, args, teacher)
    return {
        "seed": seed,
        "teacher_params": tfkd.models.count_params(teacher),
        "student_params": tfkd.models.count_params(student),
        "teacher_accuracy": float(teacher_accuracy),
        "labels_only_accuracy": float(labels_curve[-1]),
        "distilled_accuracy": float(distilled_curve[-1]),
        "labels_only_curve": [float(a) for a in labels_curve],
        "distilled_curve": [float(a) for a in distilled_curve],
    }


def summarize(runs):
    keys = ("teacher_accuracy", "labels_only_accuracy", "distilled_accuracy")
    return {k: {"mean": float(np.mean([r[k] for r in runs])),
                "std": float(np.std([r[k] for r in runs]))} for k in keys}


def print_table(runs, summary):
    teacher_params, student_params = runs[0]["teacher_params"], runs[0]["student_params"]
    print(f"\nteacher: {teacher_params:,} parameters; student: {student_params:,} "
          f"(1/{teacher_params / student_params:.0f} of the teacher's)")
    print("test accuracy:")
    print("| seed | teacher | student, labels only | student, distilled |")
    print("|---|---|---|---|")
    for r in runs:
        print(f"| {r['seed']} | {r['teacher_accuracy']:.4f} | {r['labels_only_accuracy']:.4f} | "
              f"{r['distilled_accuracy']:.4f} |")
    cells = [f"{summary[k]['mean']:.4f} ± {summary[k]['std']:.4f}"
             for k in ("teacher_accuracy", "labels_only_accuracy", "distilled_accuracy")]
    print(f"| mean ± std | {' | '.join(cells)} |")


def plot(runs, summary, path):
    import matplotlib

    matplotlib.use("Agg")  # files only, no window
    import matplotlib.pyplot as plt

    fig, (bars, curves) = plt.subplots(1, 2, figsize=(10, 3.8))
    names = ["teacher", "student,\nlabels only", "student,\ndistilled"]
    keys = ["teacher_accuracy", "labels_only_accuracy", "distilled_accuracy"]
    means = [summary[k]["mean"] for k in keys]
    stds = [summary[k]["std"] for k in keys]
    bars.bar(names, means, yerr=stds, capsize=4, color=["0.6", "tab:orange", "tab:blue"])
    low = min(r[k] for r in runs for k in keys)
    bars.set_ylim(max(0.0, low - 0.03), 1.0)
    bars.set_ylabel("test accuracy")
    bars.set_title(f"digits, mean of {len(runs)} seeds")
    for key, color, label in (("labels_only_curve", "tab:orange", "labels only"),
                              ("distilled_curve", "tab:blue", "distilled")):
        curve = np.mean([r[key] for r in runs], axis=0)
        curves.plot(np.arange(1, len(curve) + 1), curve, color=color, label=label)
    curves.set_ylim(0.8, 1.0)
    curves.set_xlabel("epoch")
    curves.set_ylabel("test accuracy (mean over seeds)")
    curves.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"figure: {path}")


def main():
    data = load_data(args.train_size)
    runs = []
    for seed in range(args.seed, args.seed + args.num_seeds):
        runs.append(run_seed(seed, data, args))
        r = runs[-1]
        print(f"seed {seed}: teacher {r['teacher_accuracy']:.4f}, labels only "
              f"{r['labels_only_accuracy']:.4f}, distilled {r['distilled_accuracy']:.4f}",
              flush=True)
    summary = summarize(runs)
    print_table(runs, summary)
    os.makedirs(args.out, exist_ok=True)
    results = os.path.join(args.out, "results.json")
    with open(results, "w") as f:
        json.dump({"args": vars(args), "summary": summary, "runs": runs}, f, indent=1,
                  allow_nan=False)
    print(f"results: {results}")
    plot(runs, summary, os.path.join(args.out, "digits_distillation.png"))


if __name__ == "__main__":
    main()
