"""What reg_runner relies on in Hydra, Optuna and torch beyond their public API, pinned.

- No module but ``reg_runner/private.py`` touches a private name of hydra, hydra_plugins or optuna, or one of
  torch's that the adapter uses.
- Each function of ``reg_runner/private.py`` gets a test of exactly the behaviour it relies on.
- Where reg_runner redoes what a plugin does privately (the grid's jobs, an Optuna search space from
  sweep overrides, a job's ``.hydra/`` files), the result is compared with the plugin's own.
"""

import ast
import importlib.util
from pathlib import Path

import optuna
import pytest
from omegaconf import OmegaConf

from reg_runner.errors import options

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "reg_runner"
ADAPTER = PACKAGE / "private.py"
THIRD_PARTY = ("hydra", "hydra_plugins", "optuna")


def _private(name: str) -> bool:
    """``_x``, not a dunder, nor one of Hydra's public config keys (``_target_``, ``_partial_``: ``_x_``)."""
    return name.startswith("_") and not name.endswith("_")


def _package_private_names() -> set[str]:
    """Every private name hydra, hydra_plugins and optuna define (functions, classes, attributes)."""
    names = set()
    for package in THIRD_PARTY:
        spec = importlib.util.find_spec(package)
        for folder in spec.submodule_search_locations or ():
            for path in Path(folder).rglob("*.py"):
                try:
                    tree = ast.parse(path.read_text(encoding="utf-8"))
                except (SyntaxError, UnicodeDecodeError):
                    continue
                for node in ast.walk(tree):
                    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                        found = node.name
                    elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                        found = node.attr
                    elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                        found = node.id
                    else:
                        continue
                    if _private(found):
                        names.add(found)
    return names


def _own_names(trees) -> set[str]:
    """The private names reg_runner defines itself (its own ``self._x``, ``def _f``)."""
    names = set()
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
    return {n for n in names if _private(n)}


def private_uses(tree, theirs: set[str], own: set[str]) -> list[str]:
    """A module's uses of a private name of hydra, hydra_plugins or optuna: an import through a private
    module or of a private name, or an attribute only they define (``study._storage``)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in THIRD_PARTY:
            if any(_private(part) for part in node.module.split(".")):
                found.append(f"line {node.lineno}: from {node.module} import ...")
            found += [f"line {node.lineno}: from {node.module} import {a.name}" for a in node.names if _private(a.name)]
        elif isinstance(node, ast.Import):
            found += [f"line {node.lineno}: import {a.name}" for a in node.names
                      if a.name.split(".")[0] in THIRD_PARTY and any(_private(p) for p in a.name.split("."))]
        elif isinstance(node, ast.Attribute) and _private(node.attr) and node.attr in theirs - own:
            found.append(f"line {node.lineno}: .{node.attr}")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.split(".")[0] in THIRD_PARTY \
                and any(_private(p) for p in node.value.split(".")) and " " not in node.value:
            found.append(f"line {node.lineno}: {node.value!r}")  # a dotted path to instantiate or import
    return found


def test_only_the_adapter_uses_private_names_of_hydra_and_optuna():
    trees = {path: ast.parse(path.read_text(encoding="utf-8")) for path in PACKAGE.rglob("*.py")}
    theirs = _package_private_names()
    assert {"_trial_id", "_storage", "_study_id", "_suggest", "_save_config"} <= theirs  # the walk sees them
    own = _own_names(trees.values())
    uses = {str(path.relative_to(ROOT)): private_uses(tree, theirs, own) for path, tree in trees.items()
            if path != ADAPTER}
    assert {path: found for path, found in uses.items() if found} == {}


TORCH_PRIVATE = ("_base", "_is_avx512_bf16_supported", "_is_amx_tile_supported")  # what the adapter uses of torch


def test_only_the_adapter_uses_torchs_private_names():
    """torch's source is too large to walk: the names the adapter relies on, looked for everywhere else."""
    def used(path):  # as an attribute (t._base) or a name looked up (getattr(torch.cpu, "_is_..."))
        return {n.attr if isinstance(n, ast.Attribute) else n.value for n in ast.walk(ast.parse(path.read_text()))
                if isinstance(n, ast.Attribute) or isinstance(n, ast.Constant)} & set(TORCH_PRIVATE)

    assert {str(p.relative_to(ROOT)): used(p) for p in PACKAGE.rglob("*.py") if p != ADAPTER and used(p)} == {}
    assert used(ADAPTER) == set(TORCH_PRIVATE)


def test_a_views_memory_owner_is_the_tensor_it_views():
    import torch

    from reg_runner.private import memory_owner

    w = torch.ones(3, 4)
    assert memory_owner(w) is w and memory_owner(w.t()) is w and memory_owner(w[1:].t()) is w
    with torch.device("meta"):  # where the footprint is measured: views of meta tensors know their owner too
        m = torch.empty(3, 4)
        assert memory_owner(m.t()) is m


