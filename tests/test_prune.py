"""Pruning and seeds per trial, through the real CLI: what the study holds, what the folders say, and
that the values the pruner saw are the runs' own curves. (joblib, PostgreSQL and kill-and-resume with
a pruner are in test_sweep.py.)"""

import csv
import json
import math
from pathlib import Path

import optuna
import pytest
from conftest import printed_command, read_metrics

from reg_runner.sweep.analysis import RUN_DIR, RUN_DIRS

optuna.logging.set_verbosity(optuna.logging.WARNING)
# a median pruner that may act early on tiny runs: after 2 finished trials, from epoch 2
MEDIAN = ("hydra/sweeper/pruner=median", "hydra.sweeper.pruner.n_startup_trials=2",
          "hydra.sweeper.pruner.n_warmup_steps=2")
SEARCH = ("--multirun", "hparams_search=quick", "data.val_size=null", "trainer.epochs=12", "logging.tensorboard=false")


def best_so_far(run_dir) -> list[float]:
    """The run's best val/acc after each evaluated epoch, from its history.csv."""
    with open(Path(run_dir) / "history.csv") as f:
        rows = list(csv.DictReader(f))
    best, out = -math.inf, []
    for row in rows:
        best = max(best, float(row["val/acc"]))
        out.append(best)
    return out


def check_trials(study) -> dict:
    """Every trial's state agrees with its runs' records, and the values its pruner saw are the mean
    of its runs' best-so-far curves. Returns the count of each state."""
    counts = {}
    for t in study.get_trials(deepcopy=False):
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
        dirs = t.user_attrs.get(RUN_DIRS) or [t.user_attrs[RUN_DIR]]
        runs = [read_metrics(d) for d in dirs]
        if t.state.name == "PRUNED":
            assert {m["status"] for m in runs} == {"pruned"}
            assert all(m["epochs_run"] < m["epochs_planned"] for m in runs)
            assert max(t.intermediate_values) == runs[0]["epochs_run"]  # stopped at the step it was pruned
        else:
            assert t.state.name == "COMPLETE", t
            assert {m["status"] for m in runs} == {"completed"}
            assert t.value == pytest.approx(math.fsum(m["best_val"] for m in runs) / len(runs), abs=1e-12)
        curves = [best_so_far(d) for d in dirs]
        assert all(len(c) == m["epochs_run"] for c, m in zip(curves, runs))
        for step, value in t.intermediate_values.items():
            assert value == pytest.approx(math.fsum(c[step - 1] for c in curves) / len(curves), abs=1e-12)
        if t.intermediate_values:
            assert sorted(t.intermediate_values) == list(range(1, len(curves[0]) + 1))  # every evaluation
    return counts


def test_median_pruner_stops_trials_in_the_sweepers_own_process(cli):
    """In-memory study, basic launcher: the runs report to the sweeper's study in this process."""
    # 4 trials in batches of 2 (the preset's n_jobs): the second batch starts once the 2 start-up trials have finished
    proc = cli(*SEARCH, *MEDIAN, "hydra.sweeper.storage=null", "hydra.sweeper.n_trials=4", "trainer.epochs=5")
    summary = json.loads((proc.run_dir / "sweep_summary.json").read_text())
    assert summary["n_pruned"] >= 1 and summary["n_complete"] >= 2
    assert summary["n_pruned"] + summary["n_complete"] == 4
    folders = [p for p in proc.run_dir.iterdir() if p.is_dir()]
    records = [read_metrics(f) for f in folders]
    assert sum(m["status"] == "pruned" for m in records) == summary["n_pruned"]
    assert summary["epochs"]["run"] == sum(m["epochs_run"] for m in records) < summary["epochs"]["unpruned"] == 4 * 5
    for folder, m in zip(folders, records):
        env = json.loads((folder / "environment.json").read_text())
        assert env["trial"]["study"] == "quick" and env["trial"]["pruner"] == "optuna.pruners.MedianPruner"
        assert folder.name.startswith(f"{env['trial']['number']}_")
        if m["status"] == "pruned":  # a pruned run ends as any run does: its checkpoint at its last epoch
            import torch

            last = torch.load(folder / "checkpoints" / "last.pt", weights_only=False)
            assert last["epoch"] == m["epochs_run"] == m["stopped_at"] and last["state"]["status"] == "pruned"
    assert f"{summary['n_pruned']} pruned" in proc.stdout


