"""Explicit L1 / L2 penalties added to the loss: the MAP view of regularization.

    loss = CE(θ) + λ1 ‖θ‖₁ + λ2 ‖θ‖₂²

λ2‖θ‖₂² is a Gaussian prior on θ, λ1‖θ‖₁ a Laplace prior. By default the penalty covers the
weight matrices of the Linear layers only (``reg.apply_to=weights``), as is usual: penalizing
biases and normalization gains rarely helps. ``apply_to=all`` covers every parameter.

This is not an optimizer's ``weight_decay``. In SGD and Adam, ``weight_decay=w`` adds ``w·θ`` to
the gradient, which for SGD equals an L2 penalty with λ2 = w/2 but for Adam is rescaled by the
adaptive denominator (so it is neither the penalty above nor true decay). AdamW decouples it:
``θ ← θ - lr·w·θ`` outside the adaptive step. Here the penalty is part of the loss that every
optimizer sees; it is logged separately from the data loss.
"""

import torch
from torch import nn


def penalized_parameters(model: nn.Module, apply_to: str) -> list[torch.Tensor]:
    if apply_to == "all":
        return list(model.parameters())
    return [m.weight for m in model.modules() if isinstance(m, nn.Linear)]


class Penalty:
    """λ1‖θ‖₁ + λ2‖θ‖₂² over a fixed list of parameters; zero (and free) when both λ are 0."""

    def __init__(self, model: nn.Module, l1: float, l2: float, apply_to: str):
        self.l1, self.l2 = l1, l2
        self.params = penalized_parameters(model, apply_to)

    @property
    def active(self) -> bool:
        return self.l1 > 0 or self.l2 > 0

    def __call__(self) -> torch.Tensor:
        total = self.params[0].new_zeros(())
        if self.l1 > 0:
            total = total + self.l1 * sum(p.abs().sum() for p in self.params)
        if self.l2 > 0:
            total = total + self.l2 * sum(p.square().sum() for p in self.params)
        return total
