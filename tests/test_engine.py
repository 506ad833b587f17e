"""Engine, Member and StackedMLP in this process, without the CLI: a stacked member is its lone run to the bit,
and a run resumed from its checkpoint ends with the numbers of the run never interrupted."""

import io
from pathlib import Path

import pytest
import torch
from conftest import make_tiny_mnist, tiny

from reg_runner import checks
from reg_runner import config as config_lib
from reg_runner import exactness
from reg_runner.assembly import Job, assemble, plain, stacked
from reg_runner.errors import CONFIG_DIR
from reg_runner.reg.penalty import Penalties
from reg_runner.signals import STOP
from reg_runner.trainer.engine import Engine

# what a member may differ in from the others of its stack
MEMBERS = [["seed=0"], ["seed=1", "optimizer.lr=0.004", "model.dropout=0.3"],
           ["seed=2", "reg.l1=1e-4", "reg.l2=1e-3", "augmentation=noise"]]
SHARED = ["model.norm=batchnorm", "trainer.epochs=4", "logging.histograms=0"]
FAMILIES = Path(__file__).parent / "families"


def checked(data, *overrides, shared=SHARED):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR):
        cfg = compose("config", overrides=tiny(f"data.root={data}", *shared, *overrides))
    return checks.check(cfg, list(overrides), through=3), config_lib.as_data(cfg)


def train(runs, tmp_path, checkpoints=None, listeners=()):
    """An engine over the runs (``checked``'s), as one stack; its members and model once it has run."""
    built = assemble([Job(config, tmp_path / f"m{k}", checked=c, recorded=config,
                          checkpoint=checkpoints[k] if checkpoints else None) for k, (c, config) in enumerate(runs)])
    members = list(built.members)
    finals = {}

    class Keep:  # each member's weights as it leaves the stack
        def start(self, engine): pass
        def epoch(self, engine, result): pass
        def close(self, engine): pass

        def member_end(self, engine, member, k):
            finals[member] = engine.model.member_state(k)

    Engine(built.model, built.data, built.members, [*listeners, Keep()]).run()
    return members, finals


def assert_same_run(a, wa, b, wb):
    assert a.state.history == b.state.history  # every row: train, val and test losses and accuracies, lr
    assert (a.state.best, a.state.status, a.state.epoch) == (b.state.best, b.state.status, b.state.epoch)
    assert wa.keys() == wb.keys()
    for name in wa:
        assert torch.equal(wa[name], wb[name]), name


def test_a_stacked_member_is_its_lone_run_to_the_bit(tiny_data, tmp_path):
    runs = [checked(tiny_data, *m) for m in MEMBERS]
    assert exactness.for_runs(runs[0][0], len(runs)) is None  # this shape stacks exactly here (what the launcher asks)
    members, weights = train(runs, tmp_path / "stack")
    for k, run in enumerate(runs):
        (lone,), lone_weights = train([run], tmp_path / f"lone{k}")
        assert lone.state.history and lone.state.status == "completed"
        assert_same_run(members[k], weights[members[k]], lone, lone_weights[lone])
    # the members did differ: a stack that trained one run K times would pass the comparison above for one member
    assert len({str(m.state.history[-1]["val/loss"]) for m in members}) == len(members)


class Saved:
    """A listener that keeps each member's last.pt as Records writes it, when the member leaves (in ``saved``)."""

    def __init__(self):
        self.saved = {}

    def start(self, engine): pass
    def epoch(self, engine, result): pass
    def close(self, engine): pass

    def member_end(self, engine, member, k):
        from reg_runner.records import on_host

        buffer = io.BytesIO()
        torch.save(on_host(member.checkpoint(engine.model.member_state(k), {})), buffer)
        buffer.seek(0)
        self.saved[k] = torch.load(buffer, weights_only=True)


def stopped_after_2(runs, tmp_path) -> dict:
    """The runs interrupted after epoch 2: each member's last.pt as Records writes it."""

    class StopAfter2(Saved):  # a signal after epoch 2
        def epoch(self, engine, result):
            if max(m.state.epoch for m in engine.members) == 2:
                STOP.signal = 15

    try:
        stop = StopAfter2()
        first, _ = train(runs, tmp_path, listeners=[stop])
    finally:
        STOP.signal = None
    assert [m.state.status for m in first] == ["interrupted"] * len(runs) and {m.state.epoch for m in first} == {2}
    return stop.saved


