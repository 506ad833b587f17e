"""Whether a stack gives each member bitwise what the member gives alone, here, and whether it is worth it
(docs/stacking.md: why the machine decides, when a stack is timed, where findings are remembered). ``probe``
compares each member with itself alone on random numbers; ``verdict`` first times a few steps (``measure``).
"""

import functools
import hashlib
import json
import logging
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from reg_runner import atomic
from reg_runner.device import resolve
from reg_runner.errors import first_line
from reg_runner.fingerprint import cpu_name
from reg_runner.signals import STOP

log = logging.getLogger(__name__)

CACHE_ENV = "REG_RUNNER_CACHE_DIR"  # the folder reg_runner remembers results in (tests set it to a temp folder)
MARGIN = 0.9  # a stack trains only where it takes at most this share of its runs' time alone (timings are noisy)


class Interrupted(Exception):
    """A signal came during the check: it stopped between two steps, nothing of it remembered. The command's
    sweeper ends the command with its one line (``reg_runner.signals``)."""


def poll() -> None:
    """A signal came: the check stops here (``Interrupted``)."""
    if STOP.signal is not None:
        raise Interrupted(STOP.name)


def shapes(n_train: int, batch_size: int, drop_last: bool, eval_sizes: list[int], eval_batch_size: int):
    """The rows of the training batches and of the evaluation chunks a run of these sizes uses."""
    def rows(n: int, size: int, last: bool = True) -> set[int]:  # ``last``: a smaller last batch is kept
        return {min(size, n)} | ({n % size} if last and n > size and n % size else set())

    evaluation = set().union(*(rows(n, eval_batch_size) for n in eval_sizes))
    return tuple(sorted(rows(n_train, batch_size, not drop_last))), tuple(sorted(evaluation))


def _structure(checked, members: int) -> dict:
    """The arguments of ``key``, ``difference`` and ``measure`` for a stack of ``members`` runs of ``checked``."""
    t, split = checked.cfg.trainer, checked.split
    train_rows, eval_rows = shapes(split.n_train, t.batch_size, t.drop_last, [len(split.val_idx), split.n_test],
                                   t.eval_batch_size)
    return dict(model_cfg=checked.cfg.model, shape=tuple(split.shape), n_classes=split.n_classes, members=members,
                train_rows=train_rows, eval_rows=eval_rows, device=resolve(t.device))


def for_runs(checked, members: int) -> str | None:
    """``difference`` for a stack of ``members`` runs of ``checked``'s structure (``config.Checked``)."""
    return difference(**_structure(checked, members))


# --- what is remembered ---------------------------------------------------------------------------------------


def cache_dir() -> Path:
    """Where the checks' results are remembered (docs/stacking.md, "The check is made once")."""
    root = os.environ.get(CACHE_ENV) or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "reg_runner"
    return Path(root) / "exactness"


def key(model_cfg, shape, n_classes: int, members: int, train_rows, eval_rows, device: "torch.device") -> dict:
    """Everything a check's result depends on: the structure, the device and the CPU model (BLAS kernels differ by
    CPU), torch's build, the thread count, and the code of the stacked forms and of the family."""
    import torch

    family = sys.modules.get(type(model_cfg).__module__)
    sources = sorted(Path(__file__).parent.joinpath("model").glob("*.py")) + [Path(__file__)]
    sources += [Path(family.__file__)] if getattr(family, "__file__", None) else []
    code = hashlib.sha256()
    for source in sources:
        code.update(source.read_bytes())
    return dict(model=model_cfg.model_dump_json(by_alias=True), shape=list(shape), classes=n_classes,
                members=members, train_rows=list(train_rows), eval_rows=list(eval_rows), device=str(device),
                cpu=cpu_name(), threads=torch.get_num_threads(), torch=torch.__version__,
                torch_git=torch.version.git_version, cuda=torch.version.cuda, code=code.hexdigest())


def _path(k: dict) -> Path:
    return cache_dir() / (hashlib.sha256(json.dumps(k, sort_keys=True).encode()).hexdigest()[:32] + ".json")


