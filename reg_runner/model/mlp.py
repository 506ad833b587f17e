"""The MLP of the reference study: ``depth`` hidden layers of ``width`` units, then a linear classifier.

Each hidden block is ``Linear -> [norm] -> activation -> [dropout]`` (``norm_position=before_activation``,
as in Ioffe & Szegedy's BatchNorm paper) or ``Linear -> activation -> [norm] -> [dropout]``
(``after_activation``). With ``residual=true`` a block whose input and output widths match adds its
input to its output (all hidden blocks but the first).

``StackedMLP`` is K such networks trained as one: every parameter has a leading member dimension, and
member k's network is slice ``[k]`` of each. A single run is a stack of one. Its state_dict has the
plain ``MLP``'s keys, so member k's slice is a checkpoint any ``MLP`` loads. Member k's numbers do not
depend on the other members: every operation either acts on each member's slice alone, or is one
whose per-member result is bitwise the same whatever else is stacked beside it (batched matrix
products, a wide matrix product on a shared input, elementwise ops on exact arithmetic, per-row
normalization). BatchNorm and the transcendental activations run member by member: batch_norm's
backward over K*F channels, and the vectorized and scalar paths of tanh, GELU and the like, round
differently depending on where a member's elements fall, which depends on K.
"""

import math

import torch
import torch.nn.functional as F
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
EXACT = {"relu": torch.relu, "leaky_relu": F.leaky_relu}  # exact arithmetic: applied to the whole stack
NORMS = {"none": None, "batchnorm": nn.BatchNorm1d, "layernorm": nn.LayerNorm, "rmsnorm": nn.RMSNorm}
BN_MOMENTUM, NORM_EPS = 0.1, 1e-5  # nn.BatchNorm1d's and nn.LayerNorm's defaults


def widths(cfg, in_features: int) -> list[int]:
    return [in_features] + [cfg.width] * cfg.depth


# --- the plain network: what a member's checkpoint loads into --------------------------------------


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
        out = self.post(self.linear(x))
        return x + out if self.residual else out


class MLP(nn.Module):
    """One network, as ``torch.nn`` modules: load a run's ``checkpoints/best.pt`` model into it."""

    def __init__(self, in_features: int, n_classes: int, cfg):
        super().__init__()
        w = widths(cfg, in_features)
        self.blocks = nn.Sequential(*(Block(a, b, cfg) for a, b in zip(w, w[1:])))
        self.classifier = nn.Linear(w[-1], n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.blocks(x))


# --- K networks as one ---------------------------------------------------------------------------------


