"""The sweepers' keys (``hydra.sweeper.*``) and the launchers', checked before a multirun makes anything
(``check_multirun``, from the multirun's callback)."""

import dataclasses
import importlib
import inspect
import os
import shutil
import warnings
from pathlib import Path
from typing import Annotated, Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import instantiate
from omegaconf import OmegaConf
from pydantic import ConfigDict, Field, PlainValidator, create_model

from reg_runner import checks, dotted, errors, keys
from reg_runner.config import KEYS, check_job_name
from reg_runner.errors import ConfigError, UserError, show
from reg_runner.schema import Bool, Group, Name, integer, optional, parse, reject
from reg_runner.sweep import jobs, pruners
from reg_runner.sweep import objectives as objectives_lib
from reg_runner.sweep.objectives import direction_of
from reg_runner.trainer.trial import NO_PRUNER, database_refused, sqlite_path

GRID = "reg_runner.sweep.grid.GridSweeper"
STACKED = "reg_runner.sweep.stacked.StackedLauncher"
STUDY = "reg_runner.sweep.study.StudySweeper"


def _storage(v):
    if v is None:
        return None
    if refused := database_refused(v):
        raise reject(f"null (in memory) or {refused}" if not isinstance(v, str) or not v.strip() else refused)
    if (path := sqlite_path(v)) is None:
        return v
    if path.is_dir():
        raise reject(f"an SQLite database file: {path} is a folder")
    try:  # a new file, or one SQLite wrote: SQLite would take any other file over
        with open(path, "rb") as f:
            head = f.read(16)
    except FileNotFoundError:
        return v
    except OSError as e:
        raise reject(f"an SQLite database file that can be read: {path}: {e.strerror}") from None
    if head and head != b"SQLite format 3\x00":
        raise reject(f"an SQLite database file: {path} holds something else, which the study would overwrite")
    return v


def _directions(v):
    if v in ("maximize", "minimize") or (isinstance(v, list) and v and all(d in ("maximize", "minimize") for d in v)):
        return v
    raise reject("maximize or minimize, or a list of them (one per objective)")


class _Sweeper(Group):
    model_config = ConfigDict(populate_by_name=True)
    target: str = Field(alias="_target_")


class Pruner(_Sweeper):
    model_config = ConfigDict(extra="allow")  # the class's own arguments: check_optuna_class checks them


class Sampler(Pruner):
    seed: optional(integer(0, 2**32 - 1))  # TPE's and the other samplers' seed


def check_optuna_class(kind: str, target: str, arguments: dict, packages: tuple, example: str) -> None:
    """An Optuna sampler or pruner class (``kind``), and only arguments it takes by name."""
    import optuna

    package = packages[0].rstrip(".")
    if not target.startswith(packages):
        raise ConfigError(f"hydra.sweeper.{kind}._target_", target, f"an Optuna {kind} ({package}.*)")
    module, _, name = target.rpartition(".")
    base = {"pruner": optuna.pruners.BasePruner, "sampler": optuna.samplers.BaseSampler}[kind]
    with warnings.catch_warnings():  # an experimental class is no mistake: its warning is not one more line
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        try:
            cls = getattr(importlib.import_module(module), name)
            if target.startswith("optuna.") and (not (isinstance(cls, type) and issubclass(cls, base))
                                                 or inspect.isabstract(cls)):
                raise TypeError  # the plugin's own makers (nsgaii) are functions
        except Exception:
            raise ConfigError(f"hydra.sweeper.{kind}._target_", target,
                              f"an Optuna {kind} that exists, e.g. {package}.{example}") from None
        params = inspect.signature(cls).parameters
        if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
            for key, value in arguments.items():
                if key not in params and not key.startswith("_"):
                    raise ConfigError(f"hydra.sweeper.{kind}.{key}", value, f"{name} takes no argument {key!r}; its "
                                      f"arguments are {', '.join(p for p in params if p not in ('self', 'kwargs')) or 'none'}")
        try:  # as the sweeper makes it: Hydra's instantiate (a wrapped pruner given as a spec of its own)
            instantiate({"_target_": target, **arguments}, _execution_whitelist_=(f"{package}.*",
                                                                                 "hydra_plugins.hydra_optuna_sweeper.*"))
        except Exception as e:  # a value its own checks refuse (a percentile of 120, a reduction factor of 1...)
            cause = e.__cause__ if e.__cause__ is not None and "Error in call to target" in str(e) else e
            raise ConfigError(f"hydra.sweeper.{kind}", arguments, f"arguments {name} accepts "
                              f"({errors.cause(cause, 200)})") from None


TRUSTED_SPACES = ("reg_runner.",)  # what Hydra may instantiate from this config (reg_runner.cli.TRUSTED)


