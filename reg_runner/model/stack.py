"""K networks of one architecture as one module, and the stacked layers the families build them from.

Every parameter and buffer of a ``Stacked`` module has a leading member dimension; member k's network is slice
``[k]`` of each, under the plain network's state_dict names (a checkpoint the plain network loads). A single run
is a stack of one. Member k's numbers must not depend on the other members: every operation acts on each
member's slice alone, or is one whose per-member result is bitwise the same whatever is stacked beside it, which
depends on the machine's kernels (``reg_runner.exactness`` checks it). ``Looped`` is the form every family has,
exact by construction; ``mlp`` and ``cnn`` build a faster one from the layers below.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn


def weight_layers(net: nn.Module) -> dict[str, nn.Module]:
    """A plain network's weight layers by display name: its ``layers()`` if it declares them, else every
    module with a weight of two or more dimensions (Linear and convolution weights), by module path."""
    if hasattr(net, "layers"):
        return net.layers()
    return {name: m for name, m in net.named_modules()
            if isinstance(getattr(m, "weight", None), torch.Tensor) and m.weight.dim() >= 2}


def hidden_blocks(net: nn.Module) -> dict[str, nn.Module]:
    """The modules whose outputs are a plain network's hidden activations, by display name (``hidden()``)."""
    return net.hidden() if hasattr(net, "hidden") else {}


def weight_names(net: nn.Module) -> dict[str, str]:
    """Display name -> state_dict name of each weight layer's weight."""
    names = {id(p): n for n, p in net.named_parameters()}
    return {display: names[id(layer.weight)] for display, layer in weight_layers(net).items()}


def each_tensor(root: nn.Module, f) -> None:
    """Every parameter and buffer of ``root``'s modules replaced by ``f`` of it (a parameter by a parameter; one that
    modules share, tied weights, stays shared; a buffer kept out of the state_dict stays out)."""
    new: dict[int, tuple] = {}  # id -> (the old tensor, kept alive so that its id is not reused; its replacement)
    for module in root.modules():
        for name, t in [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]:
            if id(t) not in new:
                new[id(t)] = (t, nn.Parameter(f(t)) if isinstance(t, nn.Parameter) else f(t))
            setattr(module, name, new[id(t)][1])


