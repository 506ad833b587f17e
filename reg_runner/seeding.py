"""Seeds and random-number state.

Three streams, seeded from the run's ``seed``: the model's initialization and dropout use torch's
global generator, and the batch order has a generator of its own, so that switching dropout on
does not also change which images form each batch. ``seed=null`` draws a seed, which is recorded
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


def batch_generator(seed: int, device: torch.device) -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(seed + 1)  # a stream distinct from the global one, still a function of `seed` only
    return g


def rng_state(generator: torch.Generator) -> dict:
    state = {"torch": torch.get_rng_state(), "batches": generator.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict, generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    generator.set_state(state["batches"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
