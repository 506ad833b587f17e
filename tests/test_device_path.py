"""What the CPU can check of the device path: the training loop's hot path (``Engine.train_epoch`` and
``evaluate``) reads nothing back to the host per batch, copies no host data to the device per batch, and makes
every tensor on the data's device.

On a GPU each of these costs a host synchronisation: ``.item()``, ``.tolist()``, ``.cpu()``, ``float(t)``,
``bool(t)`` wait for the device, and a tensor made from host data (``torch.tensor([...], device=...)``) is a
blocking copy. One such call per batch leaves the device idle between batches. The loop reads its sums back
once per epoch (``host_means``); that is the budget these tests hold it to: a count per epoch that does not
grow with the number of batches.
"""

import functools
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
from conftest import read_metrics
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from reg_runner.run import Job, run_stack
from reg_runner.trainer.engine import Engine

# Tensor methods and functions that wait for the device (their result is on the host), and those that copy host
# data to the device (their input is on the host); ``__getitem__``/``__setitem__`` with a boolean mask count too
# (the mask's count of True values decides the result's shape: a read-back).
READS = {"item", "tolist", "cpu", "numpy", "__float__", "__int__", "__bool__", "__index__", "nonzero",
         "masked_select", "unique", "repeat_interleave"}
COPIES_IN = {"tensor", "as_tensor", "from_numpy", "asarray"}

# Two members unlike each other: every per-batch feature of the loop (dropout, BatchNorm, each augmentation,
# L1/L2, clipping, a per-batch schedule) on one model family at a time.
MEMBERS = (["seed=0", "model.dropout=0.2", "augmentation=noise_affine", "reg.l1=1e-4", "trainer.grad_clip=1.0",
            "scheduler=onecycle"],
           ["seed=1", "model.dropout=0.1", "augmentation=crop", "augmentation.flip=true", "reg.l2=1e-3"])
FAMILIES = {"mlp": ["model.norm=batchnorm"], "cnn": ["model=cnn", "model.norm=batchnorm", "model.channels=[4,8]",
                                                     "model.hidden=16"]}


def compose(*overrides):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from reg_runner import cli

    with initialize_config_dir(config_dir=cli.CONFIG_DIR, version_base=None):
        return hydra_compose("config", overrides=list(overrides))


def train_stack(tiny_data, run_dir: Path, family: str, *overrides) -> None:
    """The two MEMBERS as one stack, in this process."""
    common = [f"data.root={tiny_data}", "data.verify=false", "data.train_fraction=0.2", "trainer.epochs=2",
              "trainer.device=cpu", "logging.tensorboard=false", *FAMILIES[family], *overrides]
    jobs = [Job(compose(*common, *member), run_dir / f"m{k}", tuple(common + member)) for k, member in
            enumerate(MEMBERS)]
    run_stack(jobs, multirun=True)
    assert all(read_metrics(job.run_dir)["status"] == "completed" for job in jobs)


def is_step_count(t, engine) -> bool:
    """An optimizer's step count: torch keeps it on the host (a 0-dim CPU tensor) for parameters on a GPU unless
    ``capturable`` or ``fused``, so reading it is no device synchronisation."""
    return any(state.get("step") is t for m in engine.members for state in m.optimizer.state.values())


class HostTraffic(TorchFunctionMode):
    """Counts READS and COPIES_IN by call site (the nearest frame outside torch), except step-count reads."""

    def __init__(self, engine):
        super().__init__()
        self.engine, self.calls = engine, Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        masked = name in ("__getitem__", "__setitem__") and _has_mask(args[1:2])
        if (name in READS and not (args and is_step_count(args[0], self.engine))) or name in COPIES_IN or masked:
            self.calls[(name, _call_site())] += 1
        return func(*args, **(kwargs or {}))


def _has_mask(index) -> bool:
    items = index[0] if index and isinstance(index[0], tuple) else index
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in items)