class StackedLinear(nn.Module):
    def __init__(self, members: int, n_in: int, n_out: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(members, n_out, n_in))
        self.bias = nn.Parameter(torch.empty(members, n_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: (K, B, n_in), each member its own batch; or (N, n_in), one input every member sees."""
        if x.dim() == 2:  # one wide matrix product for all members: x is read once
            k, n_out, n_in = self.weight.shape
            out = torch.addmm(self.bias.reshape(-1), x, self.weight.reshape(k * n_out, n_in).t())
            return out.view(len(x), k, n_out).transpose(0, 1).contiguous()
        return torch.baddbmm(self.bias.unsqueeze(1), x, self.weight.transpose(1, 2))


class StackedNorm(nn.Module):
    """BatchNorm, LayerNorm or RMSNorm with a gain (and bias) per member."""

    def __init__(self, kind: str, members: int, width: int):
        super().__init__()
        self.kind = kind
        self.weight = nn.Parameter(torch.ones(members, width))
        if kind != "rmsnorm":
            self.bias = nn.Parameter(torch.zeros(members, width))
        if kind == "batchnorm":
            self.register_buffer("running_mean", torch.zeros(members, width))
            self.register_buffer("running_var", torch.ones(members, width))
            self.register_buffer("num_batches_tracked", torch.zeros(members, dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = x.shape[-1]
        if self.kind == "batchnorm":  # member by member: batch_norm's backward over K*F channels depends on K
            out = torch.stack([
                F.batch_norm(xk, self.running_mean[k], self.running_var[k], wk, bk, self.training, BN_MOMENTUM, NORM_EPS)
                for k, (xk, wk, bk) in enumerate(zip(x.unbind(0), self.weight.unbind(0), self.bias.unbind(0)))])
            if self.training:
                self.num_batches_tracked.add_(1)
            return out
        if self.kind == "layernorm":
            return F.layer_norm(x, (f,), eps=NORM_EPS) * self.weight.unsqueeze(1) + self.bias.unsqueeze(1)
        return F.rms_norm(x, (f,)) * self.weight.unsqueeze(1)


class StackedDropout(nn.Module):
    """Per-member probability and masks, each member's drawn from its own generator."""

    def __init__(self, p: list[float], generators: list[torch.Generator | None]):
        super().__init__()
        self.p, self.generators = list(p), list(generators)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or not any(self.p):
            return x
        mask = torch.ones_like(x)
        for k, (p, g) in enumerate(zip(self.p, self.generators)):
            if p > 0:
                mask[k].bernoulli_(1.0 - p, generator=g)
        scale = torch.tensor([1.0 / (1.0 - p) for p in self.p], dtype=x.dtype, device=x.device).view(-1, 1, 1)
        return x * mask * scale


class Activation(nn.Module):
    def __init__(self, name: str):
        super().__init__()
        self.exact = EXACT.get(name)
        self.module = ACTIVATIONS[name]()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.exact is not None:
            return self.exact(x)
        return torch.stack([self.module(member) for member in x.unbind(0)])  # backward: one stack, not K copies


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
        out = self.linear(x)
        for module in self.post:
            out = module(out)
        out = self.dropout(out)
        return x + out if self.residual else out


class StackedMLP(nn.Module):
    """K MLPs of one architecture (``cfg``'s depth, width, activation, norm, residual), each with its own
    dropout probability and generator."""

    def __init__(self, in_features: int, n_classes: int, cfg, dropout_p: list[float], dropout_generators):
        super().__init__()
        k = len(dropout_p)
        self.dropout = StackedDropout(dropout_p, dropout_generators)
        w = widths(cfg, in_features)
        self.blocks = nn.ModuleList(StackedBlock(k, a, b, cfg, self.dropout) for a, b in zip(w, w[1:]))
        self.classifier = StackedLinear(k, w[-1], n_classes)

    @property
    def members(self) -> int:
        return self.classifier.weight.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(K, B, in) -> (K, B, classes); or a shared (N, in) -> (K, N, classes)."""
        for block in self.blocks:
            x = block(x)
        return self.classifier(x)

    def linears(self) -> dict[str, StackedLinear]:
        """The Linear layers by display name: layer1, layer2, ... and output."""
        return {**{f"layer{i + 1}": b.linear for i, b in enumerate(self.blocks)}, "output": self.classifier}

    def member_state(self, k: int) -> dict[str, torch.Tensor]:
        """Member k's network as a plain ``MLP`` state_dict (copies)."""
        return {name: t[k].clone() for name, t in self.state_dict().items()}

    def load_member_state(self, k: int, state: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for name, t in self.state_dict().items():
                t[k].copy_(state[name])

    @torch.no_grad()
    def keep(self, members: list[int]) -> None:
        """Only ``members`` (indices, in order) stay in the stack: the others' slices are dropped."""
        index = torch.tensor(members, device=self.classifier.weight.device)
        for module in self.modules():
            for name, p in list(module.named_parameters(recurse=False)):
                setattr(module, name, nn.Parameter(p.index_select(0, index)))
            for name, b in list(module.named_buffers(recurse=False)):
                module.register_buffer(name, b.index_select(0, index))
        self.dropout.p = [self.dropout.p[i] for i in members]
        self.dropout.generators = [self.dropout.generators[i] for i in members]


def initialize(model: StackedMLP, k: int, scheme: str, activation: str, generator: torch.Generator) -> None:
    """Initialize member k's Linear layers, in order, from ``generator``.

    ``default`` is PyTorch's own (Kaiming-uniform with a=sqrt(5), bias uniform in ±1/sqrt(fan_in)).
    The other schemes set the bias to zero; the Kaiming schemes use the gain of ``activation``
    where torch knows it (relu, leaky_relu, tanh...), else ReLU's.
    """
    nonlinearity = activation if activation in ("relu", "leaky_relu", "tanh", "sigmoid") else "relu"
    g = generator
    with torch.no_grad():
        for layer in model.linears().values():
            w, b = layer.weight[k], layer.bias[k]
            if scheme == "default":  # nn.Linear.reset_parameters, from the member's generator
                nn.init.kaiming_uniform_(w, a=math.sqrt(5), generator=g)
                bound = 1 / math.sqrt(w.shape[1]) if w.shape[1] > 0 else 0
                nn.init.uniform_(b, -bound, bound, generator=g)
                continue
            if scheme == "xavier_uniform":
                nn.init.xavier_uniform_(w, generator=g)
            elif scheme == "xavier_normal":
                nn.init.xavier_normal_(w, generator=g)
            elif scheme == "kaiming_uniform":
                nn.init.kaiming_uniform_(w, nonlinearity=nonlinearity, generator=g)
            elif scheme == "kaiming_normal":
                nn.init.kaiming_normal_(w, nonlinearity=nonlinearity, generator=g)
            elif scheme == "orthogonal":
                nn.init.orthogonal_(w, gain=nn.init.calculate_gain(nonlinearity), generator=g)
            else:
                raise ValueError(f"unknown init {scheme!r}")
            nn.init.zeros_(b)


def load(run_dir, which: str = "best") -> MLP:
    """The network of a run folder's ``checkpoints/<which>.pt``, as a plain ``MLP`` in eval mode."""
    from pathlib import Path

    from reg_runner.model import ModelConfig

    checkpoint = torch.load(Path(run_dir) / "checkpoints" / f"{which}.pt", map_location="cpu", weights_only=True)
    cfg = ModelConfig.model_validate(checkpoint["config"]["model"])
    state = checkpoint["model"]
    model = MLP(state["blocks.0.linear.weight"].shape[1] if cfg.depth else state["classifier.weight"].shape[1],
                state["classifier.weight"].shape[0], cfg)
    model.load_state_dict(state)
    return model.eval()