def remembered(k: dict) -> dict:
    """What is remembered for ``k`` (``{}``: nothing); a damaged file is ignored with one warning (and rewritten
    once the check is made again)."""
    path = _path(k)
    try:
        entry = json.loads(path.read_text(encoding="utf-8"))
        if entry["key"] != k:
            raise ValueError("another key")
        if "speeds" in entry:  # numbers, each of its fields
            entry["speeds"] = asdict(Speeds(**{name: float(v) for name, v in entry["speeds"].items()}))
        if not isinstance(entry.get("difference", ""), (str, type(None))):
            raise ValueError("a difference that is not text")
        return entry
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, KeyError, TypeError) as e:
        log.warning("the remembered exactness check %s is damaged (%s): it is ignored, checked again and rewritten",
                    path, first_line(e) or type(e).__name__)
        return {}


def remember(k: dict, entry: dict) -> None:
    """``entry`` remembered for ``k`` (one small JSON file, written whole)."""
    path = _path(k)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic.write_json(path, {**entry, "key": k})
    except OSError as e:  # an unwritable cache costs the check again next time, nothing more
        log.warning("the exactness check's result cannot be remembered in %s (%s)", path.parent, e.strerror)


def difference(model_cfg, shape: tuple[int, ...], n_classes: int, members: int, train_rows, eval_rows,
               device: "torch.device") -> str | None:
    """``probe``'s finding, remembered (``cache_dir``). Only CPU is checked: on other devices a stacked member is
    not claimed to equal its lone run to the bit."""
    if members < 2 or device.type != "cpu":
        return None
    k = key(model_cfg, shape, n_classes, members, train_rows, eval_rows, device)
    entry = remembered(k)
    if "difference" not in entry:
        entry = _checked(entry, model_cfg, shape, n_classes, members, train_rows, eval_rows)
        remember(k, entry)
    return entry["difference"]


def _checked(entry: dict, model_cfg, shape, n_classes: int, members: int, train_rows, eval_rows, **_) -> dict:
    """``entry`` with the check's finding and its seconds (a signal: ``Interrupted``, and nothing to remember)."""
    started = time.perf_counter()
    found = probe(model_cfg, tuple(shape), n_classes, members, tuple(train_rows), tuple(eval_rows))
    return {**entry, "difference": found, "check_s": round(time.perf_counter() - started, 3)}


# --- whether a stack is worth it ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Speeds:
    """Seconds of one training step and of one evaluation chunk (the largest), one member alone and the stack."""

    lone_step: float
    stack_step: float
    lone_eval: float
    stack_eval: float


def saving(members: int, speeds: Speeds, steps: int, chunks: int) -> float:
    """Seconds a stack of ``members`` saves over its runs trained one after the other, each run taking ``steps``
    training steps and ``chunks`` evaluation chunks (negative: the stack costs time)."""
    lone = steps * speeds.lone_step + chunks * speeds.lone_eval
    return members * lone - (steps * speeds.stack_step + chunks * speeds.stack_eval)


def check_cost(members: int, speeds: Speeds, n_train_shapes: int, n_eval_shapes: int) -> float:
    """The check's seconds, estimated: at each shape each member alone, then a stack of every size from 2 to
    ``members`` (a stack of k taking about its share of the way from one member to all)."""
    def sizes(lone, stack):
        return members * lone + sum(lone + (stack - lone) * (k - 1) / (members - 1) for k in range(2, members + 1))

    return (n_train_shapes * sizes(speeds.lone_step, speeds.stack_step)
            + n_eval_shapes * sizes(speeds.lone_eval, speeds.stack_eval))


def worth(members: int, speeds: Speeds, steps: int, chunks: int, cost: float) -> str | None:
    """None if a stack of ``members`` repays ``cost`` (the check still to pay, 0 once made) and takes at most
    ``MARGIN`` of its runs' time alone; else why its runs train lone, in words."""
    alone = members * (steps * speeds.lone_step + chunks * speeds.lone_eval)
    saved = saving(members, speeds, steps, chunks)
    if saved <= (1 - MARGIN) * alone:
        return (f"a stack of them is no faster on this machine (their training steps and evaluations: about "
                f"{alone - saved:.2g} s stacked, {alone:.2g} s one after another)")
    if saved <= cost:
        return (f"their runs are too short to repay the exactness check here (stacked, they would save about "
                f"{saved:.2g} s; the check costs about {cost:.2g} s, once per structure on this machine)")
    return None