def _call_site() -> str:
    """``file:line`` of the nearest caller outside torch's own code."""
    frame = sys._getframe(2)
    while frame is not None and frame.f_code.co_filename.startswith(TORCH_DIR):
        frame = frame.f_back
    return f"{Path(frame.f_code.co_filename).name}:{frame.f_lineno}" if frame is not None else "?"


TORCH_DIR = str(Path(torch.__file__).parent)


def count_per_epoch(monkeypatch, tiny_data, run_dir, family, *overrides) -> list[Counter]:
    """The host traffic of each epoch's ``train_epoch`` and ``evaluate`` calls."""
    epochs: list[Counter] = []

    def watched(method):
        def wrapper(self, *args, **kwargs):
            if method is original_train:
                epochs.append(Counter())
            with HostTraffic(self) as mode:
                out = method(self, *args, **kwargs)
            epochs[-1].update(mode.calls)
            return out
        return wrapper

    original_train, original_eval = Engine.train_epoch, Engine.evaluate
    monkeypatch.setattr(Engine, "train_epoch", watched(original_train))
    monkeypatch.setattr(Engine, "evaluate", watched(original_eval))
    train_stack(tiny_data, run_dir, family, *overrides)
    monkeypatch.undo()
    return epochs


@pytest.mark.parametrize("family", FAMILIES)
def test_the_hot_path_reads_nothing_back_and_copies_nothing_in_per_batch(monkeypatch, tiny_data, tmp_path, family):
    """The same runs with 4 and 8 training batches per epoch, and 3 and 6 evaluation chunks: each epoch's host
    traffic is the same count at the same call sites (none of it per batch)."""
    few = count_per_epoch(monkeypatch, tiny_data, tmp_path / "few", family, "trainer.batch_size=25",
                          "trainer.eval_batch_size=200")
    many = count_per_epoch(monkeypatch, tiny_data, tmp_path / "many", family, "trainer.batch_size=13",
                           "trainer.eval_batch_size=100")
    assert len(few) == len(many) == 2
    for epoch, (a, b) in enumerate(zip(few, many), 1):
        grows = {site: (a[site], b[site]) for site in a.keys() | b.keys() if a[site] != b[site]}
        assert not grows, f"epoch {epoch}: host traffic that grows with the batches, (call, site): (4, 8 batches): " \
                          f"{grows}"


class OnDevice(TorchDispatchMode):
    """Fails on any operation whose result is not on ``device``."""

    def __init__(self, device: torch.device):
        super().__init__()
        self.device = device

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor) and t.device != self.device:
                raise AssertionError(f"{func} made a tensor on {t.device}, not on the data's {self.device}")
        return out


@pytest.mark.parametrize("family", FAMILIES)
def test_the_hot_path_makes_every_tensor_on_the_data_device(monkeypatch, tiny_data, tmp_path, family):
    """Under ``torch.device("meta")`` a tensor made without naming its device lands on "meta", where the data
    never is: every tensor the loop makes must name the data's device (on a GPU, one made on the CPU would be
    copied, or fail). The optimizer's own step is left on the CPU default: torch keeps its step count there."""
    def on_the_data_device(method):
        def wrapper(self, *args, **kwargs):
            for m in self.members:
                if not getattr(m.optimizer.step, "host_default", False):
                    m.optimizer.step = host_default(m.optimizer.step)
            with torch.device("meta"), OnDevice(self.data.train.x.device):
                return method(self, *args, **kwargs)
        return wrapper

    def host_default(step):
        @functools.wraps(step)  # keeps what torch's schedulers mark on the step they wrap
        def wrapper(*args, **kwargs):
            with torch.device("cpu"):
                return step(*args, **kwargs)
        wrapper.host_default = True
        return wrapper

    with pytest.raises(AssertionError, match="meta"), torch.device("meta"), OnDevice(torch.device("cpu")):
        torch.zeros(3) + 1  # the guard does catch a tensor made without its device
    monkeypatch.setattr(Engine, "train_epoch", on_the_data_device(Engine.train_epoch))
    monkeypatch.setattr(Engine, "evaluate", on_the_data_device(Engine.evaluate))
    train_stack(tiny_data, tmp_path, family, "trainer.batch_size=25")