@pytest.mark.slow  # a search of stacks, then each seed alone
def test_seeds_per_trial_train_as_one_stack_and_the_trial_is_their_mean(cli):
    # 5 trials in batches of 3: the second batch (2 trials) can be pruned, the 2 start-up trials having finished
    proc = cli(*SEARCH, *MEDIAN, "trainer.epochs=5", "hydra.sweeper.n_trials=5", "hydra.sweeper.n_jobs=3",
               "hydra.sweeper.seeds_per_trial=3", "hydra/launcher=stacked", "seed=4")
    study = optuna.load_study(study_name="quick", storage=f"sqlite:///{proc.run_dir / 'study.db'}")
    counts = check_trials(study)
    assert counts.get("PRUNED", 0) >= 1 and counts.get("COMPLETE", 0) >= 2
    for t in study.trials:
        dirs = [Path(d) for d in t.user_attrs[RUN_DIRS]]
        assert [d.name for d in dirs] == ["seed=4", "seed=5", "seed=6"]  # one sub-folder per seed
        assert len({d.parent for d in dirs}) == 1 and dirs[0].parent.name.startswith(f"{t.number}_")
        assert [read_metrics(d)["seed"] for d in dirs] == [4, 5, 6]
        stacks = {tuple(json.loads((d / "environment.json").read_text())["stack"]) for d in dirs}
        assert len(stacks) == 1 and {str(d) for d in dirs} <= set(next(iter(stacks)))  # its seeds, one stack

    summary = json.loads((proc.run_dir / "sweep_summary.json").read_text())
    best = summary["best"]
    assert best["val_mean"] == pytest.approx(study.best_value, abs=1e-12)
    tests = [read_metrics(d)["test_at_best"]["acc"] for d in best["run_dirs"]]
    assert best["test_acc_mean"] == pytest.approx(sum(tests) / 3, abs=1e-12)
    assert "over 3 seeds" in proc.stdout

    # the printed command re-runs the best trial's seeds, each with the same numbers
    assert best["command"].startswith("for seed in 4 5 6; do OMP_NUM_THREADS=") and len(best["commands"]) == 3
    env, command = printed_command(best["commands"][1])
    assert command[-1] == "seed=5"
    again = cli(*command, tiny=False, env=env)
    assert read_metrics(again.run_dir)["best_val"] == read_metrics(best["run_dirs"][1])["best_val"]


