"""Seeds: a run's ``seed`` seeds one independent stream per use (``STREAMS``; why: docs/runs.md, "Seeds and the
split"), derived with numpy's ``SeedSequence``, the stream's index as its spawn key. Torch's global generator is
seeded too, for code outside reg_runner.
"""

import contextlib
import os
import secrets

import numpy as np
import torch

STREAMS = ("init", "dropout", "batches", "augment", "examples")  # append only: the index is part of the seed


def resolve_seed(seed: int | None) -> int:
    return secrets.randbelow(2**31) if seed is None else seed


def stream_seed(seed: int, stream: str) -> int:
    """The 64-bit seed of ``stream`` for the run seed ``seed``."""
    sequence = np.random.SeedSequence(entropy=seed, spawn_key=(STREAMS.index(stream),))
    return int(sequence.generate_state(1, np.uint64)[0])


def generators(seed: int, device: torch.device) -> dict[str, torch.Generator]:
    """The run's generators, one per stream."""
    return {name: torch.Generator(device=device).manual_seed(stream_seed(seed, name)) for name in STREAMS}


@contextlib.contextmanager
def deterministic(enabled: bool):
    """``torch.use_deterministic_algorithms`` for the run, restored after it (for the next job of a multirun)."""
    before = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark)
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS needs it to be deterministic
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0])
        torch.backends.cudnn.benchmark = before[1]