MEASURE_SHARE = 0.05  # the timing that decides may cost at most this share of the runs' own training steps
MEASURE_ROUNDS = 3


def too_short(members: int, steps: int) -> bool:
    """Whether timing a stack (``MEASURE_ROUNDS`` + 1 steps alone and stacked, a stacked step costing at most its
    members' lone steps) would cost more than ``MEASURE_SHARE`` of ``members`` runs of ``steps`` steps."""
    return (MEASURE_ROUNDS + 1) * (1 + members) > MEASURE_SHARE * members * steps


def verdict(checked, members: int, only_if_faster: bool = True) -> tuple[str | None, bool]:
    """Whether ``members`` runs of ``checked``'s structure train as a stack here: (None, True) if they do; else (why
    not, False where a stack would not give each run bitwise its lone numbers). Not ``only_if_faster``: every
    exact stack trains as one, and speed is not asked."""
    if members < 2:
        return None, True
    s = _structure(checked, members)
    if not only_if_faster:
        found = difference(**s)
        return (None, True) if found is None else (_INEXACT.format(found), False)
    k = key(**s)
    entry = remembered(k)
    t, split = checked.cfg.trainer, checked.split  # a run's planned training steps and evaluation chunks:
    steps = t.epochs * t.batches_per_epoch(split.n_train)
    chunks = t.evaluations * sum(math.ceil(n / t.eval_batch_size) for n in (len(split.val_idx), split.n_test))
    if "speeds" not in entry and too_short(members, steps):
        return (f"their runs are too short for a stack to pay here ({steps} training steps each: timing a stack of "
                f"them would cost more than {MEASURE_SHARE:.0%} of their own work)"), True
    speeds = Speeds(**entry["speeds"]) if "speeds" in entry else measure(**s)
    unchecked = s["device"].type == "cpu" and "difference" not in entry
    cost = check_cost(members, speeds, len(s["train_rows"]), len(s["eval_rows"])) if unchecked else 0.0
    why = worth(members, speeds, steps, chunks, cost)
    if why is None and unchecked:
        entry = _checked(entry, **s)
    if "speeds" not in entry or (why is None and unchecked):
        remember(k, {**entry, "speeds": asdict(speeds)})
    if why is None and entry.get("difference") is not None:
        return _INEXACT.format(entry["difference"]), False
    return why, True


_INEXACT = "on this machine a stack of their shapes does not give each run bitwise its lone numbers ({})"


def _build(model_cfg, shape, n_classes: int, device: "torch.device", indices, states=None, generator=None):
    """A stack of the members ``indices``, each with a fresh dropout generator seeded by its index (a member draws
    the same masks in any stack), and with its state from ``states``, or drawn from ``generator``, if given."""
    import torch

    from reg_runner.assembly import stacked

    stack = stacked([model_cfg] * len(indices), shape, n_classes, device,
                    [torch.Generator(device=device).manual_seed(1 + i) for i in indices])
    for slot, i in enumerate(indices if states is not None else ()):
        stack.load_member_state(slot, states[i])
    for slot in range(len(indices) if generator is not None else 0):
        model_cfg.initialize(stack, slot, generator)
    return stack


def _step(model, x, grad):
    """One training step of ``model`` on ``x``, ``grad`` its outputs' gradient: the outputs and the gradients."""
    poll()
    model.train()
    model.zero_grad(set_to_none=True)
    out = model(x.clone())  # a fresh tensor, as the engine's batch is
    out.backward(grad.clone())
    return out.detach(), [p.grad for p in model.parameters()]


MEASURED_ROWS = 256  # evaluation chunks are timed on this many images and scaled: the time is linear in them


