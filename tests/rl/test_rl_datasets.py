"""Bounded buffer, tf.data and .npz files."""

import io
import re
import zipfile

import numpy as np
import pytest
from numpy.lib import format as npy_format

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
    with pytest.raises(DatasetFileError, match="observations holds Python objects"):
        load_npz(path)


def one_line_error(path, **kwargs):
    with pytest.raises(DatasetFileError) as error:
        load_npz(path, **kwargs)
    message = str(error.value)
    assert "\n" not in message and str(path) in message
    return message


@pytest.mark.parametrize("key, bad, match", [
    ("observations", np.nan, r"observations contain NaN or inf \(first in row 3\)"),
    ("observations", -np.inf, "observations contain NaN or inf"),
    ("teacher_outputs", np.inf, r"teacher outputs contain NaN or inf \(first in row 3\)"),
])
def test_npz_with_nan_or_inf_is_a_clear_error(tmp_path, key, bad, match):
    arrays = dict(zip(("observations", "teacher_outputs"), labelled(6)))
    arrays[key][3, 1] = bad
    path = tmp_path / "nonfinite.npz"
    np.savez(path, **arrays)
    assert re.search(match, one_line_error(path))


@pytest.mark.parametrize("observations, match", [
    (np.array([["a", "b"], ["c", "d"]]), r"observations is not numeric \(dtype <U1\)"),
    (np.array([[b"a"], [b"b"]]), r"observations is not numeric \(dtype \|S1\)"),
    (np.ones((2, 2), np.complex64), "observations is not numeric"),
])
def test_npz_with_non_numeric_observations_is_a_clear_error(tmp_path, observations, match):
    path = tmp_path / "strings.npz"
    np.savez(path, observations=observations, teacher_outputs=np.zeros((2, 2), np.float32))
    assert re.search(match, one_line_error(path))


def write_npz_with_header(path, shape, dtype="<f4", data=b""):
    """An .npz whose observations' header claims ``shape``, followed by ``data``."""
    header = io.BytesIO()
    npy_format.write_array_header_1_0(
        header, {"descr": dtype, "fortran_order": False, "shape": shape})
    outputs = io.BytesIO()
    np.save(outputs, np.zeros((2, 2), np.float32))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("observations.npy", header.getvalue() + data)
        archive.writestr("teacher_outputs.npy", outputs.getvalue())


def test_npz_header_claiming_too_much_memory_is_refused_before_loading(tmp_path):
    path = tmp_path / "huge.npz"
    write_npz_with_header(path, (2**40, 4))  # 16 TiB claimed, a few bytes stored
    message = one_line_error(path)
    assert "observations claims shape (1099511627776, 4)" in message
    assert "17,592,186,044,416 bytes, more than the 17,179,869,184 allowed" in message
    write_npz_with_header(path, (1000, 4), data=bytes(8 * 4))  # 16 kB claimed, 32 B held
    assert "the header is corrupt" in one_line_error(path)
    write_npz_with_header(path, (2, 4), data=bytes(2 * 4 * 4))
    with pytest.raises(DatasetFileError, match="the 16 allowed"):
        load_npz(path, max_bytes=16)


def test_npz_that_is_not_a_zip_or_is_a_directory_is_a_clear_error(tmp_path):
    npy = tmp_path / "array.npy"
    np.save(npy, np.zeros((2, 4), np.float32))
    assert "corrupt or unreadable .npz" in one_line_error(npy)
    assert "corrupt or unreadable .npz" in one_line_error(tmp_path)


def test_save_npz_is_atomic_and_appends_the_suffix(tmp_path, monkeypatch):
    path = tmp_path / "data.npz"
    save_npz(path, *labelled(5))
    before = path.read_bytes()

    def fail(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez_compressed", fail)
    with pytest.raises(KeyboardInterrupt):
        save_npz(path, *labelled(7))
    monkeypatch.undo()
    assert path.read_bytes() == before  # the previous file is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.npz"]  # no temporary left
    assert save_npz(tmp_path / "plain", *labelled(3)) == tmp_path / "plain.npz"
    assert len(load_npz(tmp_path / "plain.npz")[0]) == 3


def test_buffer_and_dataset_reject_non_finite_or_non_numeric_observations():
    buffer = DistillationBuffer(10, (4,), 2)
    with pytest.raises(ValueError, match="observations contain NaN"):
        buffer.add(np.full((1, 4), np.nan), np.zeros((1, 2)))
    with pytest.raises(ValueError, match="not numeric"):
        to_tf_dataset(np.array([["a"] * 4]), np.zeros((1, 2)), batch_size=1)


def test_tf_dataset_order_is_fixed_by_its_seed():
    def order(seed):
        dataset = to_tf_dataset(*labelled(50), batch_size=50, seed=seed)
        return [x[:, 0].tolist() for x, _ in dataset.take(1).as_numpy_iterator()]

    assert order(0) == order(0) and order(0) != order(1)
