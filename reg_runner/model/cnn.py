"""The CNN family (``model=cnn``; its blocks and head: docs/families.md); its networks are in
``reg_runner.model.cnn_net``.
"""

from typing import Annotated

from pydantic import model_validator

from reg_runner.errors import ConfigError
from reg_runner.keys import OWN
from reg_runner.model import ModelFamily
from reg_runner.model.mlp import ACTIVATIONS, INITS, MLP
from reg_runner.schema import integer, number, one_of, rule


class CNN(ModelFamily):
    channels: rule(list, lambda v: isinstance(v, list) and 1 <= len(v) <= 16 and all(
        isinstance(c, int) and not isinstance(c, bool) and 1 <= c <= 4096 for c in v),
                   "a list of 1 to 16 channel counts, each an integer in [1, 4096] (one conv block each)", list)
    """output channels of each conv block, in order"""
    kernel: rule(int, lambda v: isinstance(v, int) and not isinstance(v, bool) and v in (1, 3, 5, 7, 9, 11),
                 "an odd integer in [1, 11] (the padding keeps the image's size)")
    """square kernels, odd: 'same' padding"""
    pool: one_of("max", "avg", "none")
    """2x2 pooling after each block (halves the image)"""
    norm: one_of("none", "batchnorm", "layernorm", "groupnorm")
    """the normalization of each conv block: BatchNorm, LayerNorm (one group), GroupNorm or none"""
    groups: integer(1)
    """GroupNorm's groups: divides every block's channels; read only with norm=groupnorm"""
    activation: one_of(*ACTIVATIONS)
    """the activation after each block and the hidden layer"""
    dropout: Annotated[number(0, 1, hi_open=True), OWN]  # each run's own: runs that differ in it train as one stack
    """probability of zeroing a unit after each block and the hidden layer"""
    hidden: integer(0, 1_000_000)
    """units of the fully connected layer before the classifier; 0: none"""
    head: one_of("flatten", "avgpool")
    """flatten the last feature map, or average it over space (one value per channel)"""
    init: Annotated[one_of(*INITS), OWN]
    """the weights' initialization (default: PyTorch's)"""

    @model_validator(mode="after")
    def _groups_divide(self):
        if self.norm == "groupnorm":
            if (bad := next((c for c in self.channels if c % self.groups), None)) is not None:
                raise ConfigError("model.groups", self.groups, f"a divisor of every block's channels "
                                  f"(model.channels={self.channels}: {bad} is not a multiple of it)")
        return self

    def norm_groups(self) -> tuple[str, int | None]:
        """The norm's kind and groups: LayerNorm over each image's (C, H, W), a gain and a bias per channel, is
        GroupNorm with one group; BatchNorm and none have no groups."""
        if self.norm in ("layernorm", "groupnorm"):
            return "groupnorm", 1 if self.norm == "layernorm" else self.groups
        return self.norm, None

    def feature_map(self, shape) -> tuple[int, int, int]:
        """The (channels, height, width) the last block gives for images of ``shape``."""
        _, h, w = shape
        if self.pool != "none":
            h, w = h >> len(self.channels), w >> len(self.channels)
        return self.channels[-1], h, w

    def features(self, shape) -> int:
        """What the head's first layer reads: the flattened feature map, or its channels' averages."""
        c, h, w = self.feature_map(shape)
        return c * h * w if self.head == "flatten" else c

    def check(self, shape, n_classes: int) -> None:
        _, h, w = self.feature_map(shape)
        if h < 1 or w < 1:
            raise ConfigError("model.channels", self.channels, f"at most {min(shape[1:]).bit_length() - 1} blocks "
                              f"with model.pool={self.pool}: each halves the {shape[1]}x{shape[2]} images")

    def unread(self, key: str) -> str | None:
        if key == "groups" and self.norm != "groupnorm":
            return f"model.norm={self.norm}: only groupnorm has groups"
        return None

    def describe(self) -> str:
        parts = [f"CNN {'-'.join(map(str, self.channels))} ({self.kernel}x{self.kernel}"
                 + (f", {self.pool} pool" if self.pool != "none" else "") + f") {self.activation}"]
        if self.norm != "none":
            parts.append(self.norm + (f" ({self.groups} groups)" if self.norm == "groupnorm" else ""))
        parts.append(f"{self.head} head" + (f", fc {self.hidden}" if self.hidden else ""))
        return ", ".join(parts)

    def plain(self, shape, n_classes: int):
        from reg_runner.model.cnn_net import CNNNet

        return CNNNet(tuple(shape), n_classes, self)

    def stacked(self, shape, n_classes: int, members: list, dropout_generators: list):
        from reg_runner.model.cnn_net import StackedCNN

        return StackedCNN(tuple(shape), n_classes, self, [m.dropout for m in members], dropout_generators)

    uses_batch_statistics = MLP.uses_batch_statistics  # model.norm=batchnorm, as the MLP
    initialize = MLP.initialize  # by its init and activation keys, as the MLP
