"""The ``optimizer`` group: a class named by ``_target_``, and its constructor's arguments.

Every key but ``_target_``, ``lr_scaling`` and ``base_batch_size`` goes to the constructor (``.build``). The
arguments torch's optimizers share are checked here by range; every key is also checked against the class's own
signature before the run starts, so a misspelled argument is an error even where ``**kwargs`` would swallow it.
"""

import math

from pydantic import ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from reg_runner.errors import ConfigError
from reg_runner.schema import (Bool, Fraction01, Group, LearningRate, NonNegative, Positive, Probability, Target,
                               integer, one_of, optional, pair)

# constructor arguments that torch's optimizers (and pytorch-optimizer's) share: their ranges, and what each does
# (the configuration reference: python -m reg_runner.docs)
ARGUMENTS = {
    "betas": (pair(0, 1), "the decay rates of the running means of the gradient and of its square (Lion: of its "
                          "update and momentum)"),
    "eps": (Positive, "added to the denominator, for numerical stability"),
    "weight_decay": (NonNegative, "decay of the weights; in sgd, adam and rmsprop added to the gradient as w·θ, "
                                  "in adamw, lion, lamb and lars decoupled from it (see L1/L2 penalties vs. weight "
                                  "decay)"),
    "momentum": (Fraction01, "the momentum factor"),
    "dampening": (Probability, "dampening of the momentum (SGD)"),
    "nesterov": (Bool, "Nesterov's momentum (SGD; needs momentum > 0 and dampening 0)"),
    "alpha": (Fraction01, "RMSprop's smoothing constant of the squared gradient"),
    "centered": (Bool, "RMSprop: normalize by the estimated variance of the gradient"),
    "amsgrad": (Bool, "Adam's AMSGrad variant (the maximum of the second moments)"),
    "lr_decay": (NonNegative, "Adagrad's learning-rate decay"),
    "initial_accumulator_value": (NonNegative, "Adagrad's starting sum of squared gradients"),
    "momentum_decay": (NonNegative, "NAdam's momentum decay"),
    "decoupled_weight_decay": (Bool, "NAdam and RAdam: decay the weights as AdamW does"),
    "trust_coefficient": (Positive, "LARS's trust coefficient (the layer-wise lr's scale)"),
    "weight_decouple": (Bool, "pytorch-optimizer: decouple the weight decay, as AdamW does"),
    "fixed_decay": (Bool, "pytorch-optimizer: a weight decay not scaled by the lr"),
    "maximize": (Bool, "maximize the objective instead of minimizing it"),
    "foreach": (optional(Bool), "torch's multi-tensor implementation; null: torch chooses"),
    "fused": (optional(Bool), "torch's fused implementation; null: torch chooses (it changes the last digits)"),
    "capturable": (Bool, "torch: the step can be captured in a CUDA graph"),
    "differentiable": (Bool, "torch: the step can be differentiated through"),
}


def scaled_lr(lr: float, rule: str, batch: int, base: int) -> float:
    """The large-batch rule: lr x (batch / base) for linear, lr x sqrt(batch / base) for sqrt."""
    ratio = batch / base
    return lr * {"none": 1.0, "linear": ratio, "sqrt": math.sqrt(ratio)}[rule]


class OptimizerConfig(Group):
    model_config = ConfigDict(extra="allow", frozen=True, strict=True, populate_by_name=True)

    target: Target = Field(alias="_target_")
    """the optimizer class"""
    lr: LearningRate
    """before lr_scaling"""
    lr_scaling: one_of("none", "linear", "sqrt")
    """the large-batch rule"""
    base_batch_size: integer(1)
    """the batch at which lr is used as given; read only with lr_scaling"""

    @property
    def arguments(self) -> dict:
        """The constructor's keyword arguments, lr included (before scaling)."""
        return {"lr": self.lr, **self.model_extra}

    @model_validator(mode="after")
    def _known_arguments(self):
        for name, value in self.model_extra.items():
            if name not in ARGUMENTS:
                continue  # checked against the class's signature before the run starts
            try:
                ARGUMENTS[name][0].__metadata__[0].func(value)
            except PydanticCustomError as e:
                raise ConfigError(f"optimizer.{name}", value, e.context["allowed"]) from None
        extra = self.model_extra
        if extra.get("nesterov") and not (extra.get("momentum", 0) > 0 and extra.get("dampening", 0) == 0):
            raise ConfigError("optimizer.nesterov", True, "false unless optimizer.momentum > 0 and "
                              "optimizer.dampening = 0 (Nesterov's method needs momentum without dampening)")
        return self
