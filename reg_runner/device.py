"""Which device a run trains on: the one place ``trainer.device=auto`` is resolved."""

import torch


def resolve(name: str) -> torch.device:
    """``auto``: CUDA, then MPS, then the CPU (the checks have made sure a named device exists)."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(name)
