"""The ``scheduler`` group: the learning-rate schedule (``reg_runner.scheduler.schedule``), each option with its
own keys; when each steps, and its warmup: docs/training.md, "Schedules".
"""

from typing import Annotated, Literal, Union

from pydantic import Field

from reg_runner.schema import (Bool, Fraction01, Group, LearningRate, Monitor, NonNegative, integer, number, one_of,
                               optional)

Decay = number(0, 1, lo_open=True)  # a factor that lowers the lr: (0, 1]
PER_BATCH = ("onecycle", "cyclic")


def cycle_steps(epochs: float, steps_per_epoch: int) -> int:
    """Half a cyclic cycle in optimizer steps (the checks refuse less than one)."""
    return round(epochs * steps_per_epoch)


class Warmup(Group):
    warmup_epochs: integer(0)
    """linear warmup in front, in epochs"""
    warmup_start_factor: number(0, 1, lo_open=True)
    """the warmup starts at this fraction of the lr"""
    name: str  # each option's own Literal
    """the schedule; set by choosing the option (scheduler=<option>)"""


class Constant(Warmup):
    name: Literal["none"]


class Step(Warmup):
    name: Literal["step"]
    step_size: integer(1)
    """epochs between two decays"""
    gamma: Decay
    """the factor the lr is multiplied by at each decay"""


class Exponential(Warmup):
    name: Literal["exponential"]
    gamma: Decay
    """the factor the lr is multiplied by per epoch"""


class Linear(Warmup):
    name: Literal["linear"]
    end_factor: number(0, 1)
    """the lr at the end, as a fraction of the lr"""


class Cosine(Warmup):
    name: Literal["cosine"]
    eta_min: NonNegative
    """the lr at the end; at most optimizer.lr"""


class Cycle(Warmup):  # the keys of onecycle and cyclic (PER_BATCH)
    max_lr: optional(LearningRate)
    """null: optimizer.lr"""
    cycle_momentum: Bool
    """cycle momentum (or beta1) inversely to the lr, between the two below"""
    base_momentum: Fraction01
    """the lowest momentum of the cycle (at the highest lr); read only with cycle_momentum"""
    max_momentum: Fraction01
    """the highest momentum of the cycle (at the lowest lr); read only with cycle_momentum"""


class OneCycle(Cycle):
    name: Literal["onecycle"]
    pct_start: number(0, 1, lo_open=True, hi_open=True)
    """of the steps spent going up"""
    anneal_strategy: one_of("cos", "linear")
    """the shape of the fall: cosine or linear"""
    div_factor: number(1)
    """starts at max_lr / div_factor"""
    final_div_factor: number(1)
    """ends at max_lr / (div_factor * final_div_factor)"""


class Cyclic(Cycle):
    name: Literal["cyclic"]
    base_lr: optional(LearningRate)
    """null: optimizer.lr / 10"""
    step_size_up_epochs: number(0, lo_open=True)
    """half a cycle, in epochs (at least one optimizer step)"""
    mode: one_of("triangular", "triangular2", "exp_range")
    """triangular: constant amplitude; triangular2: halved each cycle; exp_range: times gamma per step"""
    gamma: Decay
    """exp_range's decay per step; read only with mode=exp_range"""


class Plateau(Warmup):
    name: Literal["plateau"]
    monitor: Monitor
    """val/acc or val/loss"""
    factor: number(0, 1, lo_open=True, hi_open=True)
    """lr *= factor on a plateau"""
    patience: integer(0)
    """evaluations without improvement before a cut"""
    threshold: NonNegative
    """a smaller (relative) improvement does not count"""
    min_lr: NonNegative
    """the lr never goes below this"""


SchedulerConfig = Annotated[
    Union[Constant, Step, Exponential, Linear, Cosine, OneCycle, Cyclic, Plateau], Field(discriminator="name")
]
