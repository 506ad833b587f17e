"""Each key's role (``reg_runner.keys``), declared once on the key in its schema: what a role does to a multirun
job's folder name, TensorBoard's HParams table, the report's groups, results_config and stacks; and that every
schema field declares at most one role of each kind, where a role means something."""

import importlib
import pkgutil
from typing import Annotated

import pytest
from test_tags import composed

from reg_runner import checks
from reg_runner import config as config_lib
from reg_runner import keys
from reg_runner.config import KEYS, RunConfig
from reg_runner.logging.tensorboard import flat_hparams
from reg_runner.reg import RegConfig
from reg_runner.report.groups import varying_keys
from reg_runner.report.runs import Run
from reg_runner.schema import Monitor, parse


def marked(role=None, stack=None):
    """``RunConfig`` with ``objective`` declared with ``role`` and ``reg`` with ``stack`` (None: no marker)."""

    class Marked(RunConfig):
        objective: Monitor if role is None else Annotated[Monitor, role]
        """what picks the best epoch"""
        reg: RegConfig if stack is None else Annotated[RegConfig, stack]

    return Marked


@pytest.fixture
def schema(monkeypatch):
    """``use(Schema)``: every list of keys is derived from ``Schema`` until the test ends."""

    def use(cls):
        monkeypatch.setattr(KEYS, "schema", cls)
        KEYS.__dict__.pop("table", None)  # derived again, from ``cls``
        return cls

    yield use
    KEYS.__dict__.pop("table", None)


def data(*overrides) -> dict:
    return config_lib.as_data(composed(*overrides))


def grouped_by(*runs: dict) -> list[str]:
    return varying_keys([Run(path=None, name=str(i), status="completed", settings=s) for i, s in enumerate(runs)])


# (role, kept in results_config, a column of the HParams table, in a folder name, a grouping key)
ROLES = [
    (None, True, True, True, True),
    (keys.REPLICATE, True, True, True, False),
    (keys.DETAIL, True, False, True, True),
    (keys.SETTING, False, False, True, True),
    (keys.PATH, False, False, False, False),
    (keys.LABEL, False, True, False, False),
]


@pytest.mark.parametrize("role, result, hparam, folder, group", ROLES, ids=lambda r: getattr(r, "name", repr(r)))
def test_a_role_decides_results_hparams_folder_names_and_groups(schema, role, result, hparam, folder, group):
    schema(marked(role))
    config = data("objective=val/loss")
    assert ("objective" in config_lib.results_config(config)) is result
    shown = flat_hparams(config)
    assert ("objective" in shown) is hparam
    if role is keys.LABEL:  # as text, after the hyperparameters, as tags and notes
        assert shown["objective"] == "val/loss" and list(shown).index("objective") > list(shown).index("trainer.epochs")
    assert ("objective" in KEYS.left_out_of(keys.FOLDER_NAMES)) is not folder
    assert grouped_by({"objective": "val/acc", "seed": "0"}, {"objective": "val/loss", "seed": "1"}) == (
        ["objective"] if group else [])
    # the key's record role never makes it structural
    plain = parse(KEYS.schema, config)
    other = parse(KEYS.schema, data("objective=val/acc"))
    assert keys.structural_values(plain) == keys.structural_values(other)


@pytest.mark.parametrize("stack, structural", [(None, False), (keys.OWN, False), (keys.STRUCTURAL, True)])
def test_a_structural_group_keeps_runs_that_differ_in_it_out_of_one_stack(schema, stack, structural):
    cls = schema(marked(stack=stack))
    a, b = (parse(cls, data(f"reg.l2={v}")) for v in (0.0, 1e-4))
    assert (keys.structural_values(a) == keys.structural_values(b)) is not structural
    assert config_lib.structural_difference([a, b]) == ("reg" if structural else None)
    assert ("reg" in keys.structural_keys(a)) is structural


def test_a_structural_groups_own_key_stays_each_runs_own():
    # model is structural but for what its family marks OWN: the MLP's dropout and init
    cfgs = [checks.check(composed(*o), through=1) for o in ((), ("model.dropout=0.3", "model.init=orthogonal"))]
    assert keys.structural_values(cfgs[0]) == keys.structural_values(cfgs[1])
    wider = checks.check(composed("model.width=50"), through=1)
    assert config_lib.structural_difference([cfgs[0], wider]) == "model.width"
    assert "model.dropout" not in keys.structural_keys(cfgs[0])
    assert "data" in keys.structural_keys(cfgs[0])  # a structural group with no OWN key: one entry


@pytest.mark.parametrize("role, excluded", [(None, False), (keys.PATH, True)])
def test_a_real_multiruns_folder_names_follow_the_role(cli, schema, role, excluded):
    schema(marked(role))
    sweep = cli("--multirun", "objective=val/acc,val/loss", "trainer.epochs=1", in_process=True, check=False)
    assert sweep.returncode == 0, sweep.stderr
    names = sorted(p.name for p in sweep.run_dir.iterdir() if p.is_dir())
    assert len(names) == 2 and all(("objective=" in n) is not excluded for n in names), names
    assert not any("data.root" in n for n in names)  # the shipped declaration: data.root is a path


def test_the_preset_choice_is_left_out_of_folder_names_and_groups():
    assert "hparams_search" in KEYS.left_out_of(keys.FOLDER_NAMES)
    assert grouped_by({"hparams_search": "quick", "seed": "0"}, {"hparams_search": "other", "seed": "1"}) == []