def _replay_module():
    import importlib.util

    from conftest import ROOT

    spec = importlib.util.spec_from_file_location("prune_replay", ROOT / "benchmarks" / "prune_replay.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


REPLAYED_EPOCHS = 9  # successive halving's rungs at 2, 4 and 8 epochs, the last one inside the runs
REPLAYED = (*SEARCH, f"trainer.epochs={REPLAYED_EPOCHS}", "hydra/launcher=stacked", "hydra.sweeper.n_jobs=4",
            "hydra.sweeper.storage=null")


@pytest.fixture(scope="module")
def unpruned(tmp_path_factory, tiny_data) -> Path:
    """The search without a pruner that each pruner's replay reads (run once: it only reads it)."""
    from conftest import CLI

    return CLI(tmp_path_factory.mktemp("unpruned"), tiny_data)(*REPLAYED).run_dir


@pytest.mark.parametrize("pruner", [
    ("hydra/sweeper/pruner=successive_halving", "hydra.sweeper.pruner.min_resource=2",
     "hydra.sweeper.pruner.reduction_factor=2"),
    ("hydra/sweeper/pruner=hyperband", "hydra.sweeper.pruner.min_resource=2",
     "hydra.sweeper.pruner.reduction_factor=2"),
])
@pytest.mark.slow  # two searches and their replay
def test_the_replay_of_an_unpruned_search_gives_the_pruned_searchs_epochs(cli, unpruned, pruner):
    """benchmarks/prune_replay.py picks the pruners' defaults from an unpruned search's curves: it must
    prune exactly what the real stacked search prunes (the first 8 trials are TPE's random start-up, so
    both searches run the same trials). The hyperband preset's max_resource is the runs' epochs: it
    prunes in the first batch, before any trial has finished ("auto" would wait for one)."""
    pruned = cli(*REPLAYED, *pruner)
    replay = _replay_module()
    study, search = replay.trials(unpruned, "val/acc")
    assert study == "quick" and len({t.stack for t in search}) >= 2  # the batches trained as stacks
    keys = {o.split("=", 1)[0].rpartition(".")[2]: int(o.split("=", 1)[1]) for o in pruner[1:]}
    name = pruner[0].rpartition("=")[2]
    if name == "hyperband":
        keys["max_resource"] = REPLAYED_EPOCHS
    result = replay.replay(study, search, replay.pruner_from(name, keys), 4)
    summary = json.loads((pruned.run_dir / "sweep_summary.json").read_text())
    assert summary["n_pruned"] >= 1
    assert (result["pruned"], result["trained"]) == (summary["n_pruned"], summary["epochs"]["run"])
    if name == "successive_halving":  # its rungs compare trials still running: it prunes in the first batch
        first = [read_metrics(f) for f in pruned.run_dir.iterdir() if f.is_dir() and int(f.name.split("_")[0]) < 4]
        assert any(m["status"] == "pruned" for m in first)


def test_hyperbands_max_resource_is_the_runs_epochs():
    """Optuna's "auto" waits for a finished trial, so a first batch would run unpruned; the preset
    gives hyperband the runs' epochs, resolved in the job's config as the sweeper sees it."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.utils import instantiate

    from reg_runner.cli import CONFIG_DIR

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        cfg = compose("config", overrides=["hparams_search=regularization", "hydra/sweeper/pruner=hyperband",
                                           "trainer.epochs=37"], return_hydra_config=True)
    GlobalHydra.instance().clear()
    pruner = instantiate(cfg.hydra.sweeper.pruner, _execution_whitelist_=("optuna.pruners.*",))
    assert isinstance(pruner, optuna.pruners.HyperbandPruner) and pruner._max_resource == 37


def test_the_showcase_preset_searches_its_space_over_three_seeds_in_stacks(cli):
    """hparams_search=showcase as a user types it (here 2 epochs, 2 trials): every key its space suggests
    is a key a run reads, each trial is 3 seeds in one stack, successive halving is its pruner."""
    proc = cli("--multirun", "hparams_search=showcase", "data.val_size=null", "trainer.epochs=2",
               "logging.tensorboard=false", "hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=2",
               "hydra.sweeper.storage=null", "hydra.sweeper.pruner.min_resource=1")  # its first rung within 2 epochs
    summary = json.loads((proc.run_dir / "sweep_summary.json").read_text())
    assert summary["n_complete"] == 2 and len(summary["best"]["run_dirs"]) == 3
    for run in summary["best"]["run_dirs"]:
        cfg = (Path(run) / "resolved_config.yaml").read_text()
        assert "name: noise_affine" in cfg and "epochs: 2" in cfg
        env = json.loads((Path(run) / "environment.json").read_text())
        assert env["trial"]["pruner"] == "optuna.pruners.SuccessiveHalvingPruner"
        assert {str(Path(r)) for r in summary["best"]["run_dirs"]} <= set(env["stack"])
    params = summary["best"]["params"]
    assert {"augmentation.degrees", "augmentation.sigma", "optimizer.weight_decay", "scheduler"} <= params.keys()


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_data):
    """A tiny unpruned search (2 trials of 3 epochs) and a plain grid multirun, for the replay's refusals."""
    from conftest import CLI

    cli = CLI(tmp_path_factory.mktemp("replay"), tiny_data)
    common = ("--multirun", "hparams_search=quick", "data.val_size=null", "trainer.epochs=3",
              "logging.tensorboard=false", "hydra.sweeper.n_trials=2", "hydra.sweeper.storage=null")
    search = cli(*common).run_dir
    grid = cli("--multirun", "seed=0,1", "logging.tensorboard=false").run_dir
    loss_search = cli(*common, "objective=val/loss").run_dir
    return search, grid, loss_search


def _replay_cli(*args, in_process=True):
    """``python benchmarks/prune_replay.py *args``: its ``main()`` in this process (argv, exit code, stdout and stderr
    as the script's process has them), or ``in_process=False``: a real process (the script's one real-process check,
    its refusal of a grid multirun)."""
    import os
    import subprocess
    import sys

    from conftest import ROOT, call_in_process

    argv = [str(ROOT / "benchmarks" / "prune_replay.py"), *map(str, args)]
    if in_process:
        return call_in_process(_replay_module().main, argv, Path.cwd(), dict(os.environ))
    return subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=120)


def test_the_replay_refuses_a_grid_multirun_in_one_line(finished):
    _, grid, _ = finished
    proc = _replay_cli(grid, in_process=False)  # a real process: exit code 2, one line, no traceback
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith(f"error: {grid}: not an Optuna search") and proc.stdout == ""


