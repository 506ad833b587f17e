"""Explicit L1 / L2 penalties added to the loss, λ1‖θ‖₁ + λ2‖θ‖₂², not an optimizer's ``weight_decay``
(docs/training.md, "L1/L2 penalties vs. weight decay"). In a stack every member has its own λ1, λ2 and
``apply_to``; the gradient, λ1·sign(θ) + 2λ2·θ, is added to each member's once per optimizer step, elementwise
(what it would be alone); the value, for the logs, is summed over each member's own slices.
"""

import torch


class Penalties:
    """λ1‖θ‖₁ + λ2‖θ‖₂² per member, ``coefficients`` (l1, l2, apply_to) of each, in stack order; free when every
    λ is 0."""

    def __init__(self, model, coefficients: list[tuple[float, float, str]]):
        self.l1 = [c[0] for c in coefficients]
        self.l2 = [c[1] for c in coefficients]
        # [member][param]: whether its apply_to covers the parameter (weights: the family's, ``model.weights()``)
        weights = {id(w) for w in model.weights().values()}
        self.covers = [[c[2] == "all" or id(p) in weights for p in model.parameters()] for c in coefficients]
        self.scales = None

    @property
    def active(self) -> bool:
        return any(self.l1) or any(self.l2)

    def on(self, k: int) -> bool:
        """Whether member k has a penalty (its rows then log it)."""
        return self.l1[k] > 0 or self.l2[k] > 0

    def keep(self, members: list[int]) -> None:
        self.l1, self.l2 = [self.l1[i] for i in members], [self.l2[i] for i in members]
        self.covers = [self.covers[i] for i in members]
        self.scales = None

    def _scales(self, params: list[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per parameter: λ1 and 2λ2 of every member as (K, 1, ...) tensors, 0 where it is not covered."""
        if self.scales is None:
            self.scales = []
            for j, p in enumerate(params):
                shape = (len(self.l1),) + (1,) * (p.dim() - 1)
                l1 = [self.l1[k] if self.covers[k][j] else 0.0 for k in range(len(self.l1))]
                l2 = [2 * self.l2[k] if self.covers[k][j] else 0.0 for k in range(len(self.l2))]
                self.scales.append((torch.tensor(l1, dtype=p.dtype, device=p.device).view(shape),
                                    torch.tensor(l2, dtype=p.dtype, device=p.device).view(shape)))
        return self.scales

    @torch.no_grad()
    def add_gradients(self, params: list[torch.Tensor]) -> None:
        for p, (l1, l2) in zip(params, self._scales(params)):
            if p.grad is not None:
                p.grad.add_(torch.sign(p) * l1 + p * l2)

    @torch.no_grad()
    def values(self, params: list[torch.Tensor]) -> torch.Tensor:
        """(K,) float32: each member's penalty at the current weights (0 for a member without one)."""
        out = []
        for k in range(len(self.l1)):
            total, covered = params[0].new_zeros(()), [p[k] for p, c in zip(params, self.covers[k]) if c]
            if self.l1[k] > 0:
                total = total + self.l1[k] * sum(t.abs().sum() for t in covered)
            if self.l2[k] > 0:
                total = total + self.l2[k] * sum(t.square().sum() for t in covered)
            out.append(total)
        return torch.stack(out)
