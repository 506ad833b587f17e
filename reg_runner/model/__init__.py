"""The ``model`` group: the MLP of the reference study and its architecture switches.

``reg_runner.model.mlp`` builds it; this module declares the keys it reads.
"""

from reg_runner.schema import Bool, Group, integer, number, one_of

ACTIVATIONS = ("relu", "leaky_relu", "gelu", "silu", "elu", "tanh", "sigmoid")
NORMS = ("none", "batchnorm", "layernorm", "rmsnorm")
NORM_POSITIONS = ("before_activation", "after_activation")
INITS = ("default", "xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal", "orthogonal")


class ModelConfig(Group):
    depth: integer(0, 1000)  # hidden layers
    width: integer(1)  # units per hidden layer
    activation: one_of(*ACTIVATIONS)
    norm: one_of(*NORMS)
    norm_position: one_of(*NORM_POSITIONS)  # read only with a norm
    dropout: number(0, 1, hi_open=True)  # probability of zeroing a hidden unit in training
    residual: Bool  # read only where a block's input and output widths match (depth >= 2)
    init: one_of(*INITS)


def n_parameters(cfg: ModelConfig, in_features: int, n_classes: int) -> int:
    """The parameter count of the MLP ``cfg`` describes, known before anything is allocated."""
    widths = [in_features] + [cfg.width] * cfg.depth
    linear = sum(a * b + b for a, b in zip(widths, widths[1:])) + widths[-1] * n_classes + n_classes
    norm = {"none": 0, "rmsnorm": 1}.get(cfg.norm, 2) * cfg.width * cfg.depth
    return linear + norm
