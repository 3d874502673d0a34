"""Test set-up. TF-Agents needs tf.keras = Keras 2, which must be chosen
before TensorFlow is first imported; tfkd itself only uses Keras 3. Ray
clusters of the tests, started here or by `ray start`, listen on loopback
only (tfkd.rl.workers.LOOPBACK_ONLY, read when Ray is first imported)."""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

# The files whose tests run longest (subprocesses running the documents'
# blocks, the benchmarks and the examples) are collected first, so that
# pytest-xdist, which hands out whole files in collection order, starts them
# first rather than leaving one of them to run alone at the end.
LONGEST_FIRST = ("test_docs.py", "test_benchmarks.py", "test_examples.py", "test_cli.py")


def pytest_collection_modifyitems(items):
    def rank(item):
        name = item.path.name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: the order within each file is kept
