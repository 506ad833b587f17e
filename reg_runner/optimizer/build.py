"""The optimizer a config names: its class imported, its arguments checked against its signature."""

import importlib
import inspect
import logging

import torch

from reg_runner.errors import ConfigError, UserError, cause, show
from reg_runner.optimizer import OptimizerConfig, scaled_lr
from reg_runner.schema import FLOAT32_MAX

log = logging.getLogger(__name__)


def optimizer_class(target: str) -> type:
    module, _, name = target.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except Exception as e:  # ImportError, AttributeError, or whatever the module raises on import
        raise ConfigError("optimizer._target_", target, f"an importable optimizer class ({type(e).__name__}: {e})") from None
    if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
        raise ConfigError("optimizer._target_", target, "a subclass of torch.optim.Optimizer")
    return cls


def check(cfg: OptimizerConfig, batch_size: int) -> int:
    """Before anything is made: every key is an argument of the class, and the class accepts the values.
    Returns the copies of the parameters that its state holds (``step_at``)."""
    params = inspect.signature(optimizer_class(cfg.target).__init__).parameters.values()
    named = [p.name for p in params if p.name not in ("self", "params")  # not what a **kwargs would swallow
             and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    for name, value in cfg.arguments.items():
        if name not in named:
            raise ConfigError(f"optimizer.{name}", value, f"{cfg.target} takes no argument {name!r}; "
                              f"its arguments are {', '.join(named)}")
    lr = scaled_lr(cfg.lr, cfg.lr_scaling, batch_size, cfg.base_batch_size)
    if lr > FLOAT32_MAX:  # the large-batch rule scaled it past what the optimizer's float32 step can hold
        raise ConfigError("optimizer.lr", cfg.lr, f"at most {FLOAT32_MAX * cfg.lr / lr:.4g} with optimizer.lr_scaling="
                          f"{cfg.lr_scaling} and a batch of {batch_size}: it scales to {lr:.4g}, past float32's "
                          f"{FLOAT32_MAX:.4g}")
    return step_at(cfg, batch_size, lr, "optimizer.lr", cfg.lr)


def step_at(cfg: OptimizerConfig, batch_size: int, lr: float, key: str, value) -> int:
    """One step of the optimizer at ``lr`` on a dense gradient (SparseAdam, LBFGS's closure, capturable on a
    CPU, a rate whose step overflows float32... say so now); ``key=value``: what set that rate. Returns the
    copies of the parameters its state then holds (Adam's two moments: 2)."""
    probe = torch.zeros(2, requires_grad=True)
    optimizer = build([probe], cfg, batch_size)
    for group in optimizer.param_groups:
        group["lr"] = lr
    probe.grad = torch.ones_like(probe)
    try:
        optimizer.step()
    except Exception as e:
        if "overflow" in str(e):  # the rate (a float32 scalar in the step's arithmetic) is what overflowed
            raise ConfigError(key, value, f"a smaller rate: one step of {cfg.target} at {lr:.4g} overflows float32 "
                              f"({cause(e)})") from None
        raise ConfigError("optimizer._target_", cfg.target, f"an optimizer that steps this model's dense gradients "
                          f"with its arguments ({cause(e)})") from None
    return sum(isinstance(t, torch.Tensor) and t.shape == probe.shape for t in optimizer.state[probe].values())


def build(params, cfg: OptimizerConfig, batch_size: int) -> torch.optim.Optimizer:
    """The optimizer, its lr scaled by the large-batch rule (``batch_size``: the effective batch)."""
    kwargs = dict(cfg.arguments, lr=scaled_lr(cfg.lr, cfg.lr_scaling, batch_size, cfg.base_batch_size))
    if "betas" in kwargs:
        kwargs["betas"] = tuple(kwargs["betas"])
    if cfg.lr_scaling != "none":
        log.info("lr %g scaled by the %s rule (batch %d / base %d): %g", cfg.lr, cfg.lr_scaling, batch_size,
                 cfg.base_batch_size, kwargs["lr"])
    cls = optimizer_class(cfg.target)
    try:
        return cls(params, **kwargs)
    except Exception as e:  # the class's own checks (an argument out of its range, fused with foreach...)
        shown = ", ".join(f"{k}={show(v)}" for k, v in kwargs.items())
        raise UserError(f"optimizer: {cfg.target} rejects {shown}: {e}") from None
