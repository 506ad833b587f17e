"""Model and data families through the assembly seam: every model family on every data family, in each
dataset's own file format; damaged files; the store; a family no file of reg_runner knows."""

import functools
import gzip
import hashlib
import http.server
import json
import os
import pickle
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import (CLI, ROOT, call_in_process, killable, make_tiny_cifar, make_tiny_mnist, read_metrics, tiny,
                      wait_for_epoch, without_timing)

from reg_runner import resume
from reg_runner.data import idx
from reg_runner.errors import DataError

FAMILIES = Path(__file__).parent / "families"
IDX_FAMILIES = ("mnist", "fashion_mnist", "kmnist")
CONF = ROOT / "conf"
MODEL_FAMILIES = sorted(p.stem for p in (CONF / "model").glob("*.yaml"))  # a family is its module and its yaml


@pytest.fixture(scope="module")
def roots(tmp_path_factory) -> dict[str, Path]:
    """Tiny files of each data family, in its original format (IDX .gz; CIFAR's pickled batches in their tar.gz)."""
    base = tmp_path_factory.mktemp("families")
    out = {name: make_tiny_mnist(base / name, seed=i) for i, name in enumerate(IDX_FAMILIES)}
    out["cifar10"] = make_tiny_cifar(base / "cifar10", archive=True)
    return out


def compose(*overrides):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from reg_runner import cli

    with initialize_config_dir(config_dir=cli.CONFIG_DIR, version_base=None):
        return hydra_compose("config", overrides=list(overrides))


@pytest.mark.parametrize("data", [*IDX_FAMILIES, "cifar10"])
@pytest.mark.parametrize("model", MODEL_FAMILIES)
def test_every_model_family_trains_on_every_data_family(roots, tmp_path, model, data):
    from reg_runner.run import Job, run_stack

    norm = ["model.norm=batchnorm"] if "norm:" in (CONF / "model" / f"{model}.yaml").read_text() else []
    extra = ["augmentation=crop", "augmentation.flip=true", *norm] if data == "cifar10" else []
    settings = (f"model={model}", f"data={data}", f"data.root={roots[data]}", *tiny("trainer.batch_size=20"), *extra)
    cfg = compose(*settings, "logging.histograms=2")
    run_stack([Job(cfg, tmp_path / "run")])
    m = read_metrics(tmp_path / "run")
    assert m["status"] == "completed" and m["epochs_run"] == 2
    shape = [3, 32, 32] if data == "cifar10" else [1, 8, 8]
    names = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST", "kmnist": "KMNIST", "cifar10": "CIFAR-10"}
    assert m["data"]["dataset"] == names[data] and m["data"]["image_shape"] == shape and m["data"]["n_classes"] == 10
    assert len(m["data"]["mean"]) == shape[0]
    assert all(np.isfinite([m["final"]["train/loss"], m["final"]["val/loss"]]))
    # the parameter count the memory check makes on the meta device, before anything is allocated, is the network's
    built = compose(*settings)
    from reg_runner import checks
    from reg_runner.model import dry_run

    checked = checks.check(built, through=3)
    net = checked.cfg.model.plain(checked.split.shape, checked.split.n_classes)
    assert m["n_parameters"] == sum(p.numel() for p in net.parameters()) == dry_run.footprint(
        checked.cfg.model, checked.split.shape, checked.split.n_classes, 20, 20, 5).n_parameters


