"""Seeds and random-number state.

Streams seeded from the run's ``seed``: the model's initialization and dropout use torch's global
generator; the batch order and the augmentation draws have generators of their own, so that
switching dropout or augmentation on does not also change which images form each batch. ``seed=null`` draws a seed, which is recorded
like any other: every run can be repeated.
"""

import os
import secrets

import torch


def resolve_seed(seed: int | None) -> int:
    return secrets.randbelow(2**31) if seed is None else seed


def seed_everything(seed: int, deterministic: bool) -> None:
    torch.manual_seed(seed)  # also seeds every CUDA device
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS needs it to be deterministic
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False


STREAMS = {"batches": 1, "augment": 2}  # offsets from `seed`: distinct streams, each a function of `seed` only


def generators(seed: int, device: torch.device) -> dict[str, torch.Generator]:
    """The run's own generators: ``batches`` orders the training set, ``augment`` draws augmentations."""
    out = {}
    for name, offset in STREAMS.items():
        out[name] = torch.Generator(device=device)
        out[name].manual_seed(seed + offset)
    return out


def rng_state(gens: dict[str, torch.Generator]) -> dict:
    state = {"torch": torch.get_rng_state(), **{name: g.get_state() for name, g in gens.items()}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict, gens: dict[str, torch.Generator]) -> None:
    torch.set_rng_state(state["torch"])
    for name, g in gens.items():
        g.set_state(state[name])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