def measure(model_cfg, shape, n_classes: int, members: int, train_rows, eval_rows, device: "torch.device") -> Speeds:
    """One member's and the stack's ``Speeds``: forward and backward (the optimizers step each run alone either way)
    at the largest training rows, evaluation at up to ``MEASURED_ROWS`` rows scaled to the largest chunk; in turns
    (a busy machine slows both alike), the fastest of ``MEASURE_ROUNDS`` after one to warm up."""
    import torch

    g = torch.Generator().manual_seed(0)
    rows, chunk = max(train_rows), min(max(eval_rows), MEASURED_ROWS)
    scale = max(eval_rows) / chunk
    calls = []
    for k in (1, members):
        model = _build(model_cfg, tuple(shape), n_classes, device, range(k), generator=g)
        x = torch.randn(k, rows, *shape, generator=g).to(device)
        grad = torch.randn(k, rows, n_classes, generator=g).to(device)
        shared = torch.randn(chunk, *shape, generator=g).to(device)

        def evaluate(model=model, shared=shared):
            with torch.inference_mode():
                model.eval()(shared)

        calls += [lambda model=model, x=x, grad=grad: _step(model, x, grad), evaluate]
    best = [math.inf] * len(calls)
    for r in range(MEASURE_ROUNDS + 1):
        for i, call in enumerate(calls):
            poll()
            started = time.perf_counter()
            call()
            if device.type != "cpu":
                getattr(torch, device.type).synchronize()
            if r >= 1:
                best[i] = min(best[i], time.perf_counter() - started)
    return Speeds(lone_step=best[0], lone_eval=best[1] * scale, stack_step=best[2], stack_eval=best[3] * scale)


def probe(model_cfg, shape, n_classes, members, train_rows, eval_rows, device=None) -> str | None:
    """None if every member of a stack of ``members`` (and of every smaller size) gives bitwise its lone outputs
    and gradients at these shapes on ``device``, else where it first differs (unremembered)."""
    import torch

    device = device or torch.device("cpu")
    g = torch.Generator().manual_seed(0)  # its own numbers: the runs' random streams are not touched

    build = functools.partial(_build, model_cfg, shape, n_classes, device)
    master = build(range(members), generator=g)
    states = [master.member_state(i) for i in range(members)]
    train = {rows: (torch.randn(members, rows, *shape, generator=g).to(device),
                    torch.randn(members, rows, n_classes, generator=g).to(device)) for rows in train_rows}
    shared = {rows: torch.randn(rows, *shape, generator=g).to(device) for rows in eval_rows}
    names = [name for name, _ in master.named_parameters()]
    alone = []  # each member's outputs and gradients alone: they do not depend on the stack's size
    for i in range(members):
        trained = {rows: _step(build([i], states), x[i : i + 1], grad[i : i + 1]) for rows, (x, grad) in train.items()}
        lone = build([i], states)
        poll()
        with torch.inference_mode():
            evaluated = {rows: lone.eval()(x)[0] for rows, x in shared.items()}
        alone.append((trained, evaluated))
    for k in range(2, members + 1):  # members leave a stack as they end: every size it passes through
        for rows, (x, grad) in train.items():
            out, grads = _step(build(range(k), states), x[:k], grad[:k])
            for i in range(k):
                own_out, own_grads = alone[i][0][rows]
                if not torch.equal(own_out[0], out[i]):
                    return f"training outputs, stack of {k}, member {i}, batches of {rows}"
                for name, a, b in zip(names, grads, own_grads):
                    if (a is None) != (b is None) or (a is not None and not torch.equal(a[i], b[0])):
                        return f"the gradient of {name}, stack of {k}, member {i}, batches of {rows}"
        stack = build(range(k), states)
        with torch.inference_mode():
            stack.eval()
            for rows, x in shared.items():
                poll()
                out = stack(x)
                for i in range(k):
                    if not torch.equal(alone[i][1][rows], out[i]):
                        return f"evaluation outputs, stack of {k}, member {i}, chunks of {rows}"
    return None