class Stacked(nn.Module):
    """Base of every stacked form: ``shape`` and ``n_classes`` of its networks, and its weights' names, read off
    ``cfg``'s plain network built without memory."""

    def __init__(self, cfg, shape: tuple[int, ...], n_classes: int):
        super().__init__()
        self.shape, self.n_classes = tuple(shape), n_classes
        with torch.device("meta"):
            self.weight_names = weight_names(cfg.plain(self.shape, n_classes))

    def weights(self) -> dict[str, nn.Parameter]:
        """The stacked weights of the weight layers, by display name (what L1/L2 and the probes act on)."""
        return {display: self.get_parameter(name) for display, name in self.weight_names.items()}

    def member_state(self, k: int) -> dict[str, torch.Tensor]:
        """Member k's network as a plain state_dict (copies)."""
        return {name: t[k].clone() for name, t in self.state_dict().items()}

    def load_member_state(self, k: int, state: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for name, t in self.state_dict().items():
                t[k].copy_(state[name])

    @torch.no_grad()
    def keep(self, members: list[int]) -> None:
        """Only ``members`` (indices, in order) stay in the stack: the others' slices, and what a module keeps per
        member besides its tensors (``keep_members``: dropout probabilities, generators...), are dropped."""
        index = torch.tensor(members, device=next(iter(self.parameters())).device)
        each_tensor(self, lambda t: t.index_select(0, index))
        for module in self.modules():
            if hasattr(module, "keep_members"):
                module.keep_members(members)

    def initialize_as_plain(self, k: int, build, generator: torch.Generator) -> None:
        """Member k's weights as ``build()`` (a plain network) initializes them, its draws seeded from
        ``generator`` and made on the CPU (so the weights do not depend on the device)."""
        seed = int(torch.randint(2**62, (1,), generator=generator, device=generator.device))
        with torch.random.fork_rng(devices=[]), torch.device("cpu"):
            torch.manual_seed(seed)
            net = build()
        self.load_member_state(k, net.state_dict())

    @torch.no_grad()
    def initialize_with(self, k: int, scheme: str, activation: str, generator: torch.Generator) -> None:
        """Member k's weight layers (``weights()``, in order, weight then bias) by ``scheme`` (``model.init``), drawn
        from ``generator`` alone. ``default`` is PyTorch's ``reset_parameters``; the others zero the bias and take the
        gain of ``activation`` where torch knows it, else ReLU's."""
        nonlinearity = activation if activation in ("relu", "leaky_relu", "tanh", "sigmoid") else "relu"
        for name in self.weight_names.values():
            layer = self.get_submodule(name.rpartition(".")[0])  # the module whose weight it is
            w, b = layer.weight[k], layer.bias[k] if getattr(layer, "bias", None) is not None else None
            DRAWS[scheme](w, nonlinearity, generator)
            if b is not None and scheme == "default":  # nn.Linear's and nn.Conv2d's reset_parameters
                fan_in = w[0].numel()  # inputs x kernel size: what one output sees
                bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
                nn.init.uniform_(b, -bound, bound, generator=generator)
            elif b is not None:
                nn.init.zeros_(b)


# a scheme's draw of a weight ``w`` from generator ``g``; ``nl``: the activation whose gain it takes
DRAWS = {
    "default": lambda w, nl, g: nn.init.kaiming_uniform_(w, a=math.sqrt(5), generator=g),  # bias: initialize_with
    "xavier_uniform": lambda w, nl, g: nn.init.xavier_uniform_(w, generator=g),
    "xavier_normal": lambda w, nl, g: nn.init.xavier_normal_(w, generator=g),
    "kaiming_uniform": lambda w, nl, g: nn.init.kaiming_uniform_(w, nonlinearity=nl, generator=g),
    "kaiming_normal": lambda w, nl, g: nn.init.kaiming_normal_(w, nonlinearity=nl, generator=g),
    "orthogonal": lambda w, nl, g: nn.init.orthogonal_(w, gain=nn.init.calculate_gain(nl), generator=g),
}


def stack(members: list, shape: tuple[int, ...], n_classes: int, dropout_generators: list) -> Stacked:
    """K networks as one, member k configured by ``members[k]``: the family's own stacked form, else ``Looped``."""
    out = members[0].stacked(shape, n_classes, members, dropout_generators)
    return Looped(members, shape, n_classes, dropout_generators) if out is None else out


class Looped(Stacked):
    """Each member's own plain network, built without memory, run on its slice of the stacked tensors (a copy of
    member 0's network with a leading member dimension) by ``torch.func.functional_call``, on its own batch: each
    member runs exactly its lone operations, its dropout drawn from its own generator, which seeds the global one
    around its call."""

    def __init__(self, members: list, shape: tuple[int, ...], n_classes: int, generators: list):
        super().__init__(members[0], shape, n_classes)
        template = members[0].plain(shape, n_classes)
        with torch.device("meta"):
            self.nets = [m.plain(shape, n_classes) for m in members]  # a plain list: not registered, not moved
        self.generators = list(generators)
        for name, child in template.named_children():
            self.add_module(name, child)
        for name, p in template.named_parameters(recurse=False):
            self.register_parameter(name, p)
        for name, b in template.named_buffers(recurse=False):
            self.register_buffer(name, b, persistent=name in template.state_dict())
        with torch.no_grad():
            each_tensor(self, lambda t: t.unsqueeze(0).repeat(len(members), *[1] * t.dim()))

    def keep_members(self, members: list[int]) -> None:
        self.nets = [self.nets[i] for i in members]
        self.generators = [self.generators[i] for i in members]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shared = x.dim() == len(self.shape) + 1
        tensors = dict(self.named_parameters()) | dict(self.named_buffers())  # with those out of the state_dict
        outs = []
        for k, net in enumerate(self.nets):
            net.train(self.training)
            member = {name: t[k] for name, t in tensors.items()}
            g = self.generators[k] if self.training else None
            with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else [], enabled=g is not None):
                if g is not None:
                    torch.manual_seed(int(torch.randint(2**62, (1,), generator=g, device=g.device)))
                outs.append(torch.func.functional_call(net, member, (x if shared else x[k],)))
        return torch.stack(outs)


# --- layers the families' stacked forms share ---------------------------------------------------------


