"""LeNet-5 (LeCun et al. 1998) as a plain ``torch.nn.Module``, as a user writes one: no reg_runner import.
``in_channels`` and ``num_classes`` come from the data; ``width`` and ``dropout`` from the config."""

import torch
from torch import nn


class LeNet5(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, width: int = 6, dropout: float = 0.0):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(16 * 5 * 5, 120), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, num_classes),
        )

    def forward(self, x):
        return self.classifier(self.features(x))


class LeNet5BN(LeNet5):
    """With BatchNorm after each convolution."""

    def __init__(self, in_channels: int, num_classes: int, width: int = 6, dropout: float = 0.0):
        super().__init__(in_channels, num_classes, width, dropout)
        self.features.insert(1, nn.BatchNorm2d(width))
        self.features.insert(5, nn.BatchNorm2d(16))


class LeNet5Checked(LeNet5):
    """Code that reads a value (the meta device holds none): the check runs it on the CPU."""

    def forward(self, x):
        if not torch.isfinite(x).all():
            raise ValueError("the images hold a NaN or an infinity")
        return super().forward(x)


class Scaled(nn.Module):
    """x * scale: a constant kept out of the state_dict (a non-persistent buffer), as a normalization or a
    positional table often is."""

    def __init__(self, scale: float):
        super().__init__()
        self.register_buffer("scale", torch.tensor(scale), persistent=False)

    def forward(self, x):
        return x * self.scale


class LeNet5Constants(LeNet5):
    """With non-persistent buffers at the top and in a child: not in a checkpoint, there in every forward."""

    def __init__(self, in_channels: int, num_classes: int, width: int = 6, dropout: float = 0.0):
        super().__init__(in_channels, num_classes, width, dropout)
        self.register_buffer("shift", torch.tensor(0.5), persistent=False)
        self.features.insert(0, Scaled(2.0))

    def forward(self, x):
        return super().forward(x - self.shift)


class LeNet5Tied(LeNet5):
    """Two layers after the classifier that share one weight (tied weights), each with its own bias."""

    def __init__(self, in_channels: int, num_classes: int, width: int = 6, dropout: float = 0.0):
        super().__init__(in_channels, num_classes, width, dropout)
        self.first, self.second = nn.Linear(num_classes, num_classes), nn.Linear(num_classes, num_classes)
        self.second.weight = self.first.weight

    def forward(self, x):
        return self.second(torch.relu(self.first(super().forward(x))))
