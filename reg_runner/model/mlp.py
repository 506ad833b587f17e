"""The MLP family (``model=mlp``, the default): the reference study's network; its networks are in
``reg_runner.model.mlp_net``. ``depth`` hidden blocks of ``width`` units, then a linear classifier, on the
flattened image. Each hidden block is ``Linear -> [norm] -> activation -> [dropout]``
(``norm_position=before_activation``, as in Ioffe & Szegedy's BatchNorm paper) or ``Linear -> activation ->
[norm] -> [dropout]`` (``after_activation``); with ``residual=true`` a block whose input and output widths match
adds its input to its output (He et al.).
"""

import math
from typing import Annotated

from reg_runner.errors import ConfigError
from reg_runner.keys import OWN
from reg_runner.model import ModelFamily
from reg_runner.schema import Bool, integer, number, one_of

ACTIVATIONS = ("relu", "leaky_relu", "gelu", "silu", "elu", "tanh", "sigmoid")
INITS = ("default", "xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal", "orthogonal")


class MLP(ModelFamily):
    depth: integer(0, 1000)
    """hidden layers"""
    width: integer(1)
    """units per hidden layer"""
    activation: one_of(*ACTIVATIONS)
    """the hidden blocks' activation"""
    norm: one_of("none", "batchnorm", "layernorm", "rmsnorm")
    """the normalization of each hidden block: BatchNorm, LayerNorm, RMSNorm or none"""
    norm_position: one_of("before_activation", "after_activation")
    """read only with a norm"""
    dropout: Annotated[number(0, 1, hi_open=True), OWN]  # each run's own: runs that differ in it train as one stack
    """probability of zeroing a hidden unit in training"""
    residual: Bool
    """read only where a block's input and output widths match (depth >= 2)"""
    init: Annotated[one_of(*INITS), OWN]
    """the weights' initialization (default: PyTorch's)"""

    def widths(self, in_features: int) -> list[int]:
        return [in_features] + [self.width] * self.depth

    def check(self, shape, n_classes: int) -> None:
        inputs = math.prod(shape)
        if self.residual and not (self.depth >= 2 or (self.depth == 1 and self.width == inputs)):
            raise ConfigError("model.residual", True, f"false with model.depth={self.depth}, model.width={self.width}: "
                              f"no block has equal input and output widths ({inputs} inputs), so none would add "
                              "its input")

    def unread(self, key: str) -> str | None:
        if key in ("width", "activation", "norm", "dropout") and self.depth == 0:
            return "model.depth=0: there is no hidden layer"
        if key == "norm_position" and (self.norm == "none" or self.depth == 0):
            return "model.norm=none (or model.depth=0): there is no norm to place"
        return None

    def uses_batch_statistics(self, shape, n_classes: int) -> bool:
        return self.norm == "batchnorm"

    def describe(self) -> str:
        parts = [f"MLP {self.depth}x{self.width} {self.activation}"]
        if self.norm != "none":
            parts.append(f"{self.norm} ({self.norm_position.replace('_', ' ')})")
        if self.residual:
            parts.append("residual")
        return ", ".join(parts)

    def plain(self, shape, n_classes: int):
        from reg_runner.model.mlp_net import MLPNet

        return MLPNet(math.prod(shape), n_classes, self)

    def stacked(self, shape, n_classes: int, members: list, dropout_generators: list):
        from reg_runner.model.mlp_net import StackedMLP

        return StackedMLP(shape, n_classes, self, [m.dropout for m in members], dropout_generators)

    def initialize(self, model, k: int, generator) -> None:
        model.initialize_with(k, self.init, self.activation, generator)
