"""The ``optimizer`` group: a class named by ``_target_``, and its constructor's arguments.

Every key but ``_target_``, ``lr_scaling`` and ``base_batch_size`` goes to the constructor
(``reg_runner.optimizer.build``), so any ``torch.optim`` class, or a library's, is one YAML file
away. The arguments torch's optimizers share are checked here by name and range; before the run
starts, every key is also checked against the class's own signature, so a misspelled argument is
an error even for classes that take ``**kwargs`` and would ignore it.
"""

import math

from pydantic import ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from reg_runner.errors import ConfigError
from reg_runner.schema import (Bool, Fraction01, Group, LearningRate, NonNegative, Positive, Probability, Target,
                               integer, one_of, optional, pair)

# constructor arguments that torch's optimizers (and pytorch-optimizer's) share, with their ranges
ARGUMENTS = {
    "betas": pair(0, 1),
    "eps": Positive,
    "weight_decay": NonNegative,
    "momentum": Fraction01,
    "dampening": Probability,
    "nesterov": Bool,
    "alpha": Fraction01,  # RMSprop's smoothing constant
    "centered": Bool,
    "amsgrad": Bool,
    "lr_decay": NonNegative,
    "initial_accumulator_value": NonNegative,
    "momentum_decay": NonNegative,
    "decoupled_weight_decay": Bool,
    "trust_coefficient": Positive,
    "weight_decouple": Bool,
    "fixed_decay": Bool,
    "maximize": Bool,
    "foreach": optional(Bool),
    "fused": optional(Bool),
    "capturable": Bool,
    "differentiable": Bool,
}


def scaled_lr(lr: float, rule: str, batch: int, base: int) -> float:
    """The large-batch rule: lr x (batch / base) for linear, lr x sqrt(batch / base) for sqrt."""
    ratio = batch / base
    return lr * {"none": 1.0, "linear": ratio, "sqrt": math.sqrt(ratio)}[rule]


class OptimizerConfig(Group):
    model_config = ConfigDict(extra="allow", frozen=True, strict=True, populate_by_name=True)

    target: Target = Field(alias="_target_")  # the optimizer class
    lr: LearningRate  # before lr_scaling
    lr_scaling: one_of("none", "linear", "sqrt")  # the large-batch rule
    base_batch_size: integer(1)  # the batch at which lr is used as given; read only with lr_scaling

    @property
    def arguments(self) -> dict:
        """The constructor's keyword arguments, lr included (before scaling)."""
        return {"lr": self.lr, **self.model_extra}

    @model_validator(mode="after")
    def _known_arguments(self):
        for name, value in self.model_extra.items():
            field = ARGUMENTS.get(name)
            if field is None:
                continue  # checked against the class's signature before the run starts
            try:
                field.__metadata__[0].func(value)
            except PydanticCustomError as e:
                raise ConfigError(f"optimizer.{name}", value, e.context["allowed"]) from None
        extra = self.model_extra
        if extra.get("nesterov") and not (extra.get("momentum", 0) > 0 and extra.get("dampening", 0) == 0):
            raise ConfigError("optimizer.nesterov", True, "false unless optimizer.momentum > 0 and "
                              "optimizer.dampening = 0 (Nesterov's method needs momentum without dampening)")
        return self
