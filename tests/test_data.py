"""IDX reading and the train / validation split."""

import numpy as np
import pytest

from reg_runner.data import idx, mnist
from reg_runner.data.split import split_indices
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


def test_a_data_folder_is_checked_against_the_published_md5s(tmp_path, monkeypatch):
    """data.verify: each file read from data.root against its dataset's published md5, one line naming the first
    that differs; MNIST by its uncompressed content (the package's copy is compressed again, and is MNIST)."""
    from conftest import make_tiny_cifar, make_tiny_mnist

    from reg_runner.data import cifar10, fashion_mnist, kmnist, store
    from reg_runner.data.split import read

    monkeypatch.setenv("DATAMAESTRO_DIR", str(tmp_path / "store"))
    store.check_published(mnist.MNIST, mnist.EMBEDDED)  # MNIST itself
    with pytest.raises(DataError, match=rf"^{mnist.EMBEDDED}/train-images-idx3-ubyte.gz is not Fashion-MNIST's "
                                        r"train-images-idx3-ubyte.gz: its md5 is 56f11203c65dcbeead45b51e76a4d637, not "
                                        r"the published 8d4fb7e6c68d591d4c3dfef9ec88bf0d; give the files as published, "
                                        r"or data.verify=false to train on a modified copy knowingly$"):
        store.check_published(fashion_mnist.FashionMNIST, mnist.EMBEDDED)  # MNIST's files taken for Fashion-MNIST
    tiny = make_tiny_mnist(tmp_path / "tiny", n_train=50, n_test=20)
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte.gz is not MNIST's train-images-idx3-ubyte: its "
                                        r"uncompressed content's md5 is \w+, not the published 6bbc9ace"):
        read(mnist.MNIST, str(tiny), True)
    assert len(read(mnist.MNIST, str(tiny), False).train_labels) == 50  # data.verify=false: as it is, knowingly
    plain = make_tiny_mnist(tmp_path / "plain", n_train=50, n_test=20, gz=False)
    with pytest.raises(DataError, match="train-images-idx3-ubyte has no published md5 to be checked against "
                                        r"\(KMNIST publishes t10k-images-idx3-ubyte.gz, "):
        store.check_published(kmnist.KMNIST, plain)  # only its .gz files are published
    for archive in (False, True):
        folder = make_tiny_cifar(tmp_path / f"cifar{archive}", archive=archive)
        first = "cifar-10-python.tar.gz" if archive else "cifar-10-batches-py/data_batch_1"
        with pytest.raises(DataError, match=rf"/{first} is not CIFAR-10's {first.rpartition('/')[2]}: its md5 "):
            store.check_published(cifar10.CIFAR10, folder)


def test_a_files_md5_is_computed_once_for_its_size_and_modification_time(tmp_path, monkeypatch):
    import os
    import shutil

    from reg_runner.data import store

    monkeypatch.setenv("DATAMAESTRO_DIR", str(tmp_path / "store"))
    folder = tmp_path / "mnist"
    shutil.copytree(mnist.EMBEDDED, folder)
    store.check_published(mnist.MNIST, folder)
    assert store.cache_file() == tmp_path / "store" / "reg_runner" / "md5.json" and store.cache_file().is_file()
    read = []
    real = idx.read_bytes
    monkeypatch.setattr(idx, "read_bytes", lambda path: read.append(path.name) or real(path))
    store.check_published(mnist.MNIST, folder)
    assert read == []  # remembered: nothing read again
    labels = folder / "t10k-labels-idx1-ubyte.gz"
    os.utime(labels, ns=(labels.stat().st_atime_ns, labels.stat().st_mtime_ns + 10**9))
    store.check_published(mnist.MNIST, folder)
    assert read == [labels.name]  # changed (its time): read again, and still MNIST's
    store.cache_file().write_text("{not json")  # a damaged cache costs a computation, nothing else
    store.check_published(mnist.MNIST, folder)
    assert len(read) == 5


def test_a_refused_folder_leaves_nothing_remembered(tmp_path, monkeypatch):
    from conftest import make_tiny_mnist

    from reg_runner.data import store

    monkeypatch.setenv("DATAMAESTRO_DIR", str(tmp_path / "store"))
    with pytest.raises(DataError, match="is not MNIST's"):
        store.check_published(mnist.MNIST, make_tiny_mnist(tmp_path / "tiny", n_train=50, n_test=20))
    assert not (tmp_path / "store").exists()
