"""Test set-up. TF-Agents needs tf.keras = Keras 2, which must be chosen
before TensorFlow is first imported; tfkd itself only uses Keras 3. Ray
clusters of the tests, started here or by `ray start`, listen on loopback
only (tfkd.rl.workers.LOOPBACK_ONLY, read when Ray is first imported)."""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