def test_the_cpu_bf16_question_is_answered_by_the_private_checks_torch_has():
    import torch

    from reg_runner.private import cpu_has_bf16_units

    checks = [getattr(torch.cpu, name, None) for name in TORCH_PRIVATE[1:]]
    answer = cpu_has_bf16_units()
    if all(check is None for check in checks):  # a torch without them: no answer, not a guess
        assert answer is None
    else:
        assert answer == any(check() for check in checks if check is not None) and isinstance(answer, bool)


def test_the_walk_finds_each_kind_of_private_use():
    # the check above would pass on a package it cannot see into: each kind it must catch, caught
    theirs = _package_private_names()
    source = ("from hydra._internal.core_plugins.basic_sweeper import BasicSweeper\n"
              "from hydra.core.utils import _save_config\n"
              "import hydra_plugins.hydra_optuna_sweeper._impl\n"
              "x = study._storage.get_trial(trial._trial_id)\n"
              "t = 'hydra._internal.core_plugins.basic_sweeper.BasicSweeper'\n")
    assert len(private_uses(ast.parse(source), theirs, set())) == 6
    assert private_uses(ast.parse("self._scales = {}\nself._scales.clear()\n"), theirs, {"_scales"}) == []


def test_no_sweep_module_imports_the_cli_back():
    # cli.py imports the sweepers and the launcher; they take error formatting from errors.py, not from cli.py
    for path in (PACKAGE / "sweep").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        modules = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        modules += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        assert "reg_runner.cli" not in modules, path


# --- reg_runner/private.py: each use pinned ----------------------------------------------------


def _job(num: int, subdir: str = "${hydra:job.num}_${hydra:job.override_dirname}"):
    """A composed config as Hydra's launchers give a job, ``hydra.job.num`` set."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import open_dict

    from reg_runner.errors import CONFIG_DIR

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR):
        job = compose("config", overrides=["seed=3", f"hydra.sweep.subdir={subdir}"], return_hydra_config=True)
    with open_dict(job):
        job.hydra.job.num = num
        job.hydra.job.override_dirname = f"seed={num}"
    return job


def test_hydra_resolver_reads_the_singleton_that_set_config_sets():
    # relied on by private.hydra_config_of: ${hydra:...} is read from HydraConfig.instance(), set_config(job)
    # points it at the job, and assigning .cfg back restores what was there (None included)
    from hydra.core.hydra_config import HydraConfig

    instance = HydraConfig.instance()
    before = instance.cfg
    try:
        instance.cfg = None
        assert not HydraConfig.initialized()
        job = _job(7)
        instance.set_config(job)
        assert HydraConfig.get().job.num == 7
        assert OmegaConf.select(job, "hydra.sweep.subdir") == "7_seed=7"
        other = _job(8)
        assert OmegaConf.select(other, "hydra.sweep.subdir") == "7_seed=7"  # the singleton's job, not its own
        instance.cfg = None
        assert not HydraConfig.initialized()
    finally:
        instance.cfg = before


def test_hydra_config_of_resolves_a_job_and_puts_the_singleton_back():
    from hydra.core.hydra_config import HydraConfig

    from reg_runner.private import hydra_config_of
    from reg_runner.sweep import jobs

    instance = HydraConfig.instance()
    before = instance.cfg
    try:
        instance.cfg = None
        first, second = _job(4), _job(5)
        with hydra_config_of(first):
            assert OmegaConf.select(first, "hydra.sweep.subdir") == "4_seed=4"
        assert not HydraConfig.initialized()
        instance.set_config(first)
        with hydra_config_of(second):
            assert OmegaConf.select(second, "hydra.sweep.subdir") == "5_seed=5"
        assert HydraConfig.get().job.num == 4  # the job Hydra was running, still
        assert jobs.subdir(second) == "5_seed=5" and HydraConfig.get().job.num == 4
    finally:
        instance.cfg = before


def test_hydras_main_parses_its_command_line_with_the_parser_the_adapter_asks():
    """relied on by private.hydra_arguments_refused: hydra.main's parser is get_args_parser()'s, so what that
    parser refuses, Hydra refuses (argparse's exit 2, usage and message), and what it takes, Hydra takes."""
    import contextlib
    import io
    import sys

    import hydra

    from reg_runner.private import hydra_arguments_refused

    @hydra.main(config_path=None)
    def app(cfg):
        ran.append(True)

    for argv, refused in ((["--nope"], "unrecognized arguments: --nope"), (["--cfg", "x"], "argument --cfg/-c: "
                          "invalid choice: x (choose from job, hydra, all)"), (["a=1", "--multirun", "-c", "job"],
                                                                               None)):
        said = hydra_arguments_refused(argv)
        assert (said or "").replace("'", "") == (refused or "") and (said is None) == (refused is None), said
        ran, err = [], io.StringIO()
        old = sys.argv
        sys.argv = ["app", *argv]
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()), \
                    contextlib.suppress(SystemExit, Exception):
                app()
        finally:
            sys.argv = old
        if refused:
            assert err.getvalue().startswith("usage: ") and said in err.getvalue() and not ran