def test_resumed_from_a_checkpoint_equals_uninterrupted(tiny_data, tmp_path):
    runs = [checked(tiny_data, *m) for m in MEMBERS[:2]]
    whole, whole_weights = train(runs, tmp_path / "whole")
    saved = stopped_after_2(runs, tmp_path / "first")
    resumed, resumed_weights = train(runs, tmp_path / "resumed", checkpoints=[saved[0], saved[1]])
    for a, b in zip(resumed, whole):
        assert_same_run(a, resumed_weights[a], b, whole_weights[b])


def stopped_in_epoch_3(runs, tmp_path, when) -> tuple[list, dict]:
    """The runs signalled inside epoch 3 (``when``: "step" at its second training step, "evaluation" at its first
    evaluation batch): the members and each one's last.pt as Records writes it."""
    calls = {"train": 0}

    class Keep(Saved):
        def start(self, engine):
            per_epoch = engine.tc.batches_per_epoch(len(engine.data.train))
            assert per_epoch >= 2

            def hook(model, args):
                calls["train"] += model.training
                if (when == "step" and calls["train"] == 2 * per_epoch + 2) or (
                        when == "evaluation" and calls["train"] == 3 * per_epoch and not model.training):
                    STOP.signal = 15

            engine.model.register_forward_pre_hook(hook)

    try:
        keep = Keep()
        members, _ = train(runs, tmp_path, listeners=[keep])
    finally:
        STOP.signal = None
    return members, keep.saved


@pytest.mark.parametrize("when", ["step", "evaluation"])
def test_a_signal_inside_a_long_epoch_gives_it_up_and_the_checkpoint_is_the_last_epochs(tiny_data, tmp_path,
                                                                                      monkeypatch, when):
    """Epochs longer than QUICK_EPOCH (here every epoch): a signal acts at the next step or evaluation batch, every
    member goes back to where the epoch began, and the checkpoint is bitwise the one a signal after epoch 2 writes."""
    from reg_runner.trainer import engine as engine_lib

    monkeypatch.setattr(engine_lib, "QUICK_EPOCH", 0.0)
    runs = [checked(tiny_data, *m) for m in MEMBERS[:2]]
    members, saved = stopped_in_epoch_3(runs, tmp_path / "cut", when)
    assert [m.state.status for m in members] == ["interrupted"] * 2 and {m.state.epoch for m in members} == {2}
    at_2 = stopped_after_2(runs, tmp_path / "after2")
    for k in range(2):
        for part in ("model", "optimizer", "scheduler", "rng", "state"):
            assert_same_tree(saved[k][part], at_2[k][part], part)
    whole, whole_weights = train(runs, tmp_path / "whole")
    resumed, resumed_weights = train(runs, tmp_path / "resumed", checkpoints=[saved[0], saved[1]])
    for a, b in zip(resumed, whole):
        assert_same_run(a, resumed_weights[a], b, whole_weights[b])


def test_a_signal_inside_a_quick_epoch_waits_for_its_end(tiny_data, tmp_path, monkeypatch):
    from reg_runner.trainer import engine as engine_lib

    monkeypatch.setattr(engine_lib, "QUICK_EPOCH", 1e9)  # after the first epoch, which keeps its start in any case
    members, _ = stopped_in_epoch_3([checked(tiny_data, *MEMBERS[0])], tmp_path, "step")
    assert members[0].state.status == "interrupted" and members[0].state.epoch == 3


