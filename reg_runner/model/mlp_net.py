"""The MLP family's networks (``reg_runner.model.mlp`` declares the family).

``MLPNet`` is one network as ``torch.nn`` modules: a run's checkpoint loads into it. ``StackedMLP`` is K of
them trained as one: the linear layers are batched matrix products (one wide product when every member sees
the same input, as in evaluation), ReLU and LeakyReLU act on the whole stack, LayerNorm and RMSNorm on each
row; BatchNorm and the transcendental activations run member by member (batch_norm's backward over K*F
channels, and the vectorized and scalar paths of tanh, GELU and the like, round differently depending on
where a member's elements fall, which depends on K).
"""

import math

import torch
from torch import nn

from reg_runner.model.stack import ACTIVATIONS, Activation, FastStacked, StackedDropout, StackedLinear, StackedNorm

NORMS = {"none": None, "batchnorm": nn.BatchNorm1d, "layernorm": nn.LayerNorm, "rmsnorm": nn.RMSNorm}


def block(x: torch.Tensor, linear, post, residual: bool) -> torch.Tensor:
    """One hidden block, the plain network's and a stack's alike: ``linear``, then each of ``post`` (the norm and
    the activation in their order, the dropout), plus the input where ``residual``."""
    out = linear(x)
    for f in post:
        out = f(out)
    return x + out if residual else out


class Block(nn.Module):
    def __init__(self, n_in: int, n_out: int, cfg):
        super().__init__()
        self.linear = nn.Linear(n_in, n_out)
        norm = NORMS[cfg.norm](n_out) if NORMS[cfg.norm] is not None else None
        act = ACTIVATIONS[cfg.activation]()
        layers = [norm, act] if cfg.norm_position == "before_activation" else [act, norm]
        layers.append(nn.Dropout(cfg.dropout) if cfg.dropout > 0 else None)
        self.post = nn.Sequential(*(m for m in layers if m is not None))
        self.residual = cfg.residual and n_in == n_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return block(x, self.linear, self.post, self.residual)


class MLPNet(nn.Module):
    """One network: load a run's ``checkpoints/best.pt`` model into it. Takes images (B, C, H, W) or
    flattened (B, C*H*W)."""

    def __init__(self, in_features: int, n_classes: int, cfg):
        super().__init__()
        w = cfg.widths(in_features)
        self.blocks = nn.Sequential(*(Block(a, b, cfg) for a, b in zip(w, w[1:])))
        self.classifier = nn.Linear(w[-1], n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.blocks(x.flatten(1)))

    def layers(self) -> dict[str, nn.Module]:
        """The Linear layers by display name: layer1, layer2, ... and output."""
        return {**{f"layer{i + 1}": b.linear for i, b in enumerate(self.blocks)}, "output": self.classifier}

    def hidden(self) -> dict[str, nn.Module]:
        return {f"layer{i + 1}": b for i, b in enumerate(self.blocks)}


class StackedBlock(nn.Module):
    def __init__(self, members: int, n_in: int, n_out: int, cfg, dropout: StackedDropout):
        super().__init__()
        self.linear = StackedLinear(members, n_in, n_out)
        norm = StackedNorm(cfg.norm, members, n_out) if cfg.norm != "none" else None
        act = Activation(cfg.activation)
        # the norm at the index it has in the plain Block's post, so that the state_dict keys are the same
        self.post = nn.ModuleList([m for m in ([norm, act] if cfg.norm_position == "before_activation"
                                                 else [act, norm]) if m is not None])
        self.dropout = dropout
        self.residual = cfg.residual and n_in == n_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return block(x, self.linear, [*self.post, self.dropout], self.residual)


class StackedMLP(FastStacked):
    """K MLPs of one architecture (``cfg``'s depth, width, activation, norm, residual), each with its own
    dropout probability and generator."""

    def __init__(self, shape, n_classes: int, cfg, dropout_p: list[float], dropout_generators):
        super().__init__(shape, n_classes, cfg, dropout_p, dropout_generators)
        k = len(dropout_p)
        w = cfg.widths(math.prod(shape))
        self.blocks = nn.ModuleList(StackedBlock(k, a, b, cfg, self.dropout) for a, b in zip(w, w[1:]))
        self.classifier = StackedLinear(k, w[-1], n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(K, B, *shape) -> (K, B, classes); or a shared (N, *shape) -> (K, N, classes)."""
        x = x.flatten(x.dim() - len(self.shape))
        for block in self.blocks:
            x = block(x)
        return self.classifier(x)