@pytest.mark.parametrize("objective", ["test/acc", "test/loss", "val/f1"])
def test_the_replays_objective_is_a_validation_metric(finished, objective):
    """The test set never ranks anything; a name the runner cannot optimize is the option's fault, not the folder's."""
    search, _, _ = finished
    proc = _replay_cli(search, "--objective", objective)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and proc.stdout == "", proc.stderr
    assert proc.stderr.startswith(f"error: argument --objective: '{objective}' is not allowed: val/acc or val/loss")


def test_the_replay_of_val_loss_minimizes_it(finished):
    """val/loss is a search objective the sweeper minimizes: its curves are the lowest loss so far, and the best
    kept trial is the lowest."""
    _, _, search = finished
    replay = _replay_module()
    study, trials = replay.trials(search, "val/loss")
    for t in trials:
        assert t.curve == sorted(t.curve, reverse=True)  # the best so far only goes down
        rows = list(csv.DictReader((next(search.glob(f"{t.number}_*")) / "history.csv").open()))
        assert t.curve[-1] == min(float(r["val/loss"]) for r in rows)
    result = replay.replay(study, trials, replay.pruner_from("median", {}), 8, "minimize")
    assert result["best"] == min(t.curve[-1] for t in trials) and result["rank"] == 1
    proc = _replay_cli(search, "--objective", "val/loss")
    assert proc.returncode == 0, proc.stderr
    assert f"best val/loss {min(t.curve[-1] for t in trials):.4f}" in proc.stdout


def test_the_replay_ranks_by_the_searchs_own_objective(finished):
    """A val/acc search replayed as a val/loss one would rank its trials by what the search did not: refused."""
    search, _, loss_search = finished
    for folder, given, recorded in ((search, "val/loss", "val/acc"), (loss_search, "val/acc", "val/loss")):
        proc = _replay_cli(folder, "--objective", given)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and proc.stdout == "", proc.stderr
        assert f"its trials optimized {recorded}, not {given}: give --objective {recorded}" in proc.stderr


# (the pruner's keys, the runs' epochs, trials and n_jobs, the key the one line names, a part of what it says)
PRUNER_CASES = [
    ({"_target_": "optuna.pruners.HyperbandPruner", "min_resource": 1, "max_resource": 0}, (20, 8, 2),
     "max_resource", "auto or an integer >= 1"),
    ({"_target_": "optuna.pruners.HyperbandPruner", "min_resource": 1, "max_resource": -5}, (20, 8, 2),
     "max_resource", "auto or an integer >= 1"),
    ({"_target_": "optuna.pruners.HyperbandPruner", "min_resource": 0}, (20, 8, 2), "min_resource", "an integer >= 1"),
    ({"_target_": "optuna.pruners.HyperbandPruner", "reduction_factor": 1}, (20, 8, 2), "reduction_factor",
     "an integer >= 2"),
    ({"_target_": "optuna.pruners.HyperbandPruner", "reduction_factor": 0}, (20, 8, 2), "reduction_factor",
     "an integer >= 2"),
    ({"_target_": "optuna.pruners.HyperbandPruner", "bootstrap_count": -1}, (20, 8, 2), "bootstrap_count",
     "an integer >= 0"),
    ({"_target_": "optuna.pruners.HyperbandPruner", "min_resource": 30, "max_resource": 40}, (20, 8, 2),
     "min_resource", "at most 19, the last step a run can be pruned at"),
    ({"_target_": "optuna.pruners.MedianPruner", "n_warmup_steps": 20}, (20, 8, 2), "n_warmup_steps",
     "at most 19, the last step a run can be pruned at (trainer.epochs=20)"),
    ({"_target_": "optuna.pruners.MedianPruner", "n_startup_trials": 5}, (20, 6, 2), "n_startup_trials",
     "at most 4: with hydra.sweeper.n_trials=6 and n_jobs=2, the last trials start when 4 have finished"),
    ({"_target_": "optuna.pruners.PercentilePruner", "percentile": 25.0, "n_startup_trials": 1, "n_min_trials": 3},
     (20, 3, 2), "n_min_trials", "at most 2"),
    ({"_target_": "optuna.pruners.MedianPruner"}, (20, 2, 2), "_target_", "every trial starts before any has "
     "finished"),
    ({"_target_": "optuna.pruners.PercentilePruner", "percentile": 25.0}, (20, 2, 2), "_target_",
     "_target_='optuna.pruners.PercentilePruner' is not allowed: a pruner that compares with trials that have "
     "finished"),
    ({"_target_": "optuna.pruners.SuccessiveHalvingPruner", "min_resource": 10, "reduction_factor": 3}, (10, 8, 2),
     "min_resource", "a first rung (min_resource x reduction_factor ^ min_early_stopping_rate = 10) at most 9"),
    ({"_target_": "optuna.pruners.SuccessiveHalvingPruner", "min_resource": 2, "reduction_factor": 3,
      "min_early_stopping_rate": 3}, (20, 8, 2), "min_early_stopping_rate", "= 54) at most 19"),
    ({"_target_": "optuna.pruners.ThresholdPruner", "lower": 0.0}, (20, 8, 2), "", "the objective, val/acc, never "
     "leaves [0, 1]"),
    ({"_target_": "optuna.pruners.PatientPruner", "wrapped_pruner": None, "patience": 2}, (20, 8, 2), "_target_",
     "which never gets worse"),
    ({"_target_": "optuna.pruners.WilcoxonPruner", "n_startup_steps": 30}, (20, 8, 2), "n_startup_steps",
     "at most 19, the steps a run can be pruned at"),
    ({"_target_": "optuna.pruners.MedianPruner", "n_warmup_steps": 0}, (1, 8, 2), "_target_", "evaluated only at its "
     "last epoch"),
]