def _space(v):
    """A function (cfg, trial) that suggests a trial's parameters."""
    if v is None:
        return None
    allowed = "null or a function (cfg, trial) in reg_runner, e.g. reg_runner.sweep.spaces.regularization"
    if not isinstance(v, str) or not v.startswith(TRUSTED_SPACES):
        raise reject(allowed)
    module, _, name = v.rpartition(".")
    try:
        fn = getattr(importlib.import_module(module), name)
        if len(inspect.signature(fn).parameters) != 2:
            raise TypeError
    except Exception:
        raise reject(allowed) from None
    return v


def flat_params(v):
    """Search spaces declared in the config, nested keys too: ``{dotted key: sweep}``, as on the command line."""
    if OmegaConf.is_config(v):
        v = OmegaConf.to_container(v, resolve=True)
    if v is None:
        return None
    if not isinstance(v, dict):
        raise reject("null or a mapping of keys to sweeps, e.g. {optimizer.lr: 'interval(1e-4, 1e-1)'}")
    flat = dotted.flat(v)
    for k, val in flat.items():
        try:
            OverridesParser.create().parse_override(f"{k}={val}")
        except Exception:
            raise reject(f"sweeps Hydra's override grammar can read ({k}={val} is not one)") from None
    return flat


class GridConfig(_Sweeper):
    max_batch_size: optional(integer(1))  # jobs handed to the launcher at once; null: all
    params: Annotated[Any, PlainValidator(flat_params)] = None  # sweeps declared in a config


class StudyConfig(_Sweeper):
    sampler: Sampler
    direction: Annotated[Any, PlainValidator(_directions)]  # follows the objective(s)
    objectives: Annotated[Any, PlainValidator(objectives_lib.parse)] = None  # several: a Pareto front
    storage: Annotated[Any, PlainValidator(_storage)]
    study_name: Name
    n_trials: integer(1)  # finished trials the study should hold in total
    n_jobs: integer(1)  # trials asked and launched together
    custom_search_space: Annotated[Any, PlainValidator(_space)]
    params: Annotated[Any, PlainValidator(flat_params)] = None
    pruner: Pruner  # hydra/sweeper/pruner: none, median, percentile, successive_halving, hyperband
    seeds_per_trial: integer(1, 64)  # runs per trial, seeds seed..seed+K-1; the trial's value is their mean


class StackedConfig(_Sweeper):
    max_members: integer(1)  # runs in one stack at most (memory: each adds its weights, optimizer state and activations)
    only_if_faster: Bool  # a stack trains only where it is faster here than its runs one after another


def _no_saved_password(written, storage) -> None:
    """Hydra saves the sweeper's settings as written, in every folder's ``.hydra/`` and the sweep's
    ``multirun.yaml``: a storage URL's password comes from the environment (``${oc.env:VAR}``, saved unresolved)
    or the database client's own files, never written in the URL."""
    from sqlalchemy.engine import make_url

    try:
        password = make_url(written).password if isinstance(written, str) else None
    except Exception:  # an interpolation of the whole URL
        password = None
    if password is not None and not str(password).startswith("${"):
        raise ConfigError("hydra.sweeper.storage", storage, "a URL whose password is not written in it: Hydra saves "
                          "the URL as written in every folder's .hydra/ files; give the password as ${oc.env:VAR} "
                          "(saved unresolved, read from the environment), or in ~/.pgpass or PGPASSWORD for "
                          "PostgreSQL")