def test_a_label_is_never_swept():
    from reg_runner.errors import UserError
    from reg_runner.sweep.settings import labels_not_swept

    for key in [k for k, r in KEYS.table.items() if r is keys.LABEL]:
        with pytest.raises(UserError, match="never swept"):
            labels_not_swept(key, f"{key}=a,b")
    labels_not_swept("objective", "objective=val/acc,val/loss")


def schemas() -> list[type]:
    """Every schema class a run's config can be checked against: the groups, their union members, every
    family the package ships (and the tests' throwaway one)."""
    import sys

    from pydantic import BaseModel

    from conftest import ROOT
    from reg_runner import data, model

    for package in (data, model):
        for info in pkgutil.iter_modules(package.__path__):
            importlib.import_module(f"{package.__name__}.{info.name}")
    sys.path.insert(0, str(ROOT / "tests" / "families"))
    try:
        importlib.import_module("throwaway_family")
    finally:
        sys.path.remove(str(ROOT / "tests" / "families"))
    found: list[type] = []

    def add(cls):
        if cls in found:
            return
        found.append(cls)
        for field in cls.model_fields.values():
            for group in keys.groups_in(field.annotation):
                add(group)
        for sub in cls.__subclasses__():
            if issubclass(sub, BaseModel) and sub.__module__ != __name__:
                add(sub)

    add(RunConfig)
    return found


def test_every_field_has_at_most_one_role_of_each_kind_where_it_means_something():
    seen = schemas()
    assert {"MLP", "CNN", "MNIST", "CIFAR10", "SoftmaxRegression", "TrainerConfig", "Plateau"} <= {c.__name__ for c in seen}

    def walk(cls, prefix, role, structural):
        for key, _, field in keys.fields_of(cls):
            where = f"{cls.__name__}.{key} ({prefix}{key})"
            roles = [m for m in field.metadata if isinstance(m, keys.Role)]
            stacks = [m for m in field.metadata if isinstance(m, keys.StackRole)]
            assert len(roles) <= 1 and len(stacks) <= 1, where
            assert not (roles and role is not None), f"{where}: a role inside a group that has one ({role!r})"
            assert keys.HYPERPARAMETER not in roles and keys.PRESET not in roles, where  # the default; a choice's
            assert not (stacks and stacks[0].structural == structural), f"{where}: {stacks[0]!r} as its group is"
            key_role = roles[0] if roles else role
            key_structural = stacks[0].structural if stacks else structural
            assert not (key_structural and key_role is keys.LABEL), f"{where}: a label decides no stack"
            for group in keys.groups_in(field.annotation):
                subclasses = [s for s in seen if issubclass(s, group)]
                for sub in subclasses:
                    walk(sub, f"{prefix}{key}.", key_role, key_structural)

    walk(RunConfig, "", None, False)


def test_the_shipped_declarations_keep_the_lists_the_code_had():
    # the hand-written lists these declarations replaced, as they were: the behaviour they gave is unchanged
    # (data.verify, added since, is a path's: whether data.root's files are checked)
    assert set(KEYS.left_out_of(keys.RESULTS)) == {"logging", "trainer.device", "trainer.checkpoint_every",
                                                   "trainer.eval_batch_size", "data.root", "data.verify", "tags",
                                                   "notes"}
    assert set(KEYS.left_out_of(keys.FOLDER_NAMES)) == {"data.root", "data.verify", "hparams_search", "tags", "notes"}
    assert set(KEYS.left_out_of(keys.GROUPING)) == {"seed", "data.root", "data.verify", "hparams_search", "tags",
                                                    "notes"}
    assert [k for k, r in KEYS.table.items() if r is keys.LABEL] == ["tags", "notes"]
    shown = [k for k in RunConfig.model_fields if keys.HPARAMS not in KEYS.role_of(k).left_out_of
             and KEYS.role_of(k) is not keys.LABEL]
    assert shown == ["seed", "objective", "data", "model", "reg", "augmentation", "optimizer", "scheduler", "trainer"]
    assert {k for k in KEYS.left_out_of(keys.HPARAMS) if "." in k} == {
        "data.root", "data.verify", "trainer.device", "trainer.eval_batch_size", "trainer.checkpoint_every",
        "trainer.deterministic",
        "trainer.eval_every"}
    mlp = checks.check(composed(), through=1)
    assert set(keys.structural_keys(mlp)) == {
        "data", "model._target_", "model.depth", "model.width", "model.activation", "model.norm",
        "model.norm_position", "model.residual", "trainer.epochs", "trainer.batch_size", "trainer.accumulate",
        "trainer.drop_last", "trainer.eval_every", "trainer.eval_batch_size", "trainer.eval_precision",
        "trainer.device", "trainer.deterministic"}
    cnn = checks.check(composed("model=cnn"), through=1)
    assert [k for k in keys.structural_keys(cnn) if k.startswith("model.")] == [
        f"model.{k}" for k in ("_target_", "channels", "kernel", "pool", "norm", "groups", "activation", "hidden", "head")]


def test_a_familys_own_key_takes_no_record_role():
    from reg_runner.data import DataFamily
    from reg_runner.schema import Text

    with pytest.raises(TypeError, match="declare it on DataFamily"):
        class Cached(DataFamily):
            cache: Annotated[Text, keys.PATH]


def test_the_reference_shows_each_keys_role():
    from reg_runner import docs

    top = {r.key: r.role for r in docs.rows(RunConfig, {}, "")}
    mlp = {r.key: r.role for r in docs.rows(next(c for c in schemas() if c.__name__ == "MLP"), {}, "model.", True)}
    assert top["trainer.device"] == "structural, setting" and top["tags"] == "label"
    assert top["model._target_"] == "structural"  # the model group's role, for the keys that declare none
    assert mlp["model.dropout"] == "" and mlp["model.width"] == "structural"
