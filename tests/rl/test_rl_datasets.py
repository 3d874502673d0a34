"""Bounded buffer, tf.data and .npz files."""

import numpy as np
import pytest

from tfkd.rl import DatasetFileError, DistillationBuffer, load_npz, save_npz, to_tf_dataset


def labelled(n, start=0, num_actions=2):
    index = np.arange(start, start + n, dtype=np.float32)
    observations = np.stack([index, -index, index, -index], axis=1)
    teacher_outputs = np.stack([index] * num_actions, axis=1)
    return observations, teacher_outputs


def test_fifo_buffer_keeps_the_latest_states():
    buffer = DistillationBuffer(100, (4,), 2, replacement="fifo")
    for start in range(0, 250, 50):
        buffer.add(*labelled(50, start))
    observations, teacher_outputs = buffer.arrays()
    assert len(buffer) == 100 and buffer.num_seen == 250
    assert sorted(observations[:, 0].tolist()) == list(range(150, 250))
    np.testing.assert_array_equal(observations[:, 0], teacher_outputs[:, 0])


def test_reservoir_buffer_is_a_uniform_sample_of_everything_seen():
    buffer = DistillationBuffer(500, (4,), 2, replacement="reservoir", seed=1)
    for start in range(0, 20_000, 1_000):
        buffer.add(*labelled(1_000, start))
    observations, teacher_outputs = buffer.arrays()
    kept = observations[:, 0]
    assert len(buffer) == 500 and len(np.unique(kept)) == 500
    np.testing.assert_array_equal(kept, teacher_outputs[:, 1])
    # Uniform over 0..19999: each quarter holds ~125 of the 500 (std ~10).
    quarters = np.bincount((kept // 5_000).astype(int), minlength=4)
    assert np.all(np.abs(quarters - 125) < 45), quarters


def test_buffer_rejects_mismatched_batches():
    buffer = DistillationBuffer(10, (4,), 2)
    with pytest.raises(ValueError, match="expected"):
        buffer.add(np.zeros((3, 5)), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="same length"):
        buffer.add(np.zeros((3, 4)), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="NaN"):
        buffer.add(np.zeros((1, 4)), np.array([[np.nan, 0.0]]))
    with pytest.raises(ValueError, match="replacement"):
        DistillationBuffer(10, (4,), 2, replacement="lifo")


def test_tf_dataset_batches_every_example_once():
    observations, teacher_outputs = labelled(10)
    dataset = to_tf_dataset(observations.astype(np.float64), teacher_outputs, batch_size=4, seed=0)
    batches = list(dataset.as_numpy_iterator())
    assert [len(x) for x, _ in batches] == [4, 4, 2]
    assert batches[0][0].dtype == np.float32
    seen = np.concatenate([x[:, 0] for x, _ in batches])
    assert sorted(seen.tolist()) == list(range(10))
    for x, y in batches:
        np.testing.assert_array_equal(x[:, 0], y[:, 0])


def test_npz_round_trip(tmp_path):
    buffer = DistillationBuffer(20, (4,), 2)
    buffer.add(*labelled(15))
    path = tmp_path / "data.npz"
    buffer.save(path)
    observations, teacher_outputs = load_npz(path, observation_shape=(4,), num_actions=2)
    np.testing.assert_array_equal(observations, buffer.arrays()[0])
    np.testing.assert_array_equal(teacher_outputs, buffer.arrays()[1])


def test_corrupt_npz_is_a_clear_error(tmp_path):
    path = tmp_path / "corrupt.npz"
    save_npz(path, *labelled(100))
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(DatasetFileError, match="corrupt"):
        load_npz(path)
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip file at all")
    with pytest.raises(DatasetFileError, match="corrupt"):
        load_npz(garbage)
    with pytest.raises(DatasetFileError, match="no such"):
        load_npz(tmp_path / "missing.npz")


def test_mismatched_npz_is_a_clear_error(tmp_path):
    path = tmp_path / "data.npz"
    save_npz(path, *labelled(5))
    with pytest.raises(DatasetFileError, match=r"expected \(8,\)"):
        load_npz(path, observation_shape=(8,))
    with pytest.raises(DatasetFileError, match="expected 4"):
        load_npz(path, num_actions=4)
    np.savez(tmp_path / "keys.npz", observations=np.zeros((5, 4)), labels=np.zeros((5, 2)))
    with pytest.raises(DatasetFileError, match="missing arrays"):
        load_npz(tmp_path / "keys.npz")
    np.savez(tmp_path / "lengths.npz", observations=np.zeros((5, 4)), teacher_outputs=np.zeros((4, 2)))
    with pytest.raises(DatasetFileError, match="same length"):
        load_npz(tmp_path / "lengths.npz")


def test_npz_with_pickled_objects_is_refused(tmp_path):
    path = tmp_path / "pickled.npz"
    objects = np.array([{"a": 1}, None], dtype=object)
    np.savez(path, observations=objects, teacher_outputs=np.zeros((2, 2)))
    with pytest.raises(DatasetFileError, match="corrupt or unreadable"):
        load_npz(path)
