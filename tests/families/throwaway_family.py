"""A model family no file of reg_runner knows: softmax regression on the flattened image, with dropout on its
input. It declares its schema and its plain network only; reg_runner's defaults give it a stacked form (each
member's own network on its slice), an initialization (the network's own, from the member's generator) and
a parameter count."""

import math
from typing import Annotated

from reg_runner.keys import OWN
from reg_runner.model import ModelFamily
from reg_runner.schema import number


class SoftmaxRegression(ModelFamily):
    dropout: Annotated[number(0, 1, hi_open=True), OWN]  # on the input pixels; each run's own

    def plain(self, shape, n_classes):
        from torch import nn

        return nn.Sequential(nn.Flatten(), nn.Dropout(self.dropout), nn.Linear(math.prod(shape), n_classes))
