"""TF-Agents integration for tfkd (the optional ``agents`` extra).

* :class:`GymnasiumEnvironment` — a gymnasium environment as a TF-Agents
  ``PyEnvironment`` (TF-Agents 0.19 ships no gymnasium wrapper).
* :func:`train_dqn_teacher` / :func:`load_dqn_teacher` — train a DQN teacher
  with TF-Agents' ``DqnAgent`` (replay buffer, driver, target network,
  checkpoints that resume) and save it; its settings are
  :class:`tfkd.rl.dqn.DQNConfig` (re-exported here), shared with the Keras DQN.
* :func:`as_teacher` — a ``DqnAgent``, ``QNetwork`` or policy as a tfkd
  teacher: a callable ``observations -> Q-values`` for :class:`tfkd.Distiller`
  and ``tfkd.rl``.
* :class:`StudentPolicy` — a Keras 3 student as a TF-Agents ``TFPolicy``, so
  TF-Agents drivers and metrics evaluate it (:func:`evaluate_policy`).
* :func:`replay_buffer_dataset` — a distillation dataset from a TF-Agents
  replay buffer, labelled by the teacher.

TF-Agents is written against ``tf.keras`` = Keras 2 (the ``tf-keras``
package), chosen by ``TF_USE_LEGACY_KERAS=1`` before TensorFlow is first
imported; tfkd's own models stay Keras 3 (``import keras``). Importing this
module with ``tf.keras`` bound to Keras 3 raises an ``ImportError`` that says
what to set.
"""

import tensorflow as _tf

_KERAS2_HINT = (
    "tfkd.agents uses TF-Agents, which needs tf.keras to be Keras 2 (the tf-keras "
    "package), but tf.keras is Keras {version} in this process. Set the environment "
    "variable TF_USE_LEGACY_KERAS=1 before TensorFlow or Keras is first imported "
    "(`import keras` and `import tfkd` import TensorFlow): "
    "`export TF_USE_LEGACY_KERAS=1` in the shell, or "
    "`import os; os.environ['TF_USE_LEGACY_KERAS'] = '1'` as the first lines of "
    "your script, before any other import (setting it later has no effect). Install the "
    "extra with `pip install tf-keras==2.21.* tensorflow-probability==0.25.* "
    "gym==0.23.1 pillow gin-config cloudpickle` and "
    "`pip install --no-deps tf-agents==0.19.0`. tfkd's own models stay Keras 3."
)


def _check_keras2() -> None:
    # Checked after TF-Agents (and TensorFlow Probability) are imported: they
    # re-bind tf.keras, and what counts is the binding they see.
    try:
        import tf_agents.networks  # noqa: F401

        module = _tf.keras.layers.Dense.__module__
    except (AttributeError, ImportError) as error:  # tf-keras or tf-agents missing.
        raise ImportError(_KERAS2_HINT.format(version="(import failed: %s)" % error)) from error
    if not module.startswith("tf_keras"):
        import keras

        raise ImportError(_KERAS2_HINT.format(version=keras.__version__))


_check_keras2()

from tfkd.agents.dqn import (  # noqa: E402
    TrainedDqnTeacher,
    load_dqn_teacher,
    save_dqn_teacher,
    train_dqn_teacher,
)
from tfkd.agents.environment import GymnasiumEnvironment  # noqa: E402
from tfkd.agents.policies import StudentPolicy, evaluate_policy  # noqa: E402
from tfkd.agents.replay import replay_buffer_arrays, replay_buffer_dataset  # noqa: E402
from tfkd.agents.teachers import PolicyTeacher, QNetworkTeacher, as_teacher  # noqa: E402
from tfkd.rl.dqn import DQNConfig  # noqa: E402

__all__ = [
    "DQNConfig",
    "GymnasiumEnvironment",
    "PolicyTeacher",
    "QNetworkTeacher",
    "StudentPolicy",
    "TrainedDqnTeacher",
    "as_teacher",
    "evaluate_policy",
    "load_dqn_teacher",
    "replay_buffer_arrays",
    "replay_buffer_dataset",
    "save_dqn_teacher",
    "train_dqn_teacher",
]
