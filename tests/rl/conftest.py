"""Fixtures for tfkd.rl tests: fixed-weight CartPole teachers need no training."""

import keras
import numpy as np
import pytest

# Weights on (x, x_dot, theta, theta_dot): push right when the pole falls right.
CARTPOLE_CONTROLLER = np.array([0.1, 0.5, 1.0, 0.5], np.float32)


def linear_cartpole_teacher(scale: float = 10.0) -> keras.Model:
    """Logits ``scale · [-w·s, w·s]``: a linear controller that balances to 500."""
    inputs = keras.Input((4,))
    layer = keras.layers.Dense(2, use_bias=False, name="logits")
    model = keras.Model(inputs, layer(inputs), name="linear_teacher")
    layer.set_weights([scale * np.stack([-CARTPOLE_CONTROLLER, CARTPOLE_CONTROLLER], axis=1)])
    return model


@pytest.fixture(scope="session")
def cartpole_teacher() -> keras.Model:
    return linear_cartpole_teacher()


@pytest.fixture(scope="session")
def make_cartpole_teacher():
    return linear_cartpole_teacher


@pytest.fixture(scope="session")
def crippled_cartpole_teacher() -> keras.Model:
    """The balancing controller with a +6 bias towards pushing right (Q-values, not logits).

    It keeps the pole up but drifts the cart off the track: about 160 of 500
    on CartPole's held-out episodes (seed 0).
    """
    inputs = keras.Input((4,))
    layer = keras.layers.Dense(2, name="q_values")
    model = keras.Model(inputs, layer(inputs), name="crippled_teacher")
    layer.set_weights([10.0 * np.stack([-CARTPOLE_CONTROLLER, CARTPOLE_CONTROLLER], axis=1),
                       np.array([0.0, 6.0], np.float32)])
    return model
