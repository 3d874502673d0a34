"""Fixtures for tfkd.rl tests: a fixed-weight CartPole teacher needs no training."""

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
