"""The MLP of the reference study: ``depth`` hidden layers of ``width`` units, then a linear classifier.

Each hidden block is ``Linear -> [norm] -> activation -> [dropout]`` (``norm_position=before_activation``,
as in Ioffe & Szegedy's BatchNorm paper) or ``Linear -> activation -> [norm] -> [dropout]``
(``after_activation``). With ``residual=true`` a block whose input and output widths match adds its
input to its output (all hidden blocks but the first).
"""

import torch
from torch import nn

ACTIVATIONS = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "elu": nn.ELU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
}
NORMS = {
    "none": None,
    "batchnorm": nn.BatchNorm1d,
    "layernorm": nn.LayerNorm,
    "rmsnorm": nn.RMSNorm,
}
NORM_POSITIONS = ("before_activation", "after_activation")
INITS = ("default", "xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal", "orthogonal")


class Block(nn.Module):
    def __init__(self, n_in: int, n_out: int, cfg):
        super().__init__()
        self.linear = nn.Linear(n_in, n_out)
        norm = NORMS[cfg.norm](n_out) if NORMS[cfg.norm] is not None else None
        act = ACTIVATIONS[cfg.activation]()
        layers = [norm, act] if cfg.norm_position == "before_activation" else [act, norm]
        layers.append(nn.Dropout(cfg.dropout) if cfg.dropout > 0 else None)
        # no Identity placeholders: each module call costs ~15 us of Python, 43 forward passes an epoch
        # (the state_dict keys are the same: only parameter-free modules are left out)
        self.post = nn.Sequential(*(m for m in layers if m is not None))
        self.residual = cfg.residual and n_in == n_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.linear(x)
        for module in self.post:  # not self.post(...): one module call less per block
            out = module(out)
        return x + out if self.residual else out


class MLP(nn.Module):
    def __init__(self, in_features: int, n_classes: int, cfg):
        super().__init__()
        widths = [in_features] + [cfg.width] * cfg.depth
        self.blocks = nn.Sequential(*(Block(a, b, cfg) for a, b in zip(widths, widths[1:])))
        self.classifier = nn.Linear(widths[-1], n_classes)
        initialize(self, cfg.init, cfg.activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.blocks(x))


def initialize(model: nn.Module, scheme: str, activation: str) -> None:
    """Re-initialize every Linear weight with ``scheme`` and its bias with zeros.

    ``default`` keeps PyTorch's own (Kaiming-uniform with a=sqrt(5), uniform bias). The Kaiming
    schemes use the gain of ``activation`` where torch knows it (relu, leaky_relu, tanh...),
    else ReLU's.
    """
    if scheme == "default":
        return
    nonlinearity = activation if activation in ("relu", "leaky_relu", "tanh", "sigmoid") else "relu"
    for m in model.modules():
        if isinstance(m, nn.Linear):
            if scheme == "xavier_uniform":
                nn.init.xavier_uniform_(m.weight)
            elif scheme == "xavier_normal":
                nn.init.xavier_normal_(m.weight)
            elif scheme == "kaiming_uniform":
                nn.init.kaiming_uniform_(m.weight, nonlinearity=nonlinearity)
            elif scheme == "kaiming_normal":
                nn.init.kaiming_normal_(m.weight, nonlinearity=nonlinearity)
            elif scheme == "orthogonal":
                nn.init.orthogonal_(m.weight, gain=nn.init.calculate_gain(nonlinearity))
            else:
                raise ValueError(f"unknown init {scheme!r}")
            nn.init.zeros_(m.bias)


def build(in_features: int, n_classes: int, cfg, device: torch.device) -> MLP:
    return MLP(in_features, n_classes, cfg).to(device)
