"""A family's network built and run once on the meta device (no memory, no arithmetic), before anything is
made: that it is one (a ``torch.nn.Module`` with parameters whose output is (batch, classes)), and what a run
of it takes in memory. A mistake in the family's code is one line (``reg_runner.model.calling``).
"""

import dataclasses

import torch

from reg_runner.errors import ConfigError, UserError
from reg_runner.model import calling
from reg_runner.model.stack import weight_layers
from reg_runner.private import memory_owner

CPU_TRIAL = 2**28  # bytes of parameters up to which a network the meta device cannot run is tried on the CPU


def network(cfg, shape: tuple[int, ...], n_classes: int) -> torch.nn.Module:
    """The family's plain network, on the meta device: a ``torch.nn.Module`` with parameters, or one line."""
    with torch.device("meta"):
        net = calling(cfg, "building its network", lambda: cfg.plain(tuple(shape), n_classes))
    if not isinstance(net, torch.nn.Module):
        raise ConfigError("model._target_", cfg.target, f"a family whose network is a torch.nn.Module (its plain() "
                          f"returns {type(net).__module__}.{type(net).__qualname__})")
    if not any(p.requires_grad for p in net.parameters()):
        raise ConfigError("model._target_", cfg.target, "a network with parameters to train (it has none"
                          + (" that requires a gradient)" if next(net.parameters(), None) is not None else ")"))
    if any(torch.nn.parameter.is_lazy(p) for p in net.parameters()):
        raise ConfigError("model._target_", cfg.target, "a network whose parameters have their shapes once it is "
                          "built, which a checkpoint and a stack need (it has lazy modules)")
    plain = next((f"{m}.{name}".lstrip(".") for m, module in net.named_modules() for name, value in vars(module).items()
                  if isinstance(value, torch.Tensor)), None)  # parameters and buffers live in their own dicts
    if plain is not None:
        raise ConfigError("model._target_", cfg.target, f"a network whose tensors are parameters or buffers, which "
                          f".to(device), a checkpoint and a stack carry (its {plain} is a plain attribute: "
                          "self.register_buffer(name, tensor, persistent=False) keeps it out of the checkpoint)")
    own = {id(p) for p in net.parameters()}
    if (computed := next((n for n, m in weight_layers(net).items() if id(m.weight) not in own), None)) is not None:
        raise ConfigError("model._target_", cfg.target, f"a network whose layers' weights are parameters, which L1/L2, "
                          f"the histograms and the landscapes act on (its {computed or 'weight'} is computed, as by a "
                          "parametrization such as weight_norm)")
    return net


@dataclasses.dataclass(frozen=True)
class Footprint:
    """Bytes a run takes on its device (docs/families.md, "Checked before anything is made"): the parameters with
    their copies, and the activations of a training batch and of an evaluation batch, which do not overlap in time."""

    n_parameters: int
    parameters: int
    training: int
    evaluation: int

    @property
    def activations(self) -> int:
        return max(self.training, self.evaluation)

    @property
    def total(self) -> int:
        return self.parameters + self.activations


def footprint(cfg, shape: tuple[int, ...], n_classes: int, batch: int, eval_batch: int, copies: int) -> Footprint:
    """The memory of a run of ``cfg``'s network (``copies``: of the parameters, the weights' own included), after
    checking its output on a training batch. A network the meta device cannot run (code that reads values:
    ``.item()``) is run on the CPU on two images, if small enough, and its activations scaled to the batches."""
    net = network(cfg, shape, n_classes)
    n = sum(p.numel() for p in net.parameters())
    size = next(net.parameters()).element_size()
    try:
        training, evaluation = _run(cfg, net, shape, n_classes, batch, eval_batch, "meta")
    except ConfigError:
        raise
    except UserError:
        if n * size > CPU_TRIAL:
            raise
        with torch.random.fork_rng(devices=[]), torch.device("cpu"):  # its dropout draws from no run's stream
            net = calling(cfg, "building its network", lambda: cfg.plain(tuple(shape), n_classes))
            training, evaluation = _run(cfg, net, shape, n_classes, 2, 2, "cpu")
        training, evaluation = training * batch // 2, evaluation * eval_batch // 2
    return Footprint(n, n * size * copies, training, evaluation)


def _run(cfg, net, shape, n_classes: int, batch: int, eval_batch: int, device: str) -> tuple[int, int]:
    """The bytes a training batch keeps for its backward pass, and an evaluation batch's largest module's input
    and output."""
    saved, own = {}, {id(p) for p in net.parameters()}

    def pack(t):
        base = memory_owner(t)  # a weight's transpose is the weight
        if id(base) not in own:
            saved[id(base)] = base.numel() * base.element_size()
        return t

    x = torch.zeros((batch, *shape), device=device)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = calling(cfg, "running its network", lambda: net.train()(x))
    if not (isinstance(out, torch.Tensor) and tuple(out.shape) == (batch, n_classes)):
        given = tuple(out.shape) if isinstance(out, torch.Tensor) else f"a {type(out).__name__}"
        raise ConfigError("model._target_", cfg.target, f"a network whose output is (batch, classes), ({batch}, "
                          f"{n_classes}) for a batch of {batch} of these {n_classes} classes (its output: {given})")
    if {id(p) for p in net.parameters()} != own:
        raise ConfigError("model._target_", cfg.target, "a network whose parameters are made before its forward, "
                          "which the optimizer is given (its forward made new ones, which would never train)")
    if not (out.is_floating_point() and out.requires_grad):
        raise ConfigError("model._target_", cfg.target, "a network whose output is floating-point scores computed from "
                          f"its parameters, which a loss can train (its output: {out.dtype}"
                          + (")" if not out.is_floating_point() else ", with no gradient: detached from them)"))
    peaks = [0]
    hooks = [m.register_forward_hook(lambda m, i, o: peaks.append(_bytes(i) + _bytes(o))) for m in net.modules()]
    try:
        with torch.no_grad():
            x = torch.zeros((eval_batch, *shape), device=device)
            calling(cfg, "running its network in evaluation", lambda: net.eval()(x))
    finally:
        for hook in hooks:
            hook.remove()
    return sum(saved.values()) + out.numel() * out.element_size(), max(peaks)


def sizing_key(cfg, measure) -> str | None:
    """The structural key of ``cfg`` (an integer, or a list of them) whose doubling grows ``measure(cfg)`` most;
    None if none grows it."""
    base, grown, out = measure(cfg), 0, None
    for key in cfg.structural_keys():
        value = getattr(cfg, key)
        values = value if isinstance(value, list) else [value]
        if not values or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            continue
        doubled = [2 * v for v in values]
        try:
            more = measure(cfg.model_copy(update={key: doubled if isinstance(value, list) else doubled[0]})) - base
        except Exception:  # the family cannot build that network: its size says nothing
            continue
        if more > grown:
            grown, out = more, key
    return out


def _bytes(value) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, (tuple, list)):
        return sum(_bytes(v) for v in value)
    return 0
