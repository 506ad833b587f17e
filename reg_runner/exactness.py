"""Whether a stack gives each member bitwise what the member gives alone, for given shapes, here.

A stacked member equals its lone run only if every batched or wide matrix product computes the
member's slice exactly as the lone product does. On CPU that is a property of the BLAS kernels torch
picks, which depend on the shapes, on where each member's slice starts in memory and on the thread
count, not on the numbers. It holds for the reference MLP (width 100, batches of 300, evaluation in
2048s), but not for every shape: on the 2-core AMD EPYC of this project, a member's activations that
start 4 or 8 bytes past a 16-byte boundary (width 50 in batches of 25: 1,250 floats per member) and
a wide first-layer product of 10 or fewer outputs per member (``model.depth=0``) round differently
from a lone product, by about 1e-7.

So before members train as a stack, ``difference`` runs the stack's architecture on random numbers at
every batch shape the runs will use, at every size the stack can shrink to as members end, and
compares each member's outputs and gradients with the same member's alone. Where they differ, the
launcher trains those runs one at a time (a stack of one is a lone run by definition) and says why.
"""

import torch


def shapes(n_train: int, batch_size: int, drop_last: bool, eval_sizes: list[int], eval_batch_size: int):
    """The rows of the training batches and of the evaluation chunks a run of these sizes uses."""
    train = {min(batch_size, n_train)}
    if not drop_last and n_train > batch_size and n_train % batch_size:
        train.add(n_train % batch_size)
    evaluation = set()
    for n in eval_sizes:
        evaluation.add(min(eval_batch_size, n))
        if n > eval_batch_size and n % eval_batch_size:
            evaluation.add(n % eval_batch_size)
    return tuple(sorted(train)), tuple(sorted(evaluation))


def for_runs(checked, members: int) -> str | None:
    """``difference`` for a stack of ``members`` runs of ``checked``'s structure (``config.Checked``)."""
    from reg_runner.device import resolve

    c, split = checked.cfg, checked.split
    t = c.trainer
    train_rows, eval_rows = shapes(split.n_train, t.batch_size, t.drop_last, [len(split.val_idx), split.n_test],
                                   t.eval_batch_size)
    return difference(c.model, split.shape, split.n_classes, members, train_rows, eval_rows, resolve(t.device))


def difference(model_cfg, shape: tuple[int, ...], n_classes: int, members: int, train_rows, eval_rows,
               device: torch.device) -> str | None:
    """None if a stack of ``members`` (and of every smaller size) gives each member bitwise its lone
    outputs and gradients at these shapes; else where it first differs. Only CPU is checked: on other
    devices a stacked member is not claimed to equal its lone run to the bit."""
    if members < 2 or device.type != "cpu":
        return None
    key = (model_cfg.model_dump_json(by_alias=True), tuple(shape), n_classes, members, tuple(train_rows),
           tuple(eval_rows), torch.get_num_threads())
    if key not in _FOUND:
        _FOUND[key] = probe(model_cfg, tuple(shape), n_classes, members, tuple(train_rows), tuple(eval_rows))
    return _FOUND[key]


_FOUND: dict = {}  # what the probe found, per architecture, shapes and thread count (a multirun asks again)


def probe(model_cfg, shape, n_classes, members, train_rows, eval_rows,
          device: torch.device = torch.device("cpu")) -> str | None:
    """``difference``'s comparison itself, on any ``device`` and uncached: None if every member's outputs and
    gradients in the stack are bitwise its own alone, else where they first differ (what
    ``benchmarks/device_check.py`` reports for a GPU)."""
    from reg_runner.assembly import stacked

    g = torch.Generator().manual_seed(0)  # its own numbers: the runs' random streams are not touched

    def build(indices):
        """A stack of the members ``indices``, each with a dropout generator seeded by its index, fresh: a member
        draws the same masks in any stack."""
        return stacked([model_cfg] * len(indices), shape, n_classes, device,
                       [torch.Generator(device=device).manual_seed(1 + i) for i in indices])

    def step(model, x, grad):
        model.train()
        model.zero_grad(set_to_none=True)
        out = model(x.clone())  # a fresh tensor, as the engine's batch is
        out.backward(grad.clone())
        return out.detach(), [p.grad for p in model.parameters()]

    master = build(range(members))
    for i in range(members):
        model_cfg.initialize(master, i, g)
    states = [master.member_state(i) for i in range(members)]
    train = {rows: (torch.randn(members, rows, *shape, generator=g).to(device),
                    torch.randn(members, rows, n_classes, generator=g).to(device)) for rows in train_rows}
    shared = {rows: torch.randn(rows, *shape, generator=g).to(device) for rows in eval_rows}
    names = [name for name, _ in master.named_parameters()]
    alone = []  # each member's outputs and gradients alone: they do not depend on the stack's size
    for i, state in enumerate(states):
        trained = {}
        for rows, (x, grad) in train.items():
            lone = build([i])
            lone.load_member_state(0, state)
            trained[rows] = step(lone, x[i : i + 1], grad[i : i + 1])
        lone = build([i])
        lone.load_member_state(0, state)
        with torch.inference_mode():
            evaluated = {rows: lone.eval()(x)[0] for rows, x in shared.items()}
        alone.append((trained, evaluated))
    for k in range(2, members + 1):  # members leave a stack as they end: every size it passes through
        for rows, (x, grad) in train.items():
            stack = build(range(k))
            for i in range(k):
                stack.load_member_state(i, states[i])
            out, grads = step(stack, x[:k], grad[:k])
            for i in range(k):
                own_out, own_grads = alone[i][0][rows]
                if not torch.equal(own_out[0], out[i]):
                    return f"training outputs, stack of {k}, member {i}, batches of {rows}"
                for name, a, b in zip(names, grads, own_grads):
                    if (a is None) != (b is None) or (a is not None and not torch.equal(a[i], b[0])):
                        return f"the gradient of {name}, stack of {k}, member {i}, batches of {rows}"
        stack = build(range(k))
        for i in range(k):
            stack.load_member_state(i, states[i])
        with torch.inference_mode():
            stack.eval()
            for rows, x in shared.items():
                out = stack(x)
                for i in range(k):
                    if not torch.equal(alone[i][1][rows], out[i]):
                        return f"evaluation outputs, stack of {k}, member {i}, chunks of {rows}"
    return None
