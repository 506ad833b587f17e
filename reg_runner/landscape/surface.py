"""The loss around a trained network: filter-normalized directions (Li et al. 2018; why: docs/landscapes.md), and
many networks evaluated at once as the members of one stacked model, as the training engine evaluates its stack.
"""

import math

import torch

from reg_runner.assembly import stacked as build
from reg_runner.model import stack
from reg_runner.trainer.engine import EvalPrecision, evaluate, host_means

CHUNK = 64  # networks per stack: (64, 2048, 100) activations, about 50 MB per layer of the MLP
EVAL_BATCH = 2048


def weight_names(model_cfg, shape, n_classes: int) -> set[str]:
    """The state_dict names of the family's weight-layer weights (what the directions perturb)."""
    with torch.device("meta"):
        return set(stack.weight_names(model_cfg.plain(tuple(shape), n_classes)).values())


def direction(state: dict[str, torch.Tensor], weights: set[str], generator: torch.Generator) -> dict[str, torch.Tensor]:
    """A filter-normalized random direction for the network ``state`` (a plain state_dict): each filter (output unit
    or channel) of each weight named in ``weights`` scaled to its norm in ``state``; the other floating-point
    entries (biases, norm gains, BatchNorm's statistics) zero, so every point keeps the checkpoint's."""
    out = {}
    for name, t in state.items():
        if name in weights:
            d = torch.randn(t.shape, generator=generator, dtype=torch.float32).to(t.device)
            scale = t.flatten(1).norm(dim=1) / d.flatten(1).norm(dim=1).clamp_min(1e-12)
            d.mul_(scale.view(-1, *([1] * (t.dim() - 1))))
            out[name] = d
        elif t.dtype.is_floating_point:
            out[name] = torch.zeros_like(t)
    return out


def points(network, basis: list[dict[str, torch.Tensor]], coefs: list[list[float]], split, device,
           buffer_coefs: list[list[float]] | None = None) -> tuple[list[float], list[float]]:
    """The mean loss and accuracy on ``split`` of the networks ``sum_b coefs[p][b] * basis[b]``, one per p, each of
    ``network`` (model config, image shape, classes). Buffers are combined with ``buffer_coefs`` where given (a path
    extrapolated past its ends must not extrapolate a variance below zero); what is not floating point (BatchNorm's
    batch counter) is the first basis state's."""
    model_cfg, shape, n_classes = network
    buffer_coefs = coefs if buffer_coefs is None else buffer_coefs
    stacked = {n: torch.stack([b[n].to(device) for b in basis]) for n, t in basis[0].items() if t.is_floating_point()}
    losses, accs = [], []
    precision = EvalPrecision("fp32")
    for start in range(0, len(coefs), CHUNK):
        c = torch.tensor(coefs[start : start + CHUNK], dtype=torch.float32, device=device)
        cb = torch.tensor(buffer_coefs[start : start + CHUNK], dtype=torch.float32, device=device)
        model = build([model_cfg] * len(c), shape, n_classes, device)
        buffers = {name for name, _ in model.named_buffers()}
        for name, t in model.state_dict().items():  # detached: the parameters' storage
            if name in stacked:
                t.copy_(torch.tensordot(cb if name in buffers else c, stacked[name], dims=1))
            else:
                t.copy_(basis[0][name].to(device).expand_as(t))
        means = host_means({k: v for k, v in evaluate(model, split, EVAL_BATCH, precision).items() if k != "entropy"})
        losses += means["loss"]
        accs += means["acc"]
    return losses, accs


def nan_to_none(values: list[float]) -> list[float | None]:
    """JSON has no NaN or infinity: a point whose loss overflowed is recorded as null."""
    return [v if math.isfinite(v) else None for v in values]