# --- what reg_runner redoes, compared with the plugins' own ------------------------------------


GRIDS = [
    ["seed=0,1,2"],
    ["model.norm=none,batchnorm", "seed=range(0,3)", "optimizer.lr=0.01"],
    ["seed=choice(0,1)", "model.width=8,16", "seed=5,6"],  # a key twice: its first place, its last value
    ["optimizer.lr=range(0.1,0.4,0.1)", "+extra=a,b"],
    ["model.dropout=0.1"],
]


@pytest.mark.parametrize("arguments", GRIDS)
@pytest.mark.parametrize("batch", [None, 1, 2])
def test_the_grid_makes_the_basic_sweepers_jobs(arguments, batch):
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from reg_runner.sweep.grid import product

    overrides = OverridesParser.create().parse_overrides(arguments)
    assert product(overrides, batch) == BasicSweeper.split_arguments(overrides, batch)


SPACES = [
    "optimizer.lr=tag(log,interval(1e-4,1e-1))",
    "optimizer.lr=interval(0.001,0.1)",
    "model.width=int(interval(32,512))",
    "model.width=tag(log,int(interval(8,512)))",
    "model.width=interval(8,512)",
    "model.norm=choice(none,batchnorm,layernorm)",
    "search.dropout=choice(true,false)",
    "seed=range(0,10,2)",
    "seed=range(10,0,-3)",
    "optimizer.lr=range(0.1,0.5,0.1)",
    "optimizer.lr=range(0.1,0.35,0.05)",
    "seed=shuffle(range(0,4))",
    "model.norm=batchnorm",
    "optimizer.lr=0.01",
    "~model.dropout",
    "seed=0,1,2",
]


@pytest.mark.parametrize("override", SPACES)
def test_a_search_space_is_the_optuna_sweepers(override):
    from hydra_plugins.hydra_optuna_sweeper._impl import create_params_from_overrides

    from reg_runner.sweep.overrides import search_space

    ours = search_space([override])
    theirs = create_params_from_overrides([override])
    if override.startswith("seed=shuffle"):  # shuffled: the same choices, in some order
        assert sorted(ours[0]["seed"].choices) == sorted(theirs[0]["seed"].choices)
    else:
        assert ours == theirs


@pytest.mark.parametrize("override", ["seed=range(0,5,0)", "seed=range(3,3)", "optimizer.lr=range(0.5,0.1,0.1)"])
def test_a_range_without_values_is_refused_as_the_optuna_sweeper_refuses_it(override):
    from hydra_plugins.hydra_optuna_sweeper._impl import create_params_from_overrides

    from reg_runner.sweep.overrides import search_space

    with pytest.raises(ValueError):
        create_params_from_overrides([override])
    with pytest.raises(ValueError, match="range"):
        search_space([override])


def test_public_suggest_draws_what_the_private_one_draws():
    # the study used trial._suggest(name, distribution); the public suggest_* methods take its place
    from reg_runner.sweep.overrides import search_space, suggest

    space, _, _ = search_space(["optimizer.lr=tag(log,interval(1e-4,1e-1))", "model.width=int(interval(8,64))",
                                "model.norm=choice(none,batchnorm)", "seed=range(0,10,2)",
                                "optimizer.momentum=range(0.1,0.5,0.1)"])
    drawn = []
    for use_private in (True, False):
        study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=1, n_startup_trials=3))
        for _ in range(6):
            trial = study.ask()
            for name, dist in space.items():
                trial._suggest(name, dist) if use_private else suggest(trial, name, dist)
            study.tell(trial, sum(v if isinstance(v, (int, float)) else 1 for v in trial.params.values()))
        drawn.append([(t.params, t.distributions) for t in study.trials])
    assert drawn[0] == drawn[1]


def test_a_stacked_jobs_hydra_files_are_what_run_job_writes(tmp_path):
    from hydra.core.utils import _save_config

    from reg_runner.sweep.stacked import _hydra_config, _task_config

    job = _job(2)
    for name, cfg in [("config.yaml", _task_config(job)), ("hydra.yaml", _hydra_config(job)),
                      ("overrides.yaml", job.hydra.overrides.task)]:
        _save_config(cfg, name, tmp_path / "hydra")
        (tmp_path / "ours").mkdir(exist_ok=True)
        OmegaConf.save(cfg, tmp_path / "ours" / name)  # what the stacked launcher writes
        assert (tmp_path / "ours" / name).read_bytes() == (tmp_path / "hydra" / name).read_bytes()


