"""The CNN family's networks (``reg_runner.model.cnn`` declares the family): ``CNNNet``, one network as ``torch.nn``
modules (what a run's checkpoint loads into), and ``StackedCNN``, K of them trained as one (docs/families.md).

On a GPU the stack's convolutions are grouped and its linear layers batched; on a CPU each member runs a lone
run's kernels on its slices of the stacked parameters and only the logits are stacked (docs/families.md: the
grouped and batched kernels round differently there and are no faster; stacked activations would be copied twice).
"""

import torch
import torch.nn.functional as F
from torch import nn

from reg_runner.model.mlp_net import Block
from reg_runner.model.stack import (ACTIVATIONS, EXACT, Activation, Stacked, StackedDropout, StackedLinear,
                                    StackedNorm)


def block(x: torch.Tensor, conv, norm, act, pool, dropout, pool_first: bool) -> torch.Tensor:
    """One conv block, the plain network's, a stack's and each member's alike (each passes its own layers):
    conv -> [norm] -> activation -> [2x2 pool] -> [dropout]. ``pool_first``: max pooling commutes with ReLU and
    LeakyReLU (max(f(a), f(b)) = f(max(a, b)), exactly, for a monotone f computed exactly): pooling first gives
    the same numbers, and the activation touches a quarter of them."""
    for layer in (conv, norm, pool, act, dropout) if pool_first else (conv, norm, act, pool, dropout):
        if layer is not None:
            x = layer(x)
    return x


def head(x: torch.Tensor, avgpool: bool, fc, classifier) -> torch.Tensor:
    """The last feature map (..., C, H, W) flattened or averaged over space, [the hidden layer], the classifier."""
    x = x.mean((-2, -1)) if avgpool else x.flatten(-3)
    return classifier(fc(x) if fc is not None else x)


class ConvBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, cfg):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, cfg.kernel, padding=cfg.kernel // 2)
        kind, groups = cfg.norm_groups()
        self.norm = nn.BatchNorm2d(c_out) if kind == "batchnorm" else nn.GroupNorm(groups, c_out) if groups else None
        self.act = ACTIVATIONS[cfg.activation]()
        self.pool = {"max": nn.MaxPool2d(2), "avg": nn.AvgPool2d(2)}.get(cfg.pool)
        self.dropout = nn.Dropout(cfg.dropout) if cfg.dropout > 0 else None
        self.pool_first = cfg.pool == "max" and cfg.activation in EXACT

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return block(x, self.conv, self.norm, self.act, self.pool, self.dropout, self.pool_first)


