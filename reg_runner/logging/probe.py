"""What the histograms show (docs/tensorboard.md). Recording never changes a run's numbers: probes run in
``eval()`` mode on fixed batches (no dropout draw, no BatchNorm running-statistics update), take gradients with
``torch.autograd.grad`` (nothing accumulates in ``.grad``) and use no random number."""

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from reg_runner.model.stack import hidden_blocks, weight_layers


def batchnorm_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The BatchNorm layers of each hidden block, by the block's display name."""
    return {name: m for name, block in hidden_blocks(model).items() for m in block.modules()
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d))}


def histogram_epochs(epochs: int, count: int) -> set[int]:
    """``count`` epochs evenly spaced over 1..epochs, first and last included (all epochs if fewer)."""
    if count == 1:
        return {epochs}
    return {round(e) for e in np.linspace(1, epochs, min(count, epochs))}


def histogram(values: torch.Tensor, bins: int = 64) -> dict:
    """A TensorBoard histogram of ``values`` in equal-width bins, computed with torch on their device (only the
    counts leave it; deterministic on CUDA too). TensorBoard's ``add_histogram`` goes through NumPy, whose BLAS call
    wakes OpenBLAS's threads, which then spin and slow the next training epoch by more than the histogram costs."""
    v = values.detach().float().flatten()
    lo, hi = v.min(), v.max()
    width = (hi - lo).clamp_min(torch.finfo(torch.float32).tiny)
    index = ((v - lo) / width * bins).long().clamp_(0, bins - 1)
    counts = torch.bincount(index, minlength=bins)
    lo_f, hi_f, total, squares = torch.stack([lo, hi, v.sum(), v.dot(v)]).tolist()
    if hi_f == lo_f:  # a constant tensor: one bucket
        limits, counts = [hi_f], [v.numel()]
    else:
        limits = [lo_f + (hi_f - lo_f) * (i + 1) / bins for i in range(bins)]
        counts = counts.tolist()
    return dict(min=lo_f, max=hi_f, num=v.numel(), sum=total, sum_squares=squares, bucket_limits=limits,
                bucket_counts=counts)


def entropy(logits: torch.Tensor) -> torch.Tensor:
    logp = F.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(dim=-1)


def layer_probe(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """Input gradients of every weight layer and activations of every hidden block, on (x, y) (``model`` in eval)."""
    inputs, activations, handles = {}, {}, []
    for name, layer in weight_layers(model).items():
        handles.append(layer.register_forward_pre_hook(lambda m, args, name=name: inputs.__setitem__(name, args[0])))
    for name, block in hidden_blocks(model).items():
        handles.append(block.register_forward_hook(lambda m, args, out, name=name: activations.__setitem__(name, out)))
    try:
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            loss = F.cross_entropy(model(x), y)
            names = list(inputs)
            grads = torch.autograd.grad(loss, [inputs[n] for n in names])
    finally:
        for h in handles:
            h.remove()
    out = {f"input_grad/{n}": g.detach() for n, g in zip(names, grads)}
    out.update({f"activation/{n}": a.detach() for n, a in activations.items()})
    return out


class StepWatcher:
    """Per-layer gradient norm and ‖ΔW‖/‖W‖ of one optimizer step, on ``weights`` ({layer: tensor}, a member's
    slices of the stacked weights)."""

    def __init__(self, weights: dict[str, torch.Tensor]):
        self.weights = weights
        self.stats: dict[str, float] = {}
        self._before: dict[str, torch.Tensor] = {}

    def before_step(self) -> None:
        self._before = {n: w.detach().clone() for n, w in self.weights.items()}
        self._grad_norms = {n: w.grad.norm() if w.grad is not None else torch.zeros(()) for n, w in self.weights.items()}

    def after_step(self) -> None:
        out = {}
        for n, w in self.weights.items():
            out[f"grad_norm/{n}"] = self._grad_norms[n]
            out[f"update_ratio/{n}"] = (w.detach() - self._before[n]).norm() / self._before[n].norm().clamp_min(1e-12)
        self.stats = dict(zip(out, torch.stack([v.float().cpu() for v in out.values()]).tolist()))  # one transfer
        self._before = {}
