"""IDX reading and the train / validation split."""

import numpy as np
import pytest

from reg_runner.data import idx, mnist
from reg_runner.data.indices import split_indices
from reg_runner.errors import ConfigError, DataError


@pytest.mark.parametrize("name", ["a.idx", "a.idx.gz"])
def test_idx_round_trip(tmp_path, name):
    array = np.random.default_rng(0).integers(0, 256, size=(5, 3, 4)).astype(np.uint8)
    idx.write(tmp_path / name, array)
    np.testing.assert_array_equal(idx.read(tmp_path / name), array)


def test_idx_rejects_wrong_magic_and_truncation(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x01\x02\x08\x01abcd")
    with pytest.raises(DataError, match="wrong magic"):
        idx.read(tmp_path / "bad")
    idx.write(tmp_path / "ok", np.zeros((4, 2), np.uint8))
    (tmp_path / "cut").write_bytes((tmp_path / "ok").read_bytes()[:-1])
    with pytest.raises(DataError, match=r"header says shape \(4, 2\) \(8 bytes of data\), file has 7"):
        idx.read(tmp_path / "cut")


def test_find_files_accepts_every_naming(tmp_path):
    for f in mnist.FILES[:2]:
        idx.write(tmp_path / f"{f.key}.idx", np.zeros(3, np.uint8))  # datamaestro's names
    for f in mnist.FILES[2:]:
        idx.write(tmp_path / f"{f.original}.gz", np.zeros(3, np.uint8))  # LeCun's, compressed
    assert set(mnist.find_files(tmp_path)) == {f.key for f in mnist.FILES}


def test_split_is_a_partition_drawn_by_split_seed():
    labels = np.random.default_rng(1).integers(0, 10, 1000)
    train, val = split_indices(labels, 0.05, seed=0)
    assert len(train) == 50 and len(val) == 950
    assert len(np.union1d(train, val)) == 1000 and len(np.intersect1d(train, val)) == 0
    again, _ = split_indices(labels, 0.05, seed=0)
    other, _ = split_indices(labels, 0.05, seed=1)
    np.testing.assert_array_equal(train, again)
    assert not np.array_equal(train, other)


def test_stratified_split_keeps_class_proportions():
    labels = np.repeat(np.arange(10), [100, 200, 100, 100, 100, 100, 100, 100, 100, 300])
    train, _ = split_indices(labels, 0.1, seed=0, stratified=True)
    counts = np.bincount(labels[train], minlength=10)
    np.testing.assert_array_equal(counts, [10, 20, 10, 10, 10, 10, 10, 10, 10, 30])


def test_val_size_caps_the_validation_set():
    labels = np.zeros(1000, int)
    train, val = split_indices(labels, 0.1, seed=0, val_size=30)
    assert len(val) == 30 and len(np.intersect1d(train, val)) == 0


def test_a_fraction_too_small_for_the_data():
    with pytest.raises(ConfigError, match="selects no image of 100"):
        split_indices(np.zeros(100, int), 0.001, seed=0)


def test_a_signal_during_place_says_whether_the_store_is_complete(tmp_path):
    """A signal held while the store's files are written ends the command after them: its line must not say
    that nothing was written."""
    from reg_runner import signals
    from reg_runner.data import mnist
    from reg_runner.data.__main__ import store_state

    what = store_state(tmp_path)
    assert what() == signals.NOTHING
    for f in mnist.FILES:
        (tmp_path / f"{f.key}.idx").write_bytes(b"\0" * f.size)
    assert what() == f"with the store complete: {tmp_path}"
