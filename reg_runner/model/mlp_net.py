"""The MLP family's networks (``reg_runner.model.mlp`` declares the family): ``MLPNet``, one network as ``torch.nn``
modules (what a run's checkpoint loads into), and ``StackedMLP``, K of them trained as one, built from the same
``Block`` with stacked layers (which act on the whole stack and which member by member: ``reg_runner.model.stack``).
"""

import math

import torch
from torch import nn

from reg_runner.model.stack import ACTIVATIONS, Activation, Stacked, StackedDropout, StackedLinear, StackedNorm

NORMS = {"none": None, "batchnorm": nn.BatchNorm1d, "layernorm": nn.LayerNorm, "rmsnorm": nn.RMSNorm}


class Block(nn.Module):
    """A hidden layer (an MLP's block, a CNN's fully connected layer), the plain network's and a stack's alike (each
    passes its own layers): ``linear``, then the norm and the activation (the norm first with ``norm_first``) and
    the dropout, those given, plus the input with ``residual``."""

    def __init__(self, linear, norm, act, dropout, norm_first: bool = True, residual: bool = False):
        super().__init__()
        self.linear, self.residual = linear, residual
        post = [norm, act] if norm_first else [act, norm]
        self.post = nn.Sequential(*(m for m in [*post, dropout] if m is not None))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.post(self.linear(x))
        return x + out if self.residual else out


class MLPNet(nn.Module):
    """One network: load a run's ``checkpoints/best.pt`` model into it. Takes images (B, C, H, W) or
    flattened (B, C*H*W)."""

    def __init__(self, in_features: int, n_classes: int, cfg):
        super().__init__()
        w, norm, first = cfg.widths(in_features), NORMS[cfg.norm], cfg.norm_position == "before_activation"
        self.blocks = nn.Sequential(*(
            Block(nn.Linear(a, b), norm(b) if norm is not None else None, ACTIVATIONS[cfg.activation](),
                  nn.Dropout(cfg.dropout) if cfg.dropout > 0 else None, first, cfg.residual and a == b)
            for a, b in zip(w, w[1:])))
        self.classifier = nn.Linear(w[-1], n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.blocks(x.flatten(1)))

    def layers(self) -> dict[str, nn.Module]:
        """The Linear layers by display name: layer1, layer2, ... and output."""
        return {**{f"layer{i + 1}": b.linear for i, b in enumerate(self.blocks)}, "output": self.classifier}

    def hidden(self) -> dict[str, nn.Module]:
        return {f"layer{i + 1}": b for i, b in enumerate(self.blocks)}


class StackedMLP(Stacked):
    """K MLPs of one architecture (``cfg``'s depth, width, activation, norm, residual), each with its own
    dropout probability and generator."""

    def __init__(self, shape, n_classes: int, cfg, dropout_p: list[float], dropout_generators):
        super().__init__(cfg, shape, n_classes)
        self.dropout = StackedDropout(dropout_p, dropout_generators)
        k, w, first = len(dropout_p), cfg.widths(math.prod(shape)), cfg.norm_position == "before_activation"
        self.blocks = nn.Sequential(*(
            Block(StackedLinear(k, a, b), StackedNorm(cfg.norm, k, b) if cfg.norm != "none" else None,
                  Activation(cfg.activation), self.dropout, first, cfg.residual and a == b) for a, b in zip(w, w[1:])))
        self.classifier = StackedLinear(k, w[-1], n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(K, B, *shape) -> (K, B, classes); or a shared (N, *shape) -> (K, N, classes)."""
        return self.classifier(self.blocks(x.flatten(x.dim() - len(self.shape))))