class CNNNet(nn.Module):
    """One network: load a run's ``checkpoints/best.pt`` model into it. Takes images (B, C, H, W)."""

    def __init__(self, shape: tuple[int, int, int], n_classes: int, cfg):
        super().__init__()
        sizes = [shape[0], *cfg.channels]
        self.blocks = nn.Sequential(*(ConvBlock(a, b, cfg) for a, b in zip(sizes, sizes[1:])))
        self.avgpool = cfg.head == "avgpool"
        features = cfg.features(shape)
        self.fc = Block(nn.Linear(features, cfg.hidden), None, ACTIVATIONS[cfg.activation](),
                        nn.Dropout(cfg.dropout) if cfg.dropout > 0 else None) if cfg.hidden else None
        self.classifier = nn.Linear(cfg.hidden or features, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return head(self.blocks(x), self.avgpool, self.fc, self.classifier)

    def layers(self) -> dict[str, nn.Module]:
        """The weight layers by display name: conv1, conv2, ..., fc (the hidden layer) and output."""
        out = {f"conv{i + 1}": b.conv for i, b in enumerate(self.blocks)}
        if self.fc is not None:
            out["fc"] = self.fc.linear
        return {**out, "output": self.classifier}

    def hidden(self) -> dict[str, nn.Module]:
        out = {f"conv{i + 1}": b for i, b in enumerate(self.blocks)}
        return {**out, "fc": self.fc} if self.fc is not None else out


# --- K networks as one ---------------------------------------------------------------------------------


class StackedConv2d(nn.Module):
    def __init__(self, members: int, c_in: int, c_out: int, kernel: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(members, c_out, c_in, kernel, kernel))
        self.bias = nn.Parameter(torch.empty(members, c_out))
        self.padding = kernel // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(K, B, C, H, W) -> (K, B, C_out, H, W), one batch per member; or a shared (N, C, H, W)."""
        k, c_out, c_in = self.weight.shape[:3]
        shared = x.dim() == 4  # one wide convolution for all members: the images are read once
        b = len(x) if shared else x.shape[1]
        grouped = x if shared else x.transpose(0, 1).reshape(b, k * c_in, *x.shape[3:])
        out = F.conv2d(grouped, self.weight.reshape(k * c_out, *self.weight.shape[2:]), self.bias.reshape(-1),
                       padding=self.padding, groups=1 if shared else k)
        return out.view(b, k, c_out, *out.shape[2:]).transpose(0, 1).contiguous()


class StackedConvBlock(nn.Module):
    def __init__(self, members: int, c_in: int, c_out: int, cfg, dropout: StackedDropout):
        super().__init__()
        self.conv = StackedConv2d(members, c_in, c_out, cfg.kernel)
        kind, groups = cfg.norm_groups()
        self.norm = StackedNorm(kind, members, c_out, groups) if cfg.norm != "none" else None
        self.act = Activation(cfg.activation)
        self.pool = {"max": F.max_pool2d, "avg": F.avg_pool2d}.get(cfg.pool)
        self.dropout = dropout
        self.pool_first = cfg.pool == "max" and cfg.activation in EXACT

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pool = None if self.pool is None else lambda h: self.pool(h.flatten(0, 1), 2).unflatten(0, h.shape[:2])
        return block(x, self.conv, self.norm, self.act, pool, self.dropout, self.pool_first)

    def member(self, k: int, x: torch.Tensor, weight, bias, gain, shift) -> torch.Tensor:
        """Member k's block on its own tensor, with its slices of the stacked tensors."""
        norm = None if self.norm is None else lambda h: self.norm.member(k, h, gain, shift)
        pool = None if self.pool is None else lambda h: self.pool(h, 2)
        return block(x, lambda h: F.conv2d(h, weight, bias, padding=self.conv.padding), norm, self.act.member, pool,
                     lambda h: self.dropout.member(k, h), self.pool_first)


class StackedCNN(Stacked):
    """K CNNs of one architecture, each with its own dropout probability and generator."""

    def __init__(self, shape: tuple[int, int, int], n_classes: int, cfg, dropout_p: list[float], dropout_generators):
        super().__init__(cfg, shape, n_classes)
        self.dropout = StackedDropout(dropout_p, dropout_generators)
        k = len(dropout_p)
        sizes = [shape[0], *cfg.channels]
        self.blocks = nn.Sequential(*(StackedConvBlock(k, a, b, cfg, self.dropout) for a, b in zip(sizes, sizes[1:])))
        self.avgpool = cfg.head == "avgpool"
        features = cfg.features(shape)
        self.fc = (Block(StackedLinear(k, features, cfg.hidden), None, Activation(cfg.activation), self.dropout)
                   if cfg.hidden else None)
        self.classifier = StackedLinear(k, cfg.hidden or features, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(K, B, C, H, W) -> (K, B, classes); or a shared (N, C, H, W) -> (K, N, classes)."""
        if x.device.type == "cpu":
            return self._member_by_member(x)
        return head(self.blocks(x), self.avgpool, self.fc, self.classifier)

    def _member_by_member(self, x: torch.Tensor) -> torch.Tensor:
        """Each member's network on its own batch (or the shared images), the same operations as ``forward`` gives
        its slice, and the logits stacked."""
        k = len(self.classifier.weight)
        inputs = [x] * k if x.dim() == len(self.shape) + 1 else list(x.unbind(0))
        layers = []  # per block: its tensors' members (unbound once: their gradients are stacked once)
        for b in self.blocks:  # a CNN's norms (batch and group norms) have a gain and a bias
            gains = (b.norm.weight.unbind(0), b.norm.bias.unbind(0)) if b.norm is not None else ([None] * k,) * 2
            layers.append((b.conv.weight.unbind(0), b.conv.bias.unbind(0), *gains))
        top = [(m.weight.unbind(0), m.bias.unbind(0))
               for m in ([self.fc.linear] if self.fc else []) + [self.classifier]]
        act, logits = self.fc.post[0] if self.fc else None, []  # the hidden layer's activation (it has no norm)
        for i, h in enumerate(inputs):
            for b, (w, bias, gain, shift) in zip(self.blocks, layers):
                h = b.member(i, h, w[i], bias[i], gain[i], shift[i])
            fc = None if self.fc is None else lambda h: self.dropout.member(i, act.member(
                torch.addmm(top[0][1][i], h, top[0][0][i].t())))
            logits.append(head(h, self.avgpool, fc, lambda h: torch.addmm(top[-1][1][i], h, top[-1][0][i].t())))
        for b in self.blocks:
            if b.norm is not None:
                b.norm.count_batch()
        return logits[0].unsqueeze(0) if k == 1 else torch.stack(logits)
