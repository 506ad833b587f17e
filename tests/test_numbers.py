"""What keys do to the numbers, in this process, on the tiny data: weight decay shrinks the weights as its optimizer
defines it, accumulating k batches is one batch k times larger, and the test split is the dataset's test files.
Each pins a one-line bug that would change a run's numbers without a word (benchmarks/mutations.py plants them)."""

import hashlib

import numpy as np
import pytest
import torch
from conftest import read_metrics, tiny

from reg_runner import checks
from reg_runner import config as config_lib
from reg_runner.assembly import Job, assemble
from reg_runner.data import idx
from reg_runner.errors import CONFIG_DIR
from reg_runner.trainer.engine import Engine

PLAIN = ["model.norm=none", "model.dropout=0", "augmentation=none", "logging.histograms=0",
         "logging.tensorboard=false"]


def trained(data, tmp_path, *overrides) -> tuple[dict, dict]:
    """One run of ``overrides`` (on PLAIN and the tiny data) through the engine: its network before and after."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR):
        cfg = compose("config", overrides=tiny(f"data.root={data}", *PLAIN, *overrides))
    checked = checks.check(cfg, list(overrides), through=3)
    built = assemble([Job(cfg, tmp_path / "run", checked=checked, recorded=config_lib.as_data(cfg))])
    states = {}

    class Keep:
        def start(self, engine):
            states["before"] = engine.model.member_state(0)

        def epoch(self, engine, result): pass
        def close(self, engine): pass

        def member_end(self, engine, member, k):
            states["after"] = engine.model.member_state(k)

    Engine(built.model, built.data, built.members, [Keep()]).run()
    return states["before"], states["after"]


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_weight_decay_shrinks_the_weights_as_its_optimizer_defines(tiny_data, tmp_path, optimizer):
    """One step (the whole training subset in one batch) with and without optimizer.weight_decay=w: SGD adds w·θ to
    the gradient and AdamW multiplies θ by 1 - lr·w before its step, so the two runs differ by exactly -lr·w·θ0,
    in every tensor, biases too."""
    lr, w = 0.1, 0.5
    one_step = [f"optimizer={optimizer}", f"optimizer.lr={lr}", "trainer.batch_size=100", "trainer.epochs=1"]
    if optimizer == "sgd":
        one_step.append("optimizer.momentum=0")
    before, decayed = trained(tiny_data, tmp_path / "decayed", *one_step, f"optimizer.weight_decay={w}")
    same, plain = trained(tiny_data, tmp_path / "plain", *one_step, "optimizer.weight_decay=0")
    for name, theta0 in before.items():
        assert torch.equal(theta0, same[name]), name  # the same initial network
        torch.testing.assert_close(decayed[name] - plain[name], -lr * w * theta0, rtol=1e-4, atol=1e-6, msg=name)
    assert any(t.abs().max() > 0.05 for t in before.values())  # a decay to see


@pytest.mark.parametrize("scaling", ["none", "linear"])
def test_accumulating_k_batches_is_one_batch_k_times_larger(tiny_data, tmp_path, scaling):
    """100 images: 4 batches of 25 accumulated 3 at a time (a group of 3, then the last, partial group of 1) take
    the steps that batches of 75 take (75, then the last 25), on the same images in the same order; with
    lr_scaling, both scale by the same effective batch."""
    common = ["optimizer=sgd", "optimizer.momentum=0", "optimizer.lr=0.5", "trainer.epochs=2",
              f"optimizer.lr_scaling={scaling}"] + (["optimizer.base_batch_size=25"] if scaling != "none" else [])
    _, accumulated = trained(tiny_data, tmp_path / "acc", *common, "trainer.batch_size=25", "trainer.accumulate=3")
    before, large = trained(tiny_data, tmp_path / "large", *common, "trainer.batch_size=75")
    for name in large:
        torch.testing.assert_close(accumulated[name], large[name], rtol=1e-4, atol=1e-5, msg=name)
    assert max((large[n] - before[n]).abs().max() for n in large) > 1e-2  # it did train


def test_the_test_split_is_the_datasets_test_files(cli, tiny_data):
    """metrics.json's data.test_sha256 is the digest of the very arrays the test split is made of; here it is the
    test files' (images as uint8, then labels as int64), and never the validation images'."""
    m = read_metrics(cli("trainer.epochs=1").run_dir)
    images = idx.read(tiny_data / "t10k-images-idx3-ubyte.gz")
    labels = idx.read(tiny_data / "t10k-labels-idx1-ubyte.gz").astype(np.int64)
    assert m["data"]["test_sha256"] == hashlib.sha256(images.tobytes() + labels.tobytes()).hexdigest()
    assert m["data"]["n_test"] == len(labels)