def check_hydra(hydra_cfg, objective) -> "StudyConfig | None":
    """The sweeper's and the launcher's settings, before a multirun makes anything; the study's, parsed, in
    a search."""
    check_job_name(hydra_cfg)

    def plain(node) -> dict:
        if node is None:
            return {}
        try:
            return OmegaConf.to_container(node, resolve=True)
        except Exception as e:
            raise UserError(f"the sweeper's config does not resolve: {errors.first_line(e)}") from None

    sweeper = plain(hydra_cfg.get("sweeper"))
    target = sweeper.get("_target_")
    if target == GRID:
        parse(GridConfig, sweeper, "hydra.sweeper")
    elif target == STUDY:
        study = parse(StudyConfig, sweeper, "hydra.sweeper")
        _no_saved_password(OmegaConf.to_container(hydra_cfg.sweeper, resolve=False).get("storage"), study.storage)
        database = sqlite_path(study.storage) if study.storage else None
        folder = database.absolute().parent if database else None  # made with the sweep folder, if in it
        if folder and not folder.is_dir() and not folder.is_relative_to(Path(hydra_cfg.sweep.dir).absolute()):
            raise UserError(f"hydra.sweeper.storage={show(study.storage)}: the folder {folder} does not exist; "
                            "create it first, or keep the database in the sweep folder")
        sampler_arguments = {"seed": study.sampler.seed, **study.sampler.model_extra}
        check_optuna_class("sampler", study.sampler.target, sampler_arguments,
                           tuple(p.rstrip("*") for p in objectives_lib.SAMPLERS), "TPESampler")
        check_optuna_class("pruner", study.pruner.target, dict(study.pruner.model_extra), ("optuna.pruners.",),
                           "MedianPruner")
        goals = study.objectives or [objective]
        wanted = [direction_of(o) for o in goals] if study.objectives else direction_of(objective)
        if study.direction != wanted:
            raise ConfigError("hydra.sweeper.direction", study.direction,
                              f"{wanted}, as " + ", ".join(
                                  f"{o if study.objectives else 'objective=' + o} is "
                                  f"{'maximized' if direction_of(o) == 'maximize' else 'minimized'}" for o in goals)
                              + " (leave the direction out: it follows the objective)")
        if study.objectives:
            if study.pruner.target != NO_PRUNER:
                raise ConfigError("hydra.sweeper.pruner._target_", study.pruner.target, "optuna.pruners.NopPruner "
                                  "(hydra/sweeper/pruner=none) with several objectives: Optuna prunes single-objective "
                                  "studies only")
            objectives_lib.check_sampler(study.sampler.target, sampler_arguments, study.objectives)
    launcher = plain(hydra_cfg.get("launcher"))
    kind = str(launcher.get("_target_", ""))
    if kind.endswith("JoblibLauncher"):
        from hydra_plugins.hydra_joblib_launcher.config import JobLibLauncherConf

        # only the keys Hydra's joblib launcher reads: it would drop another without a word
        known = {f.name.strip("_"): (Any, Field(None, alias=f.name)) for f in dataclasses.fields(JobLibLauncherConf)}
        parse(create_model("Joblib", __base__=Group, **known, maxtasksperchild=(Any, None)), launcher, "hydra.launcher")
        if launcher.get("backend") not in (None, "loky", "multiprocessing"):
            raise ConfigError("hydra.launcher.backend", launcher.get("backend"), "loky or multiprocessing (the "
                              "backends Hydra's joblib launcher supports)")
        n = launcher.get("n_jobs")
        if not isinstance(n, int) or isinstance(n, bool) or n == 0 or n < -(os.cpu_count() or 1):
            raise ConfigError("hydra.launcher.n_jobs", n, f"a number of worker processes >= 1, or -1 for one per "
                              f"core ({os.cpu_count()} here)")
    if kind == STACKED:
        stacked = parse(StackedConfig, launcher, "hydra.launcher")
        if target == STUDY and study.seeds_per_trial > stacked.max_members:
            raise ConfigError("hydra.sweeper.seeds_per_trial", study.seeds_per_trial, f"at most hydra.launcher."
                              f"max_members={stacked.max_members}: a trial's seeds train in one stack")
    if target == STUDY and study.pruner.target != NO_PRUNER:
        launcher_name = kind.rpartition(".")[2] or "this launcher"
        if study.storage is None and not jobs.in_process(launcher):
            raise ConfigError("hydra.sweeper.storage", None, f"a database URL (sqlite:///...) to prune with "
                              f"{launcher_name}: its runs, in other processes, report to the study through it")
        if study.seeds_per_trial > 1 and kind != STACKED:
            raise ConfigError("hydra.sweeper.seeds_per_trial", study.seeds_per_trial, f"1 to prune with "
                              f"{launcher_name}; with hydra/launcher=stacked a trial's seeds train as one stack and "
                              "the pruner sees their mean")
    if kind.endswith("SlurmLauncher") and shutil.which("sbatch") is None:
        raise UserError("hydra/launcher=slurm submits jobs with SLURM's sbatch, which this machine does not have; "
                        "run the sweep from a SLURM login node, or use hydra/launcher=basic or joblib here")
    return study if target == STUDY else None


def check_multirun(config) -> None:
    """A multirun's settings, before it makes anything: the sweeper's and the launcher's, then each value every
    job shares, alone (rules across keys may depend on what a job sweeps: the sweeper checks each job whole before
    it runs), then a search's pruner against what it will do with the runs' epochs and the search's trials."""
    study = check_hydra(config.hydra, config.get("objective"))
    run = checks.check(config, through=1)
    if study is not None:
        spec = {"_target_": study.pruner.target, **study.pruner.model_extra}
        pruners.check(spec, pruners.Reach(run.trainer.epochs, run.trainer.eval_every, study.n_trials, study.n_jobs,
                                          run.objective))


def labels_not_swept(key: str, override: str) -> None:
    """``tags`` and ``notes`` label a whole sweep's runs: a sweep over them makes runs that differ in nothing
    else, and a search would rank labels."""
    name = key.lstrip("+~").split(".")[0]
    if KEYS.role_of(name) is keys.LABEL:
        raise UserError(f"{override} is not allowed: {name} labels runs and is never swept or searched; give one "
                        f"value for every run of the sweep, e.g. 'tags=[first,second]' (a list in brackets)")
