"""Networks wrong in each way the family seam checks before a run: families and plain modules
(tests/test_bad_input.py)."""

from torch import nn

from reg_runner.model import ModelFamily


class Raises(ModelFamily):
    def plain(self, shape, n_classes):
        raise ValueError("no such layer")


class CheckRaises(ModelFamily):
    def check(self, shape, n_classes):
        return {"mnist": 1}[shape]

    def plain(self, shape, n_classes):
        return nn.Linear(3, n_classes)


class NotAModule(ModelFamily):
    def plain(self, shape, n_classes):
        return [nn.Linear(3, n_classes)]


class NoParameters(nn.Module):
    def forward(self, x):
        return x.flatten(1)[:, :10]


class ThreeClasses(nn.Module):
    def __init__(self, in_channels: int):
        super().__init__()
        self.fc = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(in_channels, 3))

    def forward(self, x):
        return self.fc(x)


class ForwardRaises(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 10)

    def forward(self, x):
        return self.fc(x)  # a (B, 1, 8, 8) batch: the shapes do not multiply


class Lazy(nn.Module):
    def __init__(self, num_classes: int):
        super().__init__()
        self.fc = nn.Sequential(nn.Flatten(), nn.LazyLinear(num_classes))

    def forward(self, x):
        return self.fc(x)


class Head(nn.Module):
    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        self.fc = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(in_channels, num_classes))

    def forward(self, x):
        return self.fc(x)


class LongOutput(Head):
    def forward(self, x):
        return self.fc(x).long()


class Detached(Head):
    def forward(self, x):
        return self.fc(x).detach()


class Frozen(Head):
    def __init__(self, in_channels: int, num_classes: int):
        super().__init__(in_channels, num_classes)
        self.requires_grad_(False)


class Exits(Head):
    def __init__(self, in_channels: int, num_classes: int):
        super().__init__(in_channels, num_classes)
        raise SystemExit(3)


class CheckReturns(ModelFamily):
    def check(self, shape, n_classes):
        return "needs 28x28 images"

    def plain(self, shape, n_classes):
        return nn.Sequential(nn.Flatten(), nn.Linear(shape[0] * shape[1] * shape[2], n_classes))


class PlainTensor(Head):
    def __init__(self, in_channels: int, num_classes: int):
        super().__init__(in_channels, num_classes)
        self.fc[2].scale = self.fc[2].weight.detach().new_ones(1)  # not a buffer: a stack builds it on the meta device


class WeightNormed(Head):
    def __init__(self, in_channels: int, num_classes: int):
        super().__init__(in_channels, num_classes)
        nn.utils.parametrizations.weight_norm(self.fc[2])


class ParameterInForward(Head):
    def forward(self, x):
        self.scale = nn.Parameter(x.new_ones(1))
        return self.fc(x) * self.scale
