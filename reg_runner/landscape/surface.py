"""The loss around a trained network: filter-normalized directions, and many networks evaluated as stacks.

Directions (Li et al. 2018, "Visualizing the Loss Landscape of Neural Nets", arXiv 1712.09913): a
Gaussian direction with each output row of each weight matrix rescaled to the norm of that row in
the checkpoint; biases, normalization gains and BatchNorm's running statistics get zero, so a point
``theta + a d1 + b d2`` keeps the checkpoint's biases and statistics (BatchNorm is evaluated with
them, in eval mode). Scaling each row to its own weights' norm makes the picture independent of the
scale invariance that BatchNorm (and ReLU's positive homogeneity) give a network, so two networks'
plots can be compared.

Every point of a grid is a network of the run's shape: ``points`` loads a chunk of them as the
members of one ``StackedMLP`` (each member's parameters a combination of the checkpoint and the
directions) and sends the split through all of them at once, the first layer as one wide matrix
product, as the training engine evaluates its stack.
"""

import math

import torch

from reg_runner.config import N_CLASSES
from reg_runner.model.mlp import StackedMLP
from reg_runner.trainer.engine import evaluate, host_means
from reg_runner.trainer.precision import EvalPrecision

CHUNK = 64  # networks per stack: (64, 2048, 100) activations, about 50 MB per layer
EVAL_BATCH = 2048


def direction(state: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, torch.Tensor]:
    """A filter-normalized random direction for the network ``state`` (a plain MLP state_dict)."""
    out = {}
    for name, t in state.items():
        if t.dtype.is_floating_point and t.dim() == 2:  # a Linear weight: (out, in), one filter per row
            d = torch.randn(t.shape, generator=generator, dtype=torch.float32).to(t.device)
            d.mul_(t.norm(dim=1, keepdim=True) / d.norm(dim=1, keepdim=True).clamp_min(1e-12))
            out[name] = d
        elif t.dtype.is_floating_point:
            out[name] = torch.zeros_like(t)
    return out


def row_norms(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Each weight matrix's row norms (what ``direction`` matches)."""
    return {name: t.norm(dim=1) for name, t in state.items() if t.dtype.is_floating_point and t.dim() == 2}


def points(model_cfg, in_features: int, basis: list[dict[str, torch.Tensor]], coefs: list[list[float]], split,
           device, buffer_coefs: list[list[float]] | None = None) -> tuple[list[float], list[float]]:
    """The mean loss and accuracy on ``split`` of the networks ``sum_b coefs[p][b] * basis[b]``, one per p.

    BatchNorm's running statistics are combined with ``buffer_coefs`` where given (a path extrapolated past
    its ends must not extrapolate a variance below zero), else with ``coefs``; tensors that are not floating
    point (BatchNorm's batch counter) are the first basis state's.
    """
    buffer_coefs = coefs if buffer_coefs is None else buffer_coefs
    names = list(basis[0])
    stacked = {n: torch.stack([b[n].to(device) for b in basis]) for n in names if basis[0][n].dtype.is_floating_point}
    losses, accs = [], []
    precision = EvalPrecision("fp32")
    for start in range(0, len(coefs), CHUNK):
        c = torch.tensor(coefs[start : start + CHUNK], dtype=torch.float32, device=device)
        cb = torch.tensor(buffer_coefs[start : start + CHUNK], dtype=torch.float32, device=device)
        with torch.device(device):
            model = StackedMLP(in_features, N_CLASSES, model_cfg, [0.0] * len(c), [None] * len(c))
        buffers = {name for name, _ in model.named_buffers()}
        with torch.no_grad():
            for name, t in model.state_dict().items():
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