@pytest.mark.parametrize("spec, run, key, says", PRUNER_CASES, ids=[f"{c[0]['_target_'].rpartition('.')[2]}-{c[2]}-{i}"
                                                                  for i, c in enumerate(PRUNER_CASES)])
def test_a_pruner_that_would_fail_or_never_prune_is_refused(spec, run, key, says):
    from reg_runner.errors import ConfigError
    from reg_runner.sweep import pruners

    epochs, n_trials, n_jobs = run
    with pytest.raises(ConfigError) as refused:
        pruners.check(spec, pruners.Reach(epochs, 1, n_trials, n_jobs, "val/acc"))
    assert refused.value.key == f"hydra.sweeper.pruner{'.' + key if key else ''}" and says in str(refused.value)


@pytest.mark.parametrize("preset", sorted(p.stem for p in (Path(__file__).parent.parent / "conf" / "hydra" / "sweeper" /
                                                           "pruner").glob("*.yaml")))
def test_every_pruner_preset_prunes_the_reference_search(preset):
    """The presets with the reference study's epochs (1000) and hparams_search=regularization's trials pass."""
    import yaml

    from reg_runner.sweep import pruners

    spec = yaml.safe_load((Path(__file__).parent.parent / "conf" / "hydra" / "sweeper" / "pruner" / f"{preset}.yaml")
                          .read_text())
    spec = {k: (1000 if v == "${trainer.epochs}" else v) for k, v in spec.items()}
    pruners.check(spec, pruners.Reach(1000, 1, 50, 2, "val/acc"))


@pytest.mark.parametrize("min_resource, max_resource, factor", [(1, 100, 2), (10, 1000, 3), (5, 81, 3), (7, 7, 2)])
def test_hyperbands_brackets_are_optunas(min_resource, max_resource, factor):
    """The brackets computed before any trial are the ones Optuna's HyperbandPruner makes at its first prune."""
    from reg_runner.sweep import pruners

    study = optuna.create_study(direction="maximize")
    pruner = optuna.pruners.HyperbandPruner(min_resource, max_resource, factor)
    pruner._try_initialization(study)  # what its first prune() does
    ours = pruners.brackets(min_resource, max_resource, factor)
    assert [b["first_rung"] for b in ours] == [p._min_resource * factor ** p._min_early_stopping_rate
                                                for p in pruner._pruners]
    assert [b["share"] for b in ours] == [b / pruner._total_trial_allocation_budget
                                          for b in pruner._trial_allocation_budgets]


def test_brackets_that_never_act_are_named_in_one_warning(caplog):
    from reg_runner.sweep import pruners

    spec = {"_target_": "optuna.pruners.HyperbandPruner", "min_resource": 1, "max_resource": 100, "reduction_factor": 2}
    with caplog.at_level("WARNING"):
        pruners.check(spec, pruners.Reach(4, 1, 8, 2, "val/acc"))
    idle = [b for b in pruners.brackets(1, 100, 2) if b["first_rung"] > 3]
    assert len(caplog.records) == 1
    assert f"{len(idle)} of hyperband's {len(pruners.brackets(1, 100, 2))} brackets" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        pruners.check({**spec, "max_resource": 4}, pruners.Reach(40, 1, 8, 2, "val/acc"))
    assert not caplog.records
