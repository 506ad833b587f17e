"""Where and how a run computed, as its ``environment.json`` records it (its fields: docs/runs.md)."""

import contextlib
import functools
import os
import platform
import re
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from reg_runner.errors import first_line, masked

# the packages a run's numbers depend on most, named first (``distributions`` holds every installed one)
PACKAGES = ("reg_runner", "torch", "numpy", "hydra-core", "omegaconf", "optuna", "hydra-optuna-sweeper",
            "tensorboard", "datamaestro", "datamaestro-image", "pytorch-optimizer", "pydantic", "scipy", "matplotlib")
SOURCE = Path(__file__).resolve().parent  # the reg_runner code whose commit and changes the records name
PATCH = "source.patch"  # beside the records, when the code that ran differs from its commit


def environment(device, eval_precision: str | None = None) -> dict:
    """The record (on a CPU, the torch threads split its sums: another count, other last digits). What costs
    time (the installed distributions, git) is read once per process."""
    import torch

    versions = distributions()
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    return dict(
        python=sys.version.split()[0],
        python_implementation=platform.python_implementation(),
        packages={name: versions.get(_normal(name)) for name in PACKAGES},
        distributions=versions,  # every installed distribution, by its normalized name
        torch_build=torch_build(),
        device=str(device),
        device_name=gpu or (cpu_name() if device.type == "cpu" else device.type),
        cpu=cpu_name(),
        gpu=gpu,
        torch_threads=torch.get_num_threads(),  # set it with OMP_NUM_THREADS=<n> to give a run its numbers back
        torch_interop_threads=torch.get_num_interop_threads(),
        precision=dict(
            train="fp32",
            eval=eval_precision,  # trainer.eval_precision
            float32_matmul=torch.get_float32_matmul_precision(),
            deterministic_algorithms=torch.are_deterministic_algorithms_enabled(),
        ),
        platform=platform.platform(),
        host=socket.gethostname(),
        pid=os.getpid(),
        argv=[masked(a) for a in sys.argv],  # a storage URL's password hidden
        git=dict(_git_state(str(SOURCE))),
    )


def _normal(name: str) -> str:
    """A distribution's name as packaging normalizes it (PEP 503): pytorch_optimizer is pytorch-optimizer."""
    return re.sub(r"[-_.]+", "-", name).lower()


@functools.cache
def distributions() -> dict:
    """Every distribution installed in this environment, name -> version (read once per process)."""
    versions = {}
    with contextlib.suppress(Exception):  # a damaged installation's metadata: the record says what it could read
        for dist in metadata.distributions():
            name = dist.metadata["Name"] if dist.metadata is not None else None
            if name:
                versions.setdefault(_normal(name), dist.version)
    return dict(sorted(versions.items()))


@functools.cache
def torch_build() -> dict:
    """What torch was built with: CUDA and cuDNN (null in a CPU build), Apple's MPS backend."""
    import torch

    def attempt(read):
        try:
            return read()
        except Exception:  # a build without the backend
            return None

    return dict(
        version=torch.__version__,
        cuda=torch.version.cuda,
        cudnn=attempt(torch.backends.cudnn.version),
        cuda_available=attempt(torch.cuda.is_available),
        mps_built=attempt(torch.backends.mps.is_built),
        mps_available=attempt(torch.backends.mps.is_available),
    )


@functools.cache
def cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown"


@functools.cache
def _git_state(folder: str) -> dict:
    """The commit of the code that ran, its untracked files and its changes (``diff``: ``PATCH``). Never an
    error: without git, or outside a repository, ``commit`` is null and ``error`` says why."""

    def git(*args) -> str:
        return subprocess.run(["git", "-C", folder, *args], capture_output=True, text=True, timeout=10,
                              check=True).stdout

    try:
        commit = git("rev-parse", "HEAD").strip()
    except FileNotFoundError:
        return dict(commit=None, error="git is not installed")
    except subprocess.CalledProcessError as e:
        reason = first_line(e.stderr or "") or "git failed"
        return dict(commit=None, error=f"not a git repository with a commit ({reason})")
    except (OSError, subprocess.SubprocessError) as e:
        return dict(commit=None, error=f"git failed ({type(e).__name__})")
    try:  # the whole repository's changes, paths from its top
        diff = git("diff", "HEAD", "--no-color", "--no-ext-diff", "--binary")
        untracked = git("ls-files", "--others", "--exclude-standard", "--full-name", ":/").splitlines()
    except (OSError, subprocess.SubprocessError) as e:
        return dict(commit=commit, dirty=None, error=f"git diff failed ({type(e).__name__})")
    return dict(commit=commit, dirty=bool(diff) or bool(untracked), untracked=tuple(untracked), diff=diff)
