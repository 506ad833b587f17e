"""Softmax regression (``model=softmax``): one linear layer on the flattened image, dropout on its input. A family
added to the package the way a contributor adds one, module and yaml, by tests/test_families.py in a copy of the
project."""

import math
from typing import Annotated

from reg_runner.keys import OWN
from reg_runner.model import ModelFamily
from reg_runner.schema import number


class Softmax(ModelFamily):
    dropout: Annotated[number(0, 1, hi_open=True), OWN]
    """probability of zeroing an input pixel in training"""

    def plain(self, shape, n_classes):
        from torch import nn

        return nn.Sequential(nn.Flatten(), nn.Dropout(self.dropout), nn.Linear(math.prod(shape), n_classes))
