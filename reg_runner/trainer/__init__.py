"""The ``trainer`` group: epochs, batches, evaluation, early stopping, device, checkpoints
(``reg_runner.trainer.engine``)."""

import math
from typing import Annotated

from reg_runner import device as device_lib
from reg_runner.keys import DETAIL, SETTING, STRUCTURAL
from reg_runner.schema import Bool, Group, Monitor, NonNegative, Positive, integer, one_of, optional, rule


class EarlyStopping(Group):
    enabled: Bool
    """stop when the monitored metric has not improved for patience evaluations"""
    monitor: Monitor
    """a validation metric; read only when enabled"""
    patience: integer(1)
    """evaluations without improvement before stopping; read only when enabled"""
    min_delta: NonNegative
    """smaller improvements do not count; read only when enabled"""


class TrainerConfig(Group):
    epochs: Annotated[integer(1), STRUCTURAL]
    """epochs to train"""
    batch_size: Annotated[integer(1), STRUCTURAL]
    """at most the training set"""
    eval_every: Annotated[integer(1), STRUCTURAL, DETAIL]
    """evaluate every this many epochs, and at the last"""
    eval_batch_size: Annotated[integer(1), STRUCTURAL, SETTING]
    """images per forward pass in evaluation (memory, not results)"""
    eval_precision: Annotated[one_of("fp32", "bf16"), STRUCTURAL]
    """fp32, or bf16: evaluation under bfloat16 autocast (training stays float32)"""
    accumulate: Annotated[integer(1), STRUCTURAL]
    """micro-batches per optimizer step, at most the batches of an epoch"""
    drop_last: Annotated[Bool, STRUCTURAL]
    """drop the last, smaller training batch of each epoch"""
    grad_clip: optional(Positive)
    """the global gradient L2 norm is clipped to this"""
    early_stopping: EarlyStopping
    device: Annotated[rule(str, device_lib.well_formed, device_lib.NAMES), STRUCTURAL, SETTING]
    """auto: CUDA, else MPS, else the CPU"""
    deterministic: Annotated[Bool, STRUCTURAL, DETAIL]
    """torch.use_deterministic_algorithms: the same numbers on a GPU, more slowly"""
    checkpoint_every: Annotated[integer(1), SETTING]
    """epochs between checkpoints (last.pt, metrics.json), and at the end"""

    def batches_per_epoch(self, n_train: int) -> int:
        """Batches in an epoch of ``n_train`` images: the last one smaller, unless ``drop_last``."""
        return n_train // self.batch_size if self.drop_last else math.ceil(n_train / self.batch_size)

    @property
    def evaluations(self) -> int:
        """The evaluations of a run: every ``eval_every`` epochs, and at the last."""
        return self.epochs // self.eval_every + (self.epochs % self.eval_every > 0)

    def steps_per_epoch(self, n_train: int) -> int:
        """Optimizer steps per epoch (one every ``accumulate`` batches, and one for the epoch's last, partial group):
        what per-batch schedules (onecycle, cyclic) are sized by."""
        return math.ceil(self.batches_per_epoch(n_train) / self.accumulate)