def test_cifar_is_read_from_its_archive_its_folder_or_its_files_and_normalized_per_channel(tmp_path):
    from reg_runner import data as data_group
    from reg_runner.data import split as split_lib
    from reg_runner.data.cifar10 import CIFAR10

    archive = make_tiny_cifar(tmp_path / "a", archive=True)
    folder = make_tiny_cifar(tmp_path / "f", archive=False)
    a, f = CIFAR10.read(str(archive)), CIFAR10.read(str(folder))
    b = CIFAR10.read(str(folder / "cifar-10-batches-py"))
    for images in (f, b):
        np.testing.assert_array_equal(a.train_images, images.train_images)
        np.testing.assert_array_equal(a.test_labels, images.test_labels)
    assert a.train_images.shape == (100, 3, 32, 32) and a.test_images.shape == (40, 3, 32, 32)
    cfg = data_group.parse_config(dict(_target_="reg_runner.data.cifar10.CIFAR10", root=str(archive),
                                       train_fraction=0.3, val_size=None, split_seed=0, stratified=False,
                                       normalize=True, verify=False))  # tiny files: not the published ones
    split = split_lib.split(cfg)
    pixels = a.train_images[split.train_idx].astype(np.float64) / 255
    np.testing.assert_allclose(split.mean, pixels.mean((0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(split.std, pixels.std((0, 2, 3), ddof=1), rtol=1e-12)
    everything = a.train_images.astype(np.float64).mean((0, 2, 3)) / 255
    assert not np.allclose(split.mean, everything, rtol=1e-6)  # the training subset's statistics, not the set's
    from reg_runner.data import tensors

    data = tensors.load(cfg, torch.device("cpu"))
    assert data.train.x.shape == (30, 3, 32, 32)
    torch.testing.assert_close(data.train.x.mean((0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)


def _idx_case(tmp_path, name, damage):
    folder = make_tiny_mnist(tmp_path / name, n_train=50, n_test=20)
    damage(folder)
    return folder


IDX_DAMAGE = [
    ("magic", lambda f: gzip.open(f / "train-images-idx3-ubyte.gz", "wb").write(b"<html>not found</html>"),
     r"train-images-idx3-ubyte.gz is not an IDX file \(wrong magic number"),
    ("size", lambda f: (f / "t10k-images-idx3-ubyte.gz").write_bytes(
        gzip.compress(gzip.open(f / "t10k-images-idx3-ubyte.gz").read()[:-7])),
     r"t10k-images-idx3-ubyte.gz is truncated or corrupt: header says shape \(20, 8, 8\)"),
    ("range", lambda f: idx.write(f / "train-labels-idx1-ubyte.gz", np.array([3] * 7 + [10] + [1] * 42, np.uint8)),
     r"train-labels-idx1-ubyte.gz: train label 10 out of range; labels must be 0-9 \(index 7 is the first bad one\)"),
    ("dtype", lambda f: (f / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(
        bytes([0, 0, 0x0D, 3]) + np.array([50, 8, 8], ">u4").tobytes() + np.zeros((50, 8, 8), ">f4").tobytes())),
     r"train-images-idx3-ubyte.gz holds >f4 values: .*images are unsigned bytes"),
]


def test_a_family_whose_keys_do_not_hash_is_split(tiny_data):
    """A user's data family may declare a key that does not hash (a list): the split is shared between the checks and
    the run by the keys it reads, not by the whole config."""
    from reg_runner.data import split as split_lib
    from reg_runner.data.mnist import MNIST

    class Tagged(MNIST):
        sources: list[str]

    cfg = Tagged.model_validate(dict(_target_="tests.Tagged", root=str(tiny_data), train_fraction=0.2, val_size=None,
                                     split_seed=0, stratified=False, normalize=True, verify=False, sources=["a", "b"]))
    assert len(split_lib.split(cfg).train_idx) == 100 and split_lib.split(cfg) is split_lib.split(cfg)


@pytest.mark.parametrize("family", ["fashion_mnist", "kmnist"])
@pytest.mark.parametrize("case,damage,expected", IDX_DAMAGE, ids=[c[0] for c in IDX_DAMAGE])
def test_damaged_idx_files_get_one_line_naming_the_file(tmp_path, family, case, damage, expected):
    from reg_runner.data.fashion_mnist import FashionMNIST
    from reg_runner.data.kmnist import KMNIST

    folder = _idx_case(tmp_path, case, damage)
    with pytest.raises(DataError, match=expected) as e:
        {"fashion_mnist": FashionMNIST, "kmnist": KMNIST}[family].read(str(folder))
    assert "\n" not in str(e.value)


def test_labels_stored_as_fractions_are_refused_not_truncated(tmp_path):
    from reg_runner.data.mnist import MNIST

    folder = make_tiny_mnist(tmp_path / "f", n_train=50, n_test=20)
    labels = np.arange(50) % 10 + 0.0
    labels[4] = 8.5
    header = bytes([0, 0, 0x0D, 1]) + np.array([50], ">u4").tobytes()
    (folder / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(header + labels.astype(">f4").tobytes()))
    with pytest.raises(DataError, match=r"train label 8.5 is not an integer; .*\(index 4 is the first bad one\)"):
        MNIST.read(str(folder))
    labels[4] = 8.0  # integer-valued floats are labels like any other
    (folder / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(header + labels.astype(">f4").tobytes()))
    assert MNIST.read(str(folder)).train_labels[4] == 8


def _batch(rows=20, row_bytes=3072, labels=None, extra=None):
    data = np.zeros((rows, row_bytes), np.uint8)
    return pickle.dumps({b"data": data, b"labels": labels if labels is not None else [1] * rows, **(extra or {})},
                        protocol=2)


class _Evil:
    def __reduce__(self):
        return (print, ("a pickle that runs code",))


CIFAR_DAMAGE = [
    ("not a pickle", b"<html>not found</html>", r"data_batch_2 is not a CIFAR-10 batch \(UnpicklingError"),
    ("code", pickle.dumps({b"data": _Evil()}), r"data_batch_2 is not a CIFAR-10 batch \(UnpicklingError: it refers "
                                               r"to builtins.print, which a CIFAR batch never holds"),
    ("row size", _batch(row_bytes=1024), r"data_batch_2: its images are uint8 \(20, 1024\); CIFAR-10's are uint8 rows"),
    ("range", _batch(labels=[1] * 5 + [-1] + [1] * 14), r"data_batch_2: train label -1 out of range; labels must be "
                                                          r"0-9 \(index 5 is the first bad one\)"),
    ("count", _batch(labels=[1] * 3), r"data_batch_2: 20 images but labels of shape \(3,\)"),
]


@pytest.mark.parametrize("case,raw,expected", CIFAR_DAMAGE, ids=[c[0] for c in CIFAR_DAMAGE])
def test_damaged_cifar_batches_get_one_line_naming_the_file(tmp_path, capsys, case, raw, expected):
    from reg_runner.data.cifar10 import CIFAR10

    folder = make_tiny_cifar(tmp_path / "c")
    (folder / "cifar-10-batches-py" / "data_batch_2").write_bytes(raw)
    with pytest.raises(DataError, match=expected):
        CIFAR10.read(str(folder))
    assert "runs code" not in capsys.readouterr().out  # the pickle's code never ran


def test_damaged_or_incomplete_cifar_folders(tmp_path):
    from reg_runner.data.cifar10 import CIFAR10

    folder = make_tiny_cifar(tmp_path / "c")
    (folder / "cifar-10-batches-py" / "test_batch").unlink()
    with pytest.raises(DataError, match=r"lacks test_batch of CIFAR-10; download cifar-10-python.tar.gz from "):
        CIFAR10.read(str(folder))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds neither cifar-10-python.tar.gz nor cifar-10-batches-py/"):
        CIFAR10.read(str(tmp_path / "empty"))
    archive = make_tiny_cifar(tmp_path / "a", archive=True) / "cifar-10-python.tar.gz"
    archive.write_bytes(archive.read_bytes()[:300])
    with pytest.raises(DataError, match="cannot read .*cifar-10-python.tar.gz as a tar.gz archive"):
        CIFAR10.read(str(archive.parent))


def _one_line(proc, expected: str):
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert expected in lines[0], lines[0]


def test_a_damaged_batch_and_a_dataset_offline_each_stop_the_cli_in_one_line_before_any_folder(tmp_path, tiny_data):
    cli = CLI(tmp_path, None)
    folder = make_tiny_cifar(tmp_path / "c")
    (folder / "cifar-10-batches-py" / "test_batch").write_bytes(_batch(row_bytes=100))
    proc = cli("data=cifar10", f"data.root={folder}", *tiny(), check=False)
    _one_line(proc, "test_batch: its images are uint8 (20, 100); CIFAR-10's are uint8 rows of 3072 bytes")
    assert not proc.run_dir.exists()
    # not in the store and no network: the dataset, where it would come from, and what to place in data.root
    cli.env.update(HTTP_PROXY="http://127.0.0.1:9", HTTPS_PROXY="http://127.0.0.1:9")  # offline, even where online
    proc = cli("data=kmnist", *(o for o in tiny() if o != "data.verify=false"), check=False)  # no data.root
    _one_line(proc, "KMNIST is not in the datamaestro store (")
    assert "cannot be downloaded here" in proc.stderr and "give data.root=" in proc.stderr
    assert "t10k-labels-idx1-ubyte" in proc.stderr and "http://codh.rois.ac.jp/kmnist/dataset/kmnist/" in proc.stderr
    assert not proc.run_dir.exists()


class _Files(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_a_download_lands_in_the_store_checked_and_a_wrong_checksum_leaves_nothing(tmp_path):
    """The download path, for real, from a server on loopback: datamaestro fetches each .gz into its store, the md5
    is checked, and the files are read from there; a file whose md5 is not the published one is refused and
    removed."""
    served = make_tiny_mnist(tmp_path / "served", n_train=60, n_test=20)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Files, directory=str(served)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    md5 = {key: hashlib.md5((served / f"{name}.gz").read_bytes()).hexdigest() for key, name in
           (("train_images", "train-images-idx3-ubyte"), ("train_labels", "train-labels-idx1-ubyte"),
            ("test_images", "t10k-images-idx3-ubyte"), ("test_labels", "t10k-labels-idx1-ubyte"))}
    # both datasets read in one process (a process's start-up costs more than the reads), each as its own family
    script = """
import json, sys
from reg_runner.data import store
from reg_runner.data.idx_dataset import IdxDataset, idx_definition
from reg_runner.errors import DataError

def read(url, md5, dataset_id):
    class Served(IdxDataset):
        NAME = "Served"
        CLASSES = tuple("0123456789")
        URL = url
        GZ_MD5 = md5
        @classmethod
        def store_files(cls):
            definition = idx_definition(cls, dataset_id)
            config = store.fetch(definition, cls.NAME, cls.GZ_MD5, cls.hint())
            return {"train_images": config.train.images.path, "train_labels": config.train.labels.path,
                    "test_images": config.test.images.path, "test_labels": config.test.labels.path}, "store"
    try:
        images = Served.read(None)
        return dict(n=len(images.train_labels), labels=images.test_labels.tolist())
    except DataError as e:
        return dict(error=str(e))

print(json.dumps([read(sys.argv[1], md5, dataset_id) for md5, dataset_id in json.loads(sys.argv[2])]))
"""
    env = {"DATAMAESTRO_DIR": str(tmp_path / "store"), "PATH": "/usr/bin:/bin", "NO_PROXY": "127.0.0.1"}
    if "PYTHONPATH" in os.environ:  # the checkout under test, where it is not the installed one
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    wrong = dict(md5, test_labels="0" * 32)
    try:
        proc = subprocess.run([sys.executable, "-c", script, url,
                               json.dumps([(md5, "test.served"), (wrong, "test.wrong")])],
                              env=env, capture_output=True, text=True, timeout=120)
    finally:
        server.shutdown()
    assert proc.returncode == 0, proc.stderr[-2000:]
    result, bad = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["n"] == 60 and result["labels"] == idx.read(served / "t10k-labels-idx1-ubyte.gz").tolist()
    stored = tmp_path / "store" / "data" / "__custom__" / "reg_runner" / "test" / "served"
    assert sorted(p.name for p in stored.iterdir()) == ["test_images.idx.gz", "test_labels.idx.gz",
                                                       "train_images.idx.gz", "train_labels.idx.gz"]
    assert bad.get("error", "").startswith("Served is not in the datamaestro store") and "md5" in bad["error"], bad
    assert not (tmp_path / "store" / "data" / "__custom__" / "reg_runner" / "test" / "wrong" /
                "test_labels.idx.gz").exists()


# --- a family no file of reg_runner knows -----------------------------------------------------------------


def test_a_plain_module_trains_through_the_cli_shown_by_module_name(tmp_path, monkeypatch):
    """LeNet-5 written as a plain nn.Module, named by model._target_: its keyword arguments from the command line,
    in_channels and num_classes from the data; TensorBoard shows its Linear and convolution layers by module path
    (what L1/L2 and the landscapes act on too)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cli = CLI(tmp_path, make_tiny_mnist(tmp_path / "data", side=28))
    # through the real CLI, in its own process: what a user types, the module found on PYTHONPATH
    cli.env["PYTHONPATH"] = os.pathsep.join([str(FAMILIES), *filter(None, [os.environ.get("PYTHONPATH")])])
    proc = cli("~model", "+model._target_=lenet.LeNet5", "+model.width=4", "logging.histograms=1", in_process=False)
    monkeypatch.syspath_prepend(str(FAMILIES))  # the class, for its parameter count and the landscapes here
    m = read_metrics(proc.run_dir)
    assert m["status"] == "completed" and m["epochs_run"] == 2 and np.isfinite(m["final"]["val/loss"])
    from lenet import LeNet5

    assert m["n_parameters"] == sum(p.numel() for p in LeNet5(1, 10, width=4).parameters())
    recorded = (proc.run_dir / "resolved_config.yaml").read_text()
    assert "model:\n  _target_: lenet.LeNet5\n  width: 4\n" in recorded
    events = EventAccumulator(str(proc.run_dir), size_guidance={"histograms": 0}).Reload()
    layers = ["features.0", "features.3", "classifier.1", "classifier.4", "classifier.6"]
    weights = [t for t in events.Tags()["histograms"] if t.startswith("hist/weight/")]
    assert weights == [f"hist/weight/{n}" for n in layers]
    # the landscapes (in this process) load its checkpoint into the class and normalize its filters
    from reg_runner import landscape

    landscape.main([str(proc.run_dir), "--grid", "3", "--dims", "1", "--out", str(tmp_path / "land")])
    result = json.loads((tmp_path / "land" / "landscape.json").read_text())
    assert result["center"]["loss"] == pytest.approx(m["best"]["train/loss"], rel=0.5)
    assert len(result["curve"]["loss"]) == 3


def test_the_range_test_runs_on_a_plain_module(tmp_path, monkeypatch):
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from reg_runner import cli
    from reg_runner.lr_find.__main__ import range_test

    monkeypatch.syspath_prepend(str(FAMILIES))
    data = make_tiny_mnist(tmp_path / "data", side=28)
    with initialize_config_dir(config_dir=cli.CONFIG_DIR, version_base=None):
        own = [o for o in tiny() if not o.startswith("trainer.epochs=")]  # the range test runs lr_find.steps
        cfg = compose("lr_find", overrides=[f"data.root={data}", *own, "~model", "+model._target_=lenet.LeNet5",
                                            "lr_find.steps=20"])
    result = range_test(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), tmp_path)
    assert len(result["losses"]) == 20 and result["initial_loss"] == pytest.approx(2.3, abs=0.3)


@pytest.mark.slow  # stacks, lone runs and a kill of a family's runs
def test_a_throwaway_model_family_trains_stacks_and_resumes(tmp_path, tiny_data, monkeypatch):
    cli = CLI(tmp_path, tiny_data)
    # for the processes the test starts (and the path they had); sys.path for the commands run in this one
    cli.env["PYTHONPATH"] = os.pathsep.join([str(FAMILIES), *filter(None, [os.environ.get("PYTHONPATH")])])
    monkeypatch.syspath_prepend(str(FAMILIES))
    family = ("model=throwaway", f"hydra.searchpath=[file://{FAMILIES}]", "optimizer.lr=0.01")
    sweep = cli("--multirun", *family, "seed=0,1", "model.dropout=0.0,0.3", "hydra/launcher=stacked",
                run_dir=tmp_path / "stacked")
    assert "stacked launcher: 4 jobs in 1 stacks" in sweep.stdout + sweep.stderr
    runs = sorted(p for p in sweep.run_dir.iterdir() if p.is_dir())
    lone = cli(*family, "seed=1", "model.dropout=0.3", run_dir=tmp_path / "lone").run_dir
    member = next(r for r in runs if read_metrics(r)["seed"] == 1 and "model.dropout=0.3" in r.name)
    assert without_timing(read_metrics(member)) == without_timing(read_metrics(lone))
    assert read_metrics(member)["timing"]["stack_size"] == 4 and read_metrics(lone)["n_parameters"] == 64 * 10 + 10
    # killed, then resumed: the numbers of the uninterrupted run
    uninterrupted = cli(*family, "model.dropout=0.3", "trainer.epochs=40", "trainer.checkpoint_every=5",
                        run_dir=tmp_path / "whole").run_dir
    argv = [f"data.root={tiny_data}", *tiny("trainer.epochs=40"), *family, "model.dropout=0.3",
            "trainer.checkpoint_every=5", f"hydra.run.dir={tmp_path / 'killed'}"]
    proc = killable(argv, tmp_path, cli.env)
    try:
        wait_for_epoch(tmp_path / "killed", 10, proc)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert read_metrics(tmp_path / "killed")["epochs_run"] < 40
    # the resume in this process (the real resume command: tests/test_resume.py)
    resumed = call_in_process(resume.main, ["python -m reg_runner.resume", str(tmp_path / "killed")], tmp_path,
                              cli.env)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert without_timing(read_metrics(tmp_path / "killed")) == without_timing(read_metrics(uninterrupted))
    assert not any(p.name.startswith("throwaway") for p in (ROOT / "reg_runner").rglob("*"))


def test_the_memory_a_network_takes_is_measured_on_the_meta_device_as_on_the_cpu(monkeypatch):
    """LeNet-5 on the meta device (shapes only), and a copy whose code reads a value, which the meta device cannot
    run: it is run on the CPU on two images and scaled. Both give the same footprint: the count of the meta device
    is the CPU's."""
    from reg_runner.model import dry_run, parse_config

    monkeypatch.syspath_prepend(str(FAMILIES))
    meta = dry_run.footprint(parse_config({"_target_": "lenet.LeNet5"}), (1, 28, 28), 10, 20, 40, 5)
    cpu = dry_run.footprint(parse_config({"_target_": "lenet.LeNet5Checked"}), (1, 28, 28), 10, 20, 40, 5)
    assert cpu == meta and meta.n_parameters == 61706 and meta.parameters == 61706 * 4 * 5
    # what a training batch keeps for its backward pass: each layer's input, ReLU's outputs, the pools' indices
    assert meta.training > 20 * (6 * 28 * 28 + 16 * 10 * 10) * 4


@pytest.mark.slow  # a copy of the project, the reference regenerated and the tests that list families, run there
def test_a_new_built_in_family_is_its_module_and_its_yaml(tmp_path):
    """A contributor adds ``reg_runner/model/softmax.py`` and ``conf/model/softmax.yaml`` to a copy of the project
    and edits nothing else: the help lists it, a refusal offers it, it trains, the reference documents it once
    regenerated (a generated file), and the tests that list or count families pass unchanged."""
    import shutil

    tree = tmp_path / "tree"
    shutil.copytree(ROOT, tree, ignore=shutil.ignore_patterns(".git", "outputs", "site", "*.egg-info", "__pycache__",
                                                              ".pytest_cache", "multirun"))
    shutil.copy(FAMILIES / "builtin" / "softmax.py", tree / "reg_runner" / "model" / "softmax.py")
    shutil.copy(FAMILIES / "builtin" / "softmax.yaml", tree / "conf" / "model" / "softmax.yaml")
    env = {**os.environ, "PYTHONPATH": str(tree), "DATAMAESTRO_DIR": str(tmp_path / "datamaestro")}
    # one process of the copy (a process's start-up costs more than what it checks here): `python -m reg_runner.docs`
    # regenerates the reference, then the tests run; the refusal and the training are the copy's own tests, in-process
    # through the CLI's entry point (test_private's one-line refusals, test_every_model_family_trains_on_...)
    script = "import sys, pytest\nfrom reg_runner import docs\ndocs.main([])\nsys.exit(pytest.main(sys.argv[1:]))"
    tests = subprocess.run(
        [sys.executable, "-c", script, "-v", "-n", "0", "-p", "no:cacheprovider", f"--basetemp={tmp_path / 'tests'}",
         "tests/test_help.py", "tests/test_docs.py",
         "tests/test_private.py::test_a_missing_group_option_carries_the_file_and_the_options",
         "tests/test_private.py::test_hydras_errors_become_one_line_and_the_users_setting_comes_back",
         "tests/test_families.py::test_every_model_family_trains_on_every_data_family", "-k",
         "not cifar and not fashion and not kmnist"], cwd=tree, env=env, capture_output=True, text=True, timeout=600)
    assert tests.returncode == 0, tests.stdout[-2000:] + tests.stderr[-2000:]
    assert f"written: {tree / 'docs' / 'reference.md'}" in tests.stdout, tests.stdout[:2000]
    assert "Schema: `reg_runner.model.softmax.Softmax`." in (tree / "docs" / "reference.md").read_text()
    passed = [line for line in tests.stdout.splitlines() if " PASSED" in line]
    # the tests that list the families (the helps: tests/test_help.py) list it
    assert any("test_help_lists_every_group_with_its_options PASSED" in line for line in passed), tests.stdout[-2000:]
    assert any("test_lr_find_help_lists_only_the_groups_it_reads PASSED" in line for line in passed)
    # a refusal offers it: the one line the CLI prints for model=resnet, from the copy's own options
    assert any("model=resnet is not allowed: one of cnn, mlp, softmax" in line for line in passed), tests.stdout[-3000:]
    # and it trains there: its run's record (the copy's tests' temp folder) counts its 8 x 8 x 10 + 10 parameters
    assert any("softmax" in line and "mnist" in line for line in passed), tests.stdout[-2000:]
    runs = [p.parent for p in (tmp_path / "tests").rglob("resolved_config.yaml")
            if "reg_runner.model.softmax.Softmax" in p.read_text()]
    assert len(runs) == 1 and read_metrics(runs[0])["n_parameters"] == 64 * 10 + 10, runs
