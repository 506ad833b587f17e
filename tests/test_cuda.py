"""Claims about the CUDA path, each checked on a CUDA GPU: ``pytest -m cuda`` (skipped where there is none).

What the CPU can check of the same path (no read-back or host copy per batch, every tensor made on the data's
device) is in test_device_path.py; ``python benchmarks/device_check.py`` measures the rest (speed, the study).
"""

import functools
import signal
from pathlib import Path

import pytest
import torch
from conftest import read_metrics, tiny, without_timing
from test_device_path import FAMILIES, MEMBERS, compose
from test_landscape import landscape
from test_resume import no_run_outlives_its_test  # noqa: F401 (an autouse fixture: no killed run outlives its test)
from test_resume import STATEFUL, resume, start, wait_for_epoch
from test_trust import NoFloat64

from reg_runner import checks
from reg_runner import config as config_lib
from reg_runner.run import Job, run_stack
from reg_runner.trainer.engine import Engine

pytestmark = pytest.mark.cuda

CUDA = ("trainer.device=cuda",)


def settings(tiny_data, *overrides) -> list[str]:
    return [f"data.root={tiny_data}", *tiny(*overrides), *CUDA]


def test_a_cuda_run_makes_no_float64_tensor(tiny_data, tmp_path):
    """Training, evaluation, TensorBoard, histograms and checkpoints on the GPU, with every per-batch feature on."""
    cfg = compose(*settings(tiny_data, "model.norm=batchnorm", "model.dropout=0.2", "reg.l1=1e-4",
                            "augmentation=noise_affine", "scheduler=plateau", "logging.histograms=2",
                            "trainer.grad_clip=1.0"))
    with NoFloat64():
        run_stack([Job(cfg, tmp_path / "run")])
    assert read_metrics(tmp_path / "run")["status"] == "completed"


def stack(tiny_data, run_dir: Path, family: str, members=MEMBERS, *overrides) -> list[Path]:
    """``members`` as one stack on the GPU, in this process; their folders."""
    common = settings(tiny_data, "logging.tensorboard=false", *FAMILIES[family], *overrides)
    jobs = [Job(compose(*common, *m), run_dir / f"m{k}", tuple(common + list(m))) for k, m in enumerate(members)]
    run_stack(jobs, multirun=True)
    return [job.run_dir for job in jobs]


@pytest.mark.parametrize("family", FAMILIES)
def test_the_hot_path_never_waits_for_the_gpu(monkeypatch, tiny_data, tmp_path, family):
    """``torch.cuda.set_sync_debug_mode("error")`` around ``train_epoch`` and ``evaluate`` from each engine's second
    epoch on: any operation there that synchronises the host with the GPU (a read-back, a blocking copy from the
    host) raises. The first epoch copies the loop's constants to the device once (dropout's scales, the penalties'
    coefficients, augmentation's bounds); the one read-back per epoch (``host_means``) is outside both. TensorBoard
    is off: its histogram epochs read their statistics back inside the training pass, once per such epoch."""
    epochs: dict[int, int] = {}

    def strict(method, counts: bool):
        @functools.wraps(method)
        def wrapper(engine, *args, **kwargs):
            epochs[id(engine)] = epochs.get(id(engine), 0) + counts
            if epochs[id(engine)] < 2:
                return method(engine, *args, **kwargs)
            torch.cuda.set_sync_debug_mode("error")
            try:
                return method(engine, *args, **kwargs)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        return wrapper

    monkeypatch.setattr(Engine, "train_epoch", strict(Engine.train_epoch, True))
    monkeypatch.setattr(Engine, "evaluate", strict(Engine.evaluate, False))
    runs = stack(tiny_data, tmp_path, family, MEMBERS, "trainer.epochs=3")
    assert all(read_metrics(r)["status"] == "completed" for r in runs) and set(epochs.values()) == {3}


MIXED = (["seed=0"], ["seed=1", "optimizer.lr=0.1"], ["seed=2", "model.dropout=0.2"], ["seed=3", "reg.l2=1e-3"])