def test_a_trial_read_back_is_written_through_the_public_storage_methods(tmp_path):
    # a trial left running by a dead sweeper is a FrozenTrial: its id comes from the storage, by number
    from reg_runner.trainer.trial import trial_id

    for storage in (optuna.storages.InMemoryStorage(),
                    optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'study.db'}")):
        study = optuna.create_study(study_name="s", storage=storage)
        study.ask()
        second = study.ask()
        frozen = study.get_trials(deepcopy=False)[1]
        assert trial_id(storage, "s", frozen.number) == second._trial_id
        storage.set_trial_user_attr(trial_id(storage, "s", 1), "mark", True)
        assert study.get_trials()[1].user_attrs == {"mark": True} and study.get_trials()[0].user_attrs == {}


# Hydra's errors about a command line, as reg_runner.errors.hydra_error reads them: from the exceptions' attributes,
# which HYDRA_FULL_ERROR=1 (Hydra's documented switch) lets through instead of Hydra's printed report. If an upgrade
# of Hydra changes what these exceptions carry, these fail, not a user's one-line message.
def _compose_error(overrides: list[str]) -> Exception:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from reg_runner.errors import CONFIG_DIR

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR):
        with pytest.raises(Exception) as raised:
            compose("config", overrides=overrides)
    return raised.value


def test_a_missing_group_option_carries_the_file_and_the_options():
    from hydra.errors import MissingConfigException

    e = _compose_error(["model=resnet"])
    assert isinstance(e, MissingConfigException)
    from reg_runner.errors import CONFIG_DIR

    families = sorted(p.stem for p in (Path(CONFIG_DIR) / "model").glob("*.yaml"))
    assert e.missing_cfg_file == "model/resnet" and sorted(e.options) == families


def test_a_missing_key_carries_its_full_key_in_the_cause():
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError

    e = _compose_error(["model.dropuot=0.5"])
    assert isinstance(e.__cause__, (ConfigAttributeError, ConfigKeyError)) and e.__cause__.full_key == "model.dropuot"


def test_an_unreadable_override_carries_it_and_the_parsers_complaint_second_to_last():
    from hydra.errors import OverrideParseException

    e = _compose_error(["reg.l2=[1,2"])
    assert isinstance(e, OverrideParseException) and e.override == "reg.l2=[1,2"
    lines = [line for line in e.message.splitlines() if line.strip()]
    assert lines[-2] == "no viable alternative at input '[1,2'" and lines[-1].startswith("See https://hydra.cc")


@pytest.mark.parametrize("argv,says", [
    (["model=resnet"], f"error: model=resnet is not allowed: one of {', '.join(options('model'))}"),
    (["model.dropuot=0.5"], "error: model.dropuot=0.5 is not allowed: the config has no key model.dropuot (did you "
                            "mean model.dropout?)"),
    (["reg.l2=[1,2"], "error: reg.l2=[1,2 is not allowed: Hydra cannot read it (no viable alternative at input "
                      "'[1,2')"),
    (["-cn", "nope"], "error: --config-name=nope is not allowed: one of config, lr_find"),
    (["~model.nokey"], "error: Could not delete from config. 'model.nokey' does not exist"),
    (["--nope"], "error: unrecognized arguments: --nope"),  # Hydra's argparse: usage, then the message
    (["--cfg", "everything"], "error: argument --cfg/-c: invalid choice: 'everything' (choose from "),
])
def test_hydras_errors_become_one_line_and_the_users_setting_comes_back(cli, monkeypatch, argv, says):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    proc = cli(*argv, check=False, in_process=True)
    assert proc.returncode == 2 and proc.stderr.strip().startswith(says) and len(proc.stderr.splitlines()) == 1, \
        proc.stderr
    assert "HYDRA_FULL_ERROR" not in __import__("os").environ


def test_a_run_and_its_jobs_see_the_users_hydra_full_error_setting(cli, monkeypatch):
    """entry sets HYDRA_FULL_ERROR=1 only until Hydra hands over: the run (and any job process it starts) sees
    the user's own setting, so a failing job is reported Hydra's way, as the user asked."""
    import reg_runner.run

    seen = []
    from reg_runner.cli import USER_FULL_ERROR

    environ = __import__("os").environ
    monkeypatch.setattr(reg_runner.run, "run_stack", lambda *a, **k: seen.append(
        (environ.get("HYDRA_FULL_ERROR"), USER_FULL_ERROR in environ)) or [0.0])
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    assert cli("trainer.epochs=1", check=False, in_process=True).returncode == 0
    assert cli("trainer.epochs=1", check=False, in_process=True, env={"HYDRA_FULL_ERROR": "0"}).returncode == 0
    assert seen == [(None, False), ("0", False)]
