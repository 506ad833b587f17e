"""The ``trainer`` group: epochs, batches, evaluation, early stopping, device, checkpoints
(``reg_runner.trainer.loop``)."""

from typing import Annotated

from pydantic import PlainValidator

from reg_runner.schema import Bool, Group, Monitor, NonNegative, Positive, integer, one_of, optional, reject

PRECISIONS = ("fp32", "bf16")


def _device(v):
    if not (isinstance(v, str) and (v in ("auto", "cpu", "cuda", "mps") or
                                    (v.startswith("cuda:") and v[5:].isdigit()))):
        raise reject("one of auto, cpu, cuda, cuda:N, mps")
    return v


class EarlyStopping(Group):
    enabled: Bool
    monitor: Monitor  # a validation metric; read only when enabled
    patience: integer(1)  # evaluations without improvement before stopping; read only when enabled
    min_delta: NonNegative  # smaller improvements do not count; read only when enabled


class TrainerConfig(Group):
    epochs: integer(1)
    batch_size: integer(1)  # at most the training set
    eval_every: integer(1)  # evaluate every this many epochs, and at the last
    eval_batch_size: integer(1)
    eval_precision: one_of(*PRECISIONS)
    accumulate: integer(1)  # micro-batches per optimizer step, at most the batches of an epoch
    drop_last: Bool
    grad_clip: optional(Positive)  # the global gradient L2 norm is clipped to this
    early_stopping: EarlyStopping
    device: Annotated[str, PlainValidator(_device)]
    deterministic: Bool
    checkpoint_every: integer(1)