def assert_same_tree(a, b, where):
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_same_tree(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_tree(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    else:
        assert a == b or (a != a and b != b), where


def test_a_plain_module_stacks_to_its_lone_runs_and_resumes_to_the_uninterrupted_numbers(tmp_path, monkeypatch):
    """LeNet-5 written as a plain nn.Module (tests/families/lenet.py): the generic stacked form (each member's own
    network on its slice) gives each member its lone run to the bit, L1/L2 cover its Linear and convolution
    weights, and a run resumed from its checkpoint ends as the uninterrupted one."""
    monkeypatch.syspath_prepend(str(FAMILIES))
    data = make_tiny_mnist(tmp_path / "data", side=28)
    shared = ["~model", "+model._target_=lenet.LeNet5", "+model.width=4", "trainer.epochs=4", "logging.histograms=0"]
    runs = [checked(data, *m, shared=shared) for m in (["seed=0"], ["seed=1", "optimizer.lr=0.004", "reg.l2=1e-3"])]
    members, weights = train(runs, tmp_path / "stack")
    for k, run in enumerate(runs):
        (lone,), lone_weights = train([run], tmp_path / f"lone{k}")
        assert_same_run(members[k], weights[members[k]], lone, lone_weights[lone])
    assert members[0].state.history != members[1].state.history
    model = stacked([runs[0][0].cfg.model], (1, 28, 28), 10, torch.device("cpu"))
    covered = [n for (n, _), on in zip(model.named_parameters(), Penalties(model, [(0, 0, "weights")]).covers[0]) if on]
    assert covered == [f"{layer}.weight" for layer in ("features.0", "features.3", "classifier.1", "classifier.4",
                                                       "classifier.6")]
    saved = stopped_after_2(runs, tmp_path / "first")
    resumed, resumed_weights = train(runs, tmp_path / "resumed", checkpoints=[saved[0], saved[1]])
    for a, b in zip(resumed, members):
        assert_same_run(a, resumed_weights[a], b, weights[b])


def test_a_modules_constants_kept_out_of_its_state_dict_stay_out_and_are_used(tmp_path, monkeypatch):
    """Non-persistent buffers (a top-level and a child's): the generic stacked form runs each member with them, a
    member's checkpoint is its plain network's state_dict (the plain class loads it strictly), and a stacked member
    is still its lone run to the bit."""
    monkeypatch.syspath_prepend(str(FAMILIES))
    from lenet import LeNet5Constants

    data = make_tiny_mnist(tmp_path / "data", side=28)
    shared = ["~model", "+model._target_=lenet.LeNet5Constants", "+model.width=4", "trainer.epochs=2",
              "logging.histograms=0"]
    runs = [checked(data, *m, shared=shared) for m in (["seed=0"], ["seed=1"])]
    members, weights = train(runs, tmp_path / "stack")
    (lone,), lone_weights = train([runs[1]], tmp_path / "lone")
    assert_same_run(members[1], weights[members[1]], lone, lone_weights[lone])
    model = stacked([runs[0][0].cfg.model] * 2, (1, 28, 28), 10, torch.device("cpu"))
    assert {n for n, _ in model.named_buffers()} == {"shift", "features.0.scale"}
    net = LeNet5Constants(1, 10, width=4)
    assert model.member_state(1).keys() == net.state_dict().keys()
    net.load_state_dict(model.member_state(1))  # strict: no key more, none less
    x = torch.rand(3, 1, 28, 28)
    assert torch.equal(model.eval()(x)[1], net.eval()(x))  # the constants count: 2 * (x - 0.5), not x


def test_a_modules_tied_weights_stay_tied_in_a_stack(tmp_path, monkeypatch):
    """Two layers that share one weight (tests/families/lenet.py): the generic stacked form keeps one stacked
    parameter for both (functional_call ties them in each member's forward), a stacked member is its lone run to
    the bit, and a member's checkpoint loads strictly into the plain class, still tied."""
    monkeypatch.syspath_prepend(str(FAMILIES))
    from lenet import LeNet5Tied

    data = make_tiny_mnist(tmp_path / "data", side=28)
    shared = ["~model", "+model._target_=lenet.LeNet5Tied", "+model.width=4", "trainer.epochs=2",
              "logging.histograms=0", "reg.l2=1e-3"]
    runs = [checked(data, *m, shared=shared) for m in (["seed=0"], ["seed=1"])]
    members, weights = train(runs, tmp_path / "stack")
    (lone,), lone_weights = train([runs[1]], tmp_path / "lone")
    assert_same_run(members[1], weights[members[1]], lone, lone_weights[lone])
    model = stacked([runs[0][0].cfg.model] * 2, (1, 28, 28), 10, torch.device("cpu"))
    assert model.first.weight is model.second.weight and model.first.bias is not model.second.bias
    net = LeNet5Tied(1, 10, width=4)
    assert len(list(model.parameters())) == len(list(net.parameters()))  # the shared weight counted once
    net.load_state_dict(model.member_state(1))
    assert net.first.weight is net.second.weight
    x = torch.rand(3, 1, 28, 28)
    assert torch.equal(model.eval()(x)[1], net.eval()(x))


@pytest.mark.parametrize("norm", ["none", "batchnorm", "layernorm"])
def test_stacked_mlp_gives_each_member_its_lone_outputs_and_gradients(tiny_data, norm):
    # a lone run is a stack of one: a member of a stack of 3 gets its outputs and gradients to the bit; the plain
    # network a checkpoint loads into computes the same function (to rounding: its kernels are not the stack's)
    (c, _), = [checked(tiny_data, f"model.norm={norm}", "model.dropout=0.0")]
    model_cfg, shape, n = c.cfg.model, c.split.shape, c.split.n_classes
    device = torch.device("cpu")
    k = 3
    net = stacked([model_cfg] * k, shape, n, device, [torch.Generator().manual_seed(i) for i in range(k)])
    g = torch.Generator().manual_seed(0)
    for i in range(k):
        model_cfg.initialize(net, i, g)
    x = torch.randn(k, 25, *shape, generator=g)
    grad = torch.randn(k, 25, n, generator=g)
    net.train()
    out = net(x)
    out.backward(grad)
    stacked_grads = {name: p.grad for name, p in net.named_parameters()}
    for i in range(k):
        alone = stacked([model_cfg], shape, n, device, [torch.Generator().manual_seed(i)])
        alone.load_member_state(0, net.member_state(i))
        alone.train()
        own = alone(x[i : i + 1])
        own.backward(grad[i : i + 1])
        assert torch.equal(own[0].detach(), out[i].detach()), i
        member_grads = {name: p.grad for name, p in alone.named_parameters()}
        assert member_grads.keys() == stacked_grads.keys()
        for name, value in stacked_grads.items():  # each stacked parameter holds the members' slices, member first
            assert torch.equal(value[i], member_grads[name][0]), (name, i)
        lone = plain(model_cfg, shape, n, device)
        lone.load_state_dict(net.member_state(i))
        lone.train()
        torch.testing.assert_close(lone(x[i]), out[i].detach(), rtol=1e-5, atol=1e-6)


def test_the_penalty_gradient_is_the_gradient_of_each_members_penalty(tiny_data):
    # λ1·sign(θ) + 2λ2·θ, per member and only where its apply_to covers: autograd of the logged value agrees
    (c, _), = [checked(tiny_data)]
    net = stacked([c.cfg.model] * 3, c.split.shape, c.split.n_classes, torch.device("cpu"),
                  [torch.Generator().manual_seed(i) for i in range(3)])
    g = torch.Generator().manual_seed(0)
    for i in range(3):
        c.cfg.model.initialize(net, i, g)
    params = list(net.parameters())
    penalty = Penalties(net, [(1e-3, 0.0, "weights"), (0.0, 2e-2, "all"), (5e-4, 1e-3, "weights")])
    for p in params:
        p.grad = torch.zeros_like(p)
    penalty.add_gradients(params)
    added = [p.grad.clone() for p in params]
    values = torch.stack([penalty_k for penalty_k in _values_with_grad(penalty, params)])
    expected = torch.autograd.grad(values.sum(), params, allow_unused=True)
    for p, a, e in zip(params, added, expected):
        torch.testing.assert_close(a, torch.zeros_like(p) if e is None else e, rtol=1e-6, atol=1e-9)
    assert penalty.on(0) and penalty.on(1) and penalty.on(2)
    penalty.keep([1, 2])  # a member leaves: the others keep their own coefficients
    assert (penalty.l1, penalty.l2) == ([0.0, 5e-4], [2e-2, 1e-3])


def _values_with_grad(penalty, params):
    """``Penalties.values`` with autograd on (it runs under no_grad for the logs)."""
    with torch.enable_grad():
        return type(penalty).values.__wrapped__(penalty, params)


def test_better_follows_the_metric_and_min_delta():
    from reg_runner.trainer.member import better

    assert better("val/acc", 0.9, 0.8) and not better("val/acc", 0.8, 0.9)
    assert better("val/loss", 0.3, 0.4) and not better("val/loss", 0.4, 0.3)
    assert not better("val/acc", 0.805, 0.8, min_delta=0.01) and better("val/acc", 0.82, 0.8, min_delta=0.01)
    assert not better("val/loss", 0.395, 0.4, min_delta=0.01) and better("val/loss", 0.38, 0.4, min_delta=0.01)
    assert better("val/acc", 0.1, None) and not better("val/acc", float("nan"), None)


def test_a_search_maximizes_accuracy_and_minimizes_loss():
    from reg_runner.sweep.objectives import direction_of

    assert direction_of("val/acc") == "maximize" and direction_of("val/loss") == "minimize"
