"""What makes a number trustworthy beyond a valid config: no float64 on the device, independent
random streams, the gradient logged as computed, and runs that do not depend on what ran beside them."""

import json
import os
from pathlib import Path

import pytest
import torch
from conftest import read_metrics, tiny, write_presets
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils._python_dispatch import TorchDispatchMode

from reg_runner.seeding import STREAMS, deterministic, generators, stream_seed


class NoFloat64(TorchDispatchMode):
    """Fails on any operation that makes a float64 tensor (MPS has no float64)."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor) and t.dtype == torch.float64:
                raise AssertionError(f"{func} made a float64 tensor")
        return out


def test_a_whole_run_makes_no_float64_tensor(tiny_data, tmp_path):
    from hydra import compose, initialize_config_dir

    from reg_runner import cli
    from reg_runner.run import Job, run_stack

    with pytest.raises(AssertionError, match="float64"), NoFloat64():  # the guard does catch one
        torch.zeros(3).sum(dtype=torch.float64)
    overrides = [f"data.root={tiny_data}", *tiny(), "model.norm=batchnorm", "model.dropout=0.2", "reg.l1=1e-4",
                 "augmentation=noise_affine", "scheduler=plateau", "logging.histograms=2", "trainer.grad_clip=1.0"]
    with initialize_config_dir(config_dir=cli.CONFIG_DIR, version_base=None):
        cfg = compose("config", overrides=overrides)
    with NoFloat64():  # training, evaluation, TensorBoard, histograms, checkpoints
        run_stack([Job(cfg, tmp_path / "run")])
    assert read_metrics(tmp_path / "run")["status"] == "completed"


def test_random_streams_share_nothing_across_seeds_and_uses():
    derived = {}
    for seed in range(500):
        for stream in STREAMS:
            value = stream_seed(seed, stream)
            assert value not in derived, (seed, stream, derived.get(value))
            derived[value] = (seed, stream)
    # seed s's batch order is not seed s+1's initialization (as seed + offset made it)
    a, b = generators(0, torch.device("cpu")), generators(1, torch.device("cpu"))
    first = {(s, name): torch.rand(4, generator=g).tolist() for s, gens in ((0, a), (1, b)) for name, g in gens.items()}
    assert len({tuple(v) for v in first.values()}) == len(first)


def _weights(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["model"]


def test_switching_a_technique_on_moves_no_other_stream(cli, tmp_path):
    """Dropout and augmentation draw from their own streams: switched on, they leave the initialization
    as it was (runs at lr 1e-12, so one epoch moves no weight by more than 1e-11). One stack of four: each
    run's numbers are its own (test_stacked)."""
    variants = {"plain": [], "dropout": ["model.dropout=0.3"], "augmented": ["augmentation=noise"],
                "seed_1": ["seed=1"]}
    search = write_presets(tmp_path / "presets", "variant", variants)
    sweep = cli("--multirun", f"+variant={','.join(variants)}", search, "hydra/launcher=stacked", "trainer.epochs=1",
                "optimizer.lr=1e-12").run_dir
    runs = {name: next(p for p in sweep.iterdir() if f"variant={name}" in p.name) for name in variants}
    weights = {name: _weights(run) for name, run in runs.items()}
    for name in ("dropout", "augmented"):
        for key, value in weights["plain"].items():
            torch.testing.assert_close(weights[name][key], value, atol=1e-9, rtol=0, msg=f"{name}: {key}")
    assert (weights["seed_1"]["classifier.weight"] - weights["plain"]["classifier.weight"]).abs().max() > 1e-3


def test_the_gradient_norm_is_logged_before_clipping(cli):
    run = cli("trainer.grad_clip=1e-4", "logging.histograms=2").run_dir
    ea = EventAccumulator(str(run), size_guidance={"scalars": 0}).Reload()
    norms = [e.value for tag in ea.Tags()["scalars"] if tag.startswith("grad_norm/") for e in ea.Scalars(tag)]
    # clipped, every layer's norm would be at most the global 1e-4; as computed, it is far above
    assert norms and max(norms) > 1e-2


def test_deterministic_algorithms_are_restored_after_a_run():
    before = torch.are_deterministic_algorithms_enabled()
    with deterministic(True):
        assert torch.are_deterministic_algorithms_enabled()
    assert torch.are_deterministic_algorithms_enabled() == before


# joblib's workers share the cores, with either backend: tests/test_workers.py::test_a_joblib_multirun_always_returns


@pytest.mark.slow  # a joblib search, then its re-run line
def test_a_joblib_trials_rerun_line_gives_back_its_numbers(cli, tmp_path):
    """Joblib's workers share the cores (1 torch thread each here); the re-run line runs with the trial's thread
    count, so its numbers are the trial's: on 784-pixel images another count sums the matmuls in another order."""
    import subprocess

    from conftest import make_tiny_mnist, without_timing

    data = make_tiny_mnist(tmp_path / "mnist28", n_train=300, n_test=100, side=28)
    cli.env.pop("OMP_NUM_THREADS", None)  # each process as a user starts it: torch picks its own count
    proc = cli("--multirun", f"data.root={data}", "hparams_search=quick", "data.val_size=null", "hydra/launcher=joblib",
               "hydra.launcher.n_jobs=2", "hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=2",
               "logging.tensorboard=false")
    line = next(text for text in proc.stdout.splitlines() if text.startswith("re-run: "))[len("re-run: "):]
    trial = Path(json.loads((proc.run_dir / "sweep_summary.json").read_text())["best"]["run_dir"])
    threads = json.loads((trial / "environment.json").read_text())["torch_threads"]
    assert threads == max(1, (os.cpu_count() or 1) // 2) and line.startswith(f"OMP_NUM_THREADS={threads} python ")
    again = subprocess.run(["bash", "-c", f"{line} hydra.run.dir={tmp_path / 'again'}"], cwd=tmp_path, env=cli.env,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert without_timing(read_metrics(tmp_path / "again")) == without_timing(read_metrics(trial))
    env = json.loads((tmp_path / "again" / "environment.json").read_text())
    assert env["torch_threads"] == threads and env["precision"]["eval"] == "fp32"


def test_resume_trains_with_the_threads_the_run_trained_with(tiny_data, tmp_path, monkeypatch):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from reg_runner import cli, resume
    from reg_runner import run as run_lib

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=cli.CONFIG_DIR):
        cfg = compose("config", overrides=[f"data.root={tiny_data}", *tiny()])
    GlobalHydra.instance().clear()
    before = torch.get_num_threads()
    recorded = before + 1
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "resolved_config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    (folder / "metrics.json").write_text(json.dumps({"status": "interrupted"}))
    (folder / "environment.json").write_text(json.dumps({"device": "cpu", "torch_threads": recorded}))
    seen = []
    monkeypatch.setattr(run_lib, "check_resumable", lambda cfg, run_dir: None)
    monkeypatch.setattr(run_lib, "run_stack", lambda jobs, resume: seen.append(torch.get_num_threads()))
    try:
        resume.main([str(folder)])
    finally:
        torch.set_num_threads(before)
    assert seen == [recorded]