class StackedLinear(nn.Module):
    """K linear layers: batched matrix products."""

    def __init__(self, members: int, n_in: int, n_out: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(members, n_out, n_in))
        self.bias = nn.Parameter(torch.empty(members, n_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(K, B, n_in) -> (K, B, n_out), one batch per member; or (N, n_in), one input every member sees."""
        if x.dim() == 2:  # one wide matrix product for all members: x is read once
            k, n_out, n_in = self.weight.shape
            out = torch.addmm(self.bias.reshape(-1), x, self.weight.reshape(k * n_out, n_in).t())
            return out.view(len(x), k, n_out).transpose(0, 1).contiguous()
        return torch.baddbmm(self.bias.unsqueeze(1), x, self.weight.transpose(1, 2))


class StackedDropout(nn.Module):
    """Per-member probability and masks, each member's drawn from its own generator: member k's mask is the
    one a lone run draws for a tensor of member k's slice's shape."""

    def __init__(self, p: list[float], generators: list[torch.Generator | None]):
        super().__init__()
        self.p, self.generators = list(p), list(generators)
        self._scales: dict = {}  # 1 / (1 - p) per member, by (dtype, device): made once, not per batch

    def keep_members(self, members: list[int]) -> None:
        self.p = [self.p[i] for i in members]
        self.generators = [self.generators[i] for i in members]
        self._scales = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or not any(self.p):
            return x
        mask = torch.ones_like(x)
        for k, (p, g) in enumerate(zip(self.p, self.generators)):
            if p > 0:
                mask[k].bernoulli_(1.0 - p, generator=g)
        return x * mask * self._scale(x).view(-1, *([1] * (x.dim() - 1)))

    def _scale(self, x: torch.Tensor) -> torch.Tensor:
        """1 / (1 - p) of every member, on ``x``'s device."""
        key = (x.dtype, x.device)
        if key not in self._scales:  # a copy from the host per batch would make a GPU wait for it
            self._scales[key] = torch.tensor([1.0 / (1.0 - p) for p in self.p], dtype=x.dtype, device=x.device)
        return self._scales[key]

    def member(self, k: int, x: torch.Tensor) -> torch.Tensor:
        """Member k's dropout on its own tensor: the mask and scale ``forward`` gives its slice of a stack."""
        p = self.p[k]
        if not self.training or p == 0:
            return x
        mask = torch.empty_like(x).bernoulli_(1.0 - p, generator=self.generators[k])
        return x * mask * self._scale(x)[k]


BN_MOMENTUM, NORM_EPS = 0.1, 1e-5  # torch's BatchNorm and LayerNorm / GroupNorm defaults


class StackedNorm(nn.Module):
    """A norm with a gain (and bias) per member and feature: ``batchnorm`` and ``groupnorm`` (``groups`` groups of
    channels; one: LayerNorm over each image) member by member, since batch_norm's backward over K x F channels
    depends on K; ``layernorm`` and ``rmsnorm`` over each row's last dimension, on the whole stack."""

    def __init__(self, kind: str, members: int, features: int, groups: int = 1):
        super().__init__()
        self.kind, self.groups = kind, groups
        self.weight = nn.Parameter(torch.ones(members, features))
        if kind != "rmsnorm":
            self.bias = nn.Parameter(torch.zeros(members, features))
        if kind == "batchnorm":
            self.register_buffer("running_mean", torch.zeros(members, features))
            self.register_buffer("running_var", torch.ones(members, features))
            self.register_buffer("num_batches_tracked", torch.zeros(members, dtype=torch.long))

    def member(self, k: int, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """Member k's norm on its own tensor (``weight``, ``bias``: its slices of the gains), as ``forward`` gives
        its slice of a stack: the batch and group norms only (BatchNorm's counter is ``count_batch``'s)."""
        if self.kind == "groupnorm":
            return F.group_norm(x, self.groups, weight, bias, NORM_EPS)
        return F.batch_norm(x, self.running_mean[k], self.running_var[k], weight, bias, self.training, BN_MOMENTUM,
                            NORM_EPS)

    def count_batch(self) -> None:
        if self.kind == "batchnorm" and self.training:
            self.num_batches_tracked.add_(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "layernorm":
            return F.layer_norm(x, x.shape[-1:], eps=NORM_EPS) * self.weight.unsqueeze(1) + self.bias.unsqueeze(1)
        if self.kind == "rmsnorm":
            return F.rms_norm(x, x.shape[-1:]) * self.weight.unsqueeze(1)
        members = zip(x.unbind(0), self.weight.unbind(0), self.bias.unbind(0))
        out = torch.stack([self.member(k, xk, wk, bk) for k, (xk, wk, bk) in enumerate(members)])
        self.count_batch()
        return out


ACTIVATIONS = {"relu": nn.ReLU, "leaky_relu": nn.LeakyReLU, "gelu": nn.GELU, "silu": nn.SiLU, "elu": nn.ELU,
               "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}
EXACT = {"relu": torch.relu, "leaky_relu": F.leaky_relu}  # exact arithmetic: applied to the whole stack


class Activation(nn.Module):
    """An activation on a stack: the exact ones on the whole stack at once; the transcendental ones member by
    member (their vectorized and scalar paths round differently depending on where a member's elements fall,
    which depends on K)."""

    def __init__(self, name: str):
        super().__init__()
        self.exact = EXACT.get(name)
        self.module = ACTIVATIONS[name]()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.exact is not None:
            return self.exact(x)
        return torch.stack([self.module(member) for member in x.unbind(0)])  # backward: one stack, not K copies

    def member(self, x: torch.Tensor) -> torch.Tensor:
        """On one member's tensor."""
        return self.exact(x) if self.exact is not None else self.module(x)