def test_a_stacked_member_matches_its_lone_run_on_cuda(tiny_data, tmp_path):
    """Members mixing seeds, lrs, dropout and L2, stacked and alone, on the GPU (SGD: a difference stays as small
    as it starts). Bitwise equality is claimed on the CPU only: cuBLAS chooses a GEMM kernel by shape, and a
    stack's batched product (one per member, K at once) or its wide evaluation product (K x width columns) may
    add up in another order than a lone run's single product, which rounds the last bits differently. Within
    float32 rounding, amplified by 8 steps, they must agree."""
    sgd = ("optimizer=sgd",)
    stacked = stack(tiny_data, tmp_path / "stacked", "mlp", MIXED, *sgd)
    for k, member in enumerate(MIXED):
        lone = stack(tiny_data, tmp_path / f"lone{k}", "mlp", [member], *sgd)[0]
        a = torch.load(stacked[k] / "checkpoints" / "last.pt", weights_only=True)["model"]
        b = torch.load(lone / "checkpoints" / "last.pt", weights_only=True)["model"]
        for name in a:
            torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-5, msg=f"member {k} ({member}): {name}")
        ma, mb = read_metrics(stacked[k]), read_metrics(lone)
        assert ma["final"]["train/loss"] == pytest.approx(mb["final"]["train/loss"], rel=1e-4), member


def test_sigkill_then_resume_on_cuda_gives_the_uninterrupted_numbers(cli, tmp_path):
    """Bitwise: the same GPU, the same shapes, the same kernels, in the killed, the resumed and the uninterrupted
    process (dropout, augmentation, BatchNorm, a plateau schedule: every kind of state a checkpoint carries)."""
    overrides = [o for o in STATEFUL if not o.startswith("trainer.epochs=")] + ["trainer.epochs=400", *CUDA]
    reference = read_metrics(cli(*overrides).run_dir)
    run_dir = tmp_path / "killed"
    proc = start(cli, run_dir, *overrides)
    wait_for_epoch(run_dir, 40, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert read_metrics(run_dir)["status"] == "running"
    resume(cli, run_dir)
    assert without_timing(read_metrics(run_dir)) == without_timing(reference)


def test_the_data_and_the_model_live_on_the_gpu_and_checkpoints_on_the_host(tiny_data, tmp_path):
    from reg_runner.assembly import Job, assemble

    cfg = compose(*settings(tiny_data, "model.norm=batchnorm", "model.dropout=0.2"))
    checked = checks.check(cfg)
    config = dict(config_lib.as_data(cfg), seed=0)
    built = assemble([Job(cfg, tmp_path / "a", checked=checked, recorded=config)])
    for split in (built.data.train, built.data.val, built.data.test):
        assert split.x.is_cuda and split.y.is_cuda
    assert all(t.is_cuda for t in [*built.model.parameters(), *built.model.buffers()])
    assert all(g.device.type == "cuda" for g in built.members[0].gens.values())
    run_stack([Job(cfg, tmp_path / "run")])  # a checkpoint written on the GPU loads on a machine without one
    for name in ("last.pt", "best.pt", "init.pt"):
        checkpoint = torch.load(tmp_path / "run" / "checkpoints" / name, weights_only=True)
        tensors = [t for t in _leaves(checkpoint) if isinstance(t, torch.Tensor)]
        assert tensors and all(t.device.type == "cpu" for t in tensors), name


def _leaves(obj):
    if isinstance(obj, dict):
        for value in obj.values():
            yield from _leaves(value)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            yield from _leaves(value)
    else:
        yield obj


def test_float32_products_are_float32_on_cuda(tiny_data):
    """reg_runner keeps torch's default: float32 matrix products in full float32 (no TF32, whose products keep 10
    bits of mantissa: relative errors near 1e-3). The stacked reference MLP's outputs on the GPU agree with a
    float64 computation on the CPU to float32's precision."""
    from reg_runner.assembly import stacked

    checked = checks.check(compose(*settings(tiny_data, "model.width=100")))
    model_cfg, shape = checked.cfg.model, (1, 28, 28)
    gpu = stacked([model_cfg] * 4, shape, 10, torch.device("cuda"))
    for k in range(4):
        model_cfg.initialize(gpu, k, torch.Generator().manual_seed(k))
    x = torch.randn(2048, *shape, generator=torch.Generator().manual_seed(9))
    exact = stacked([model_cfg] * 4, shape, 10, torch.device("cpu")).double()
    exact.load_state_dict({n: t.double().cpu() for n, t in gpu.state_dict().items()})
    with torch.inference_mode():
        out, reference = gpu.eval()(x.cuda()).cpu().double(), exact.eval()(x.double())
    assert torch.backends.cuda.matmul.allow_tf32 is False
    error = ((out - reference).abs().max() / reference.abs().max()).item()
    assert error < 1e-5, f"relative error {error:.2e}: TF32 or another reduced precision is on"


def test_lr_find_and_the_landscape_run_on_cuda(cli, tmp_path):
    out = cli("lr_find.steps=20", *CUDA, module="reg_runner.lr_find")
    assert (out.run_dir / "lr_find.json").is_file()
    run_dir = cli(*CUDA).run_dir
    landscape(cli, run_dir, "--grid", "5", "--device", "cuda", in_process=False)
    assert (run_dir / "landscape.json").is_file()
