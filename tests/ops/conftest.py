"""Shared fixtures and strategies for the softmax-KL tests."""

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))  # softmax_kl_reference


@pytest.fixture
def rng():
    return np.random.default_rng(20261122)
