"""Every mistake a user can make gets one line naming the key, the value and what is allowed."""

import gzip
import shutil

import numpy as np
import pytest
from conftest import make_tiny_mnist

from reg_runner.data import idx

CONFIG_CASES = [
    ("model.norm=groupnorm", "model.norm='groupnorm' is not allowed: one of none, batchnorm, layernorm, rmsnorm"),
    ("model.dropout=1.0", "model.dropout=1.0 is not allowed: a number in [0, 1)"),
    ("model.dropout=-0.1", "model.dropout=-0.1 is not allowed: a number in [0, 1)"),
    ("model.activation=swish", "model.activation='swish' is not allowed: one of relu,"),
    ("model.init=zeros", "model.init='zeros' is not allowed: one of default,"),
    ("model.width=0", "model.width=0 is not allowed: an integer >= 1"),
    ("model.depth=2.5", "model.depth=2.5 is not allowed: an integer >= 0"),
    ("reg.l2=-1e-4", "reg.l2=-0.0001 is not allowed: a number in [0, inf)"),
    ("reg.l1=abc", "reg.l1='abc' is not allowed: a number in [0, inf)"),
    ("reg.apply_to=biases", "reg.apply_to='biases' is not allowed: one of weights, all"),
    ("data.train_fraction=0", "data.train_fraction=0 is not allowed: a number in (0, 1]"),
    ("data.train_fraction=1.5", "data.train_fraction=1.5 is not allowed: a number in (0, 1]"),
    ("data.val_size=0", "data.val_size=0 is not allowed: null or an integer >= 1"),
    ("trainer.batch_size=0", "trainer.batch_size=0 is not allowed: an integer >= 1"),
    ("trainer.epochs=0", "trainer.epochs=0 is not allowed: an integer >= 1"),
    ("trainer.eval_precision=fp16", "trainer.eval_precision='fp16' is not allowed: one of fp32, bf16"),
    ("trainer.device=tpu", "trainer.device='tpu' is not allowed: one of auto, cpu, cuda, cuda:N, mps"),
    ("optimizer.lr=0", "optimizer.lr=0 is not allowed: a number in (0, inf)"),
    ("seed=-1", "seed=-1 is not allowed: null or an integer >= 0"),
    ("objective=test/acc", "objective='test/acc' is not allowed: one of val/acc, val/loss"),
    ("scheduler.warmup_epochs=5", "scheduler.warmup_epochs=5 is not allowed: fewer than trainer.epochs=2"),
    ("optimizer.betas=[0.9,2.0]", "optimizer: torch.optim.Adam rejects"),
    ("augmentation=noise augmentation.p=1.5", "augmentation.p=1.5 is not allowed: a number in [0, 1]"),
    ("augmentation=noise augmentation.sigma=-1", "augmentation.sigma=-1 is not allowed: a number in [0, inf)"),
    ("augmentation=affine augmentation.scale=[1.2,0.8]", "augmentation.scale=[1.2, 0.8] is not allowed: [low, high]"),
    ("augmentation=affine augmentation.translate=1", "augmentation.translate=1 is not allowed: a number in [0, 1)"),
    # Hydra's own: composition and grammar errors, made one line too
    ("model=resnet", "Could not find 'model/resnet'; Available options in 'model': mlp"),
    ("optimizer=lbfgs", "Could not find 'optimizer/lbfgs'; Available options in 'optimizer': adagrad, adam,"),
    ("reg.l3=1", "Could not override 'reg.l3'; To append to your config use +reg.l3=1; Key 'l3' is not in struct"),
    ("model.norm=batchnorm,layernorm", "Ambiguous value for argument 'model.norm=batchnorm,layernorm'"),
    ("reg.l2=[1,2", "no viable alternative at input '[1,2'"),
]


def assert_one_line_error(proc, expected: str):
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert expected in lines[0]
    assert "Traceback" not in proc.stdout + proc.stderr


@pytest.mark.parametrize("override,expected", CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES])
def test_bad_config_value(cli, override, expected):
    proc = cli(*override.split(), check=False)
    assert_one_line_error(proc, expected)
    assert not (proc.run_dir / "metrics.json").exists()


def test_hydra_full_error_keeps_hydras_own_report(cli):
    cli.env["HYDRA_FULL_ERROR"] = "1"
    proc = cli("model=resnet", check=False)
    assert proc.returncode == 1 and "Traceback" in proc.stderr and "Config search path" in proc.stderr


def test_cuda_when_there_is_none(cli):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert_one_line_error(cli("trainer.device=cuda", check=False), "CUDA is not available on this machine")


def test_torchvision_augmentation_without_torchvision(cli):
    try:
        import torchvision  # noqa: F401
        pytest.skip("torchvision imports here")
    except Exception:
        pass
    proc = cli("augmentation=torchvision", check=False)
    assert_one_line_error(proc, "augmentation=torchvision needs torchvision, which cannot be imported here")


def _data_folder(tmp_path, name):
    return make_tiny_mnist(tmp_path / name, n_train=50, n_test=20)


def test_missing_data_folder(cli, tmp_path):
    proc = cli(f"data.root={tmp_path / 'nowhere'}", check=False)
    assert_one_line_error(proc, f"data.root='{tmp_path / 'nowhere'}' is not a folder; give data.root=")


def test_missing_file(cli, tmp_path):
    folder = _data_folder(tmp_path, "missing")
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    assert_one_line_error(cli(f"data.root={folder}", check=False), "lacks t10k-labels-idx1-ubyte (.gz or not)")


def test_wrong_magic(cli, tmp_path):
    folder = _data_folder(tmp_path, "magic")
    with gzip.open(folder / "train-images-idx3-ubyte.gz", "wb") as f:
        f.write(b"<html>not found</html>")
    assert_one_line_error(cli(f"data.root={folder}", check=False), "is not an IDX file (wrong magic number")


def test_truncated_file(cli, tmp_path):
    folder = _data_folder(tmp_path, "truncated")
    raw = gzip.open(folder / "train-images-idx3-ubyte.gz").read()
    (folder / "train-images-idx3-ubyte.gz").unlink()
    (folder / "train-images-idx3-ubyte").write_bytes(raw[:-100])  # uncompressed, cut short
    assert_one_line_error(cli(f"data.root={folder}", check=False), "is truncated or corrupt")


def test_truncated_gzip(cli, tmp_path):
    folder = _data_folder(tmp_path, "truncated_gz")
    path = folder / "train-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-20])
    assert_one_line_error(cli(f"data.root={folder}", check=False), "cannot read")


def test_labels_out_of_range(cli, tmp_path):
    folder = _data_folder(tmp_path, "labels")
    idx.write(folder / "train-labels-idx1-ubyte.gz", np.full(50, 12, dtype=np.uint8))
    assert_one_line_error(cli(f"data.root={folder}", check=False), "train label 12 out of range; labels must be 0-9")


def test_label_count_mismatch(cli, tmp_path):
    folder = _data_folder(tmp_path, "count")
    idx.write(folder / "t10k-labels-idx1-ubyte.gz", np.zeros(7, dtype=np.uint8))
    assert_one_line_error(cli(f"data.root={folder}", check=False), "20 test images but labels of shape (7,)")


def test_unwritable_run_folder(cli, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder")
    proc = cli(run_dir=blocker / "run", check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    shutil.rmtree(tmp_path / "run1", ignore_errors=True)
