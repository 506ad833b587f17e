"""Devices: the names a run or a command may give, whether this machine has the one given, and ``auto`` resolved
(torch is imported only where a device is looked at: the schemas use ``well_formed``)."""

import argparse
import re

NAMES = "one of auto, cpu, cuda, cuda:N, mps"


def well_formed(name) -> bool:
    return isinstance(name, str) and re.fullmatch(r"auto|cpu|mps|cuda(:[0-9]+)?", name) is not None


def unavailable(name: str) -> str | None:
    """What this machine allows instead of the well-formed device ``name``, or None when it has it."""
    import torch

    if name.startswith("cuda") and not torch.cuda.is_available():
        return "auto or cpu: CUDA is not available on this machine"
    if name.startswith("cuda:") and int(name[5:]) >= torch.cuda.device_count():
        return f"cuda:0 to cuda:{torch.cuda.device_count() - 1}"
    if name == "mps" and not torch.backends.mps.is_available():
        return "auto or cpu: MPS is not available on this machine"
    return None


def device_arg(text: str) -> str:
    """An argparse ``type``: a device this machine has."""
    if allowed := (None if well_formed(text) else NAMES) or unavailable(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not allowed: {allowed}")
    return text


def resolve(name: str):
    """The ``torch.device`` of ``name``; ``auto``: CUDA, then MPS, then the CPU (a named device was checked)."""
    import torch

    if name != "auto":
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu")
