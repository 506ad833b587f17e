"""Weight initialization schemes, for member k of a stacked network, from the member's own generator.

``default`` is PyTorch's own (``reset_parameters`` of ``nn.Linear`` and ``nn.Conv2d``: Kaiming-uniform with
a=sqrt(5), bias uniform in +-1/sqrt(fan_in)). The other schemes set the bias to zero; the Kaiming schemes
and the orthogonal one use the gain of ``activation`` where torch knows it (relu, leaky_relu, tanh,
sigmoid), else ReLU's. Layers are initialized in order, weight then bias, so the draws are a function of
the member's seed alone.
"""

import math

import torch
from torch import nn

# a scheme's draw of a weight ``w`` from generator ``g``; ``nl``: the activation whose gain it takes
DRAWS = {
    "xavier_uniform": lambda w, nl, g: nn.init.xavier_uniform_(w, generator=g),
    "xavier_normal": lambda w, nl, g: nn.init.xavier_normal_(w, generator=g),
    "kaiming_uniform": lambda w, nl, g: nn.init.kaiming_uniform_(w, nonlinearity=nl, generator=g),
    "kaiming_normal": lambda w, nl, g: nn.init.kaiming_normal_(w, nonlinearity=nl, generator=g),
    "orthogonal": lambda w, nl, g: nn.init.orthogonal_(w, gain=nn.init.calculate_gain(nl), generator=g),
}


def initialize(model, k: int, scheme: str, activation: str, generator: torch.Generator) -> None:
    """Member k's weight layers (``model.weights()``, in order, with their biases) from ``generator``."""
    nonlinearity = activation if activation in ("relu", "leaky_relu", "tanh", "sigmoid") else "relu"
    g = generator
    modules = {id(p): m for m in model.modules() for p in m.parameters(recurse=False)}
    with torch.no_grad():
        for weight in model.weights().values():
            layer = modules[id(weight)]
            w, b = layer.weight[k], layer.bias[k] if getattr(layer, "bias", None) is not None else None
            if scheme == "default":  # nn.Linear's and nn.Conv2d's reset_parameters, from the member's generator
                nn.init.kaiming_uniform_(w, a=math.sqrt(5), generator=g)
                if b is not None:
                    fan_in = w[0].numel()  # inputs x kernel size: what one output sees
                    bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
                    nn.init.uniform_(b, -bound, bound, generator=g)
                continue
            DRAWS[scheme](w, nonlinearity, g)
            if b is not None:
                nn.init.zeros_(b)
