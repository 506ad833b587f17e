"""Searches with several objectives: a multi-objective Optuna study, its Pareto front in the summary, trials.csv
and the report; what cannot work refused before any trial; a killed search resumed."""

import csv
import importlib.util
import io
import json
import signal
import time
from pathlib import Path

import optuna
import pytest
import torch
from conftest import ROOT, TINY, killable, printed_command, read_metrics
from test_bad_input import assert_one_line_error

from reg_runner.model import measures
from reg_runner.sweep.analysis import trial_dirs

optuna.logging.set_verbosity(optuna.logging.WARNING)
PARETO = ("--multirun", "hparams_search=pareto", "data.val_size=null", "trainer.epochs=2")


def load(sweep: Path, name="pareto") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{sweep / 'study.db'}")


def front_of(points: dict[int, tuple[float, float]]) -> set[int]:
    """The trials no other beats: at least as accurate and as small, better in one (val/acc up, params down)."""
    def beats(a, b):
        return a[0] >= b[0] and a[1] <= b[1] and a != b

    return {n for n, p in points.items() if not any(beats(q, p) for m, q in points.items() if m != n)}


def test_a_two_objective_search_tells_each_trial_its_seeds_mean_and_finds_the_front(cli, tmp_path, capsys):
    proc = cli(*PARETO, "hydra.sweeper.n_trials=4", "hydra.sweeper.seeds_per_trial=2")
    sweep = proc.run_dir
    study = load(sweep)
    assert study.directions == [optuna.study.StudyDirection.MAXIMIZE, optuna.study.StudyDirection.MINIMIZE]
    assert study.metric_names == ["val/acc", "params"]  # what optuna-dashboard names the two values
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == 4 and all(t.state.name == "COMPLETE" for t in trials)
    points = {}
    for t in trials:
        runs = [read_metrics(d) for d in trial_dirs(t)]
        assert len(runs) == 2 and {m["seed"] for m in runs} == {0, 1}
        assert t.values == [sum(m["best"]["val/acc"] for m in runs) / 2, runs[0]["n_parameters"]]
        assert t.intermediate_values == {}  # Optuna keeps learning curves of one objective only
        points[t.number] = tuple(t.values)
    assert {t.number for t in study.best_trials} == front_of(points)
    assert len({p[1] for p in points.values()}) > 1  # sizes differ: a front, not a ranking

    summary = json.loads((sweep / "sweep_summary.json").read_text())
    assert [t["number"] for t in summary["pareto"]] == sorted(front_of(points), key=lambda n: -points[n][0])
    assert summary["best"] is None and summary["objectives"] == ["val/acc", "params"]
    assert f"Pareto front (val/acc, params): {len(summary['pareto'])} trials" in proc.stdout
    md = (sweep / "sweep_summary.md").read_text()
    for member in summary["pareto"]:
        assert member["value"] == dict(zip(["val/acc", "params"], points[member["number"]]))
        assert member["command"] in md and member["command"] in proc.stdout

    from reg_runner.report import report

    report(sweep)
    rows = list(csv.DictReader(io.StringIO((sweep / "trials.csv").read_text())))
    assert {"val/acc", "params", "pareto"} <= set(rows[0]) and "value" not in rows[0]
    assert {int(r["number"]) for r in rows if r["pareto"] == "True"} == front_of(points)
    assert all(float(r["val/acc"]) == points[int(r["number"])][0] for r in rows)
    import matplotlib.image

    image = matplotlib.image.imread(sweep / "pareto_front.png")
    assert image.shape[0] > 200 and image[..., :3].std() > 0.05  # drawn, not blank
    assert "![pareto_front](pareto_front.png)" in (sweep / "report.md").read_text()

    # the docs' figure of such a study: test accuracy against parameters, the front's trials printed
    spec = importlib.util.spec_from_file_location("pareto_figure", ROOT / "benchmarks" / "pareto.py")
    figure = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(figure)
    figure.main([str(sweep), "--out", str(tmp_path / "front.png")])
    printed = capsys.readouterr().out
    assert [int(line.split()[1].rstrip(":")) for line in printed.splitlines() if line.startswith("trial ")] == sorted(
        front_of(points), key=lambda n: points[n][1])
    assert matplotlib.image.imread(tmp_path / "front.png")[..., :3].std() > 0.05


def test_the_plugins_multi_objective_sampler_searches(cli):
    """The sampler group's NSGA-II (as NSGA-III, a function of the Optuna plugin that makes Optuna's sampler) runs a
    two-objective search."""
    proc = cli("--multirun", "hydra/sweeper=study", "hydra/sweeper/sampler=nsgaii", "model.width=choice(8,16)",
               "hydra.sweeper.objectives=[val/acc,params]", "hydra.sweeper.n_trials=2", "trainer.epochs=1")
    summary = json.loads((proc.run_dir / "sweep_summary.json").read_text())
    assert summary["n_complete"] == 2 and summary["pareto"] and summary["objectives"] == ["val/acc", "params"], summary


def test_a_front_member_reruns_from_its_printed_line(cli):
    proc = cli(*PARETO, "hydra.sweeper.n_trials=3")
    summary = json.loads((proc.run_dir / "sweep_summary.json").read_text())
    member = summary["pareto"][-1]
    env, command = printed_command(member["command"])
    again = read_metrics(cli(*command, tiny=False, env=env).run_dir)
    assert [again["best"]["val/acc"], again["n_parameters"]] == list(member["value"].values())


@pytest.mark.parametrize("overrides,expected", [
    ("hydra/sweeper/pruner=median", "hydra.sweeper.pruner._target_='optuna.pruners.MedianPruner' is not allowed: "
     "optuna.pruners.NopPruner (hydra/sweeper/pruner=none) with several objectives"),
    ("hydra/sweeper=study hydra/sweeper/sampler=cmaes hydra.sweeper.objectives=[val/acc,params]",
     "hydra.sweeper.sampler._target_='optuna.samplers.CmaEsSampler' is not allowed: a sampler for several objectives"),
    ("hydra.sweeper.objectives=[val/acc,accuracy]", "metrics every run records: accuracy is none (val/acc, val/loss, "
     "params, flops, near_zero, train_s)"),
    ("hydra.sweeper.objectives=[test/acc,params]", "test/acc is measured on the test set, which never steers"),
    ("hydra.sweeper.objectives=[params,val/acc,params]", "each metric once: params is given twice"),
    ("hydra.sweeper.objectives=[params]", "a list of two or more"),
    ("hydra.sweeper.direction=[maximize,maximize]", "hydra.sweeper.direction=['maximize', 'maximize'] is not allowed: "
     "['maximize', 'minimize'], as val/acc is maximized, params is minimized"),
])
def test_what_a_multi_objective_search_cannot_do_is_refused_in_one_line(overrides, expected):
    """The sweeper's checks, as the CLI's callback runs them before a multirun makes anything."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    import reg_runner.cli  # noqa: F401  (its resolvers: the directions follow the objectives)
    from reg_runner.errors import CONFIG_DIR, UserError
    from reg_runner.sweep.settings import check_hydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR):
        cfg = compose("config", overrides=(["hparams_search=pareto"] if "cmaes" not in overrides else []) + overrides.split(), return_hydra_config=True)
    with pytest.raises(UserError) as refused:
        check_hydra(cfg.hydra, cfg.objective)
    assert expected in str(refused.value) and "\n" not in str(refused.value), refused.value


def test_a_refused_multi_objective_search_makes_nothing(cli, tmp_path):
    proc = cli(*PARETO, "hydra/sweeper/pruner=median", run_dir=tmp_path / "never", check=False, in_process=False)
    assert_one_line_error(proc, "with several objectives: Optuna prunes single-objective studies only")
    assert not (tmp_path / "never").exists()


def test_a_study_keeps_its_number_of_objectives(cli, tmp_path):
    sweep, storage = tmp_path / "study", f"sqlite:///{tmp_path / 'shared.db'}"
    same = (f"hydra.sweeper.storage={storage}", "hydra.sweeper.study_name=shared", "hydra.sweeper.n_trials=1")
    cli("--multirun", "hparams_search=quick", "data.val_size=null", *same, run_dir=sweep)
    proc = cli(*PARETO, *same, run_dir=tmp_path / "two", check=False)
    assert_one_line_error(proc, "the study 'shared' has one objective; this command has 2 objectives (val/acc, params)")
    cli(*PARETO, *same[:1], "hydra.sweeper.study_name=two", "hydra.sweeper.n_trials=1", run_dir=tmp_path / "two")
    proc = cli("--multirun", "hparams_search=quick", "data.val_size=null", *same[:1], "hydra.sweeper.study_name=two",
               run_dir=tmp_path / "one", check=False)
    assert_one_line_error(proc, "the study 'two' has 2 objectives; this command has one objective (objective=val/acc)")
    proc = cli(*PARETO, *same[:1], "hydra.sweeper.study_name=two", "hydra.sweeper.objectives=[val/acc,flops]",
               run_dir=tmp_path / "two", check=False)
    assert_one_line_error(proc, "was started with objectives=['val/acc', 'params']; this command has ['val/acc', 'flops']")


@pytest.mark.slow  # a two-objective search killed, then resumed
def test_a_killed_two_objective_search_resumes_to_its_trials(cli, tmp_path):
    sweep = tmp_path / "killed"
    args = [*PARETO, "trainer.epochs=4", "hydra.sweeper.n_trials=5", "hydra.sweeper.n_jobs=1"]
    argv = [f"data.root={cli.data}", *TINY[:3], "data.verify=false", *args, f"hydra.sweep.dir={sweep}"]
    proc = killable(argv, tmp_path, cli.env)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
        if sum(1 for m in sweep.glob("*/metrics.json") if '"completed"' in m.read_text()) >= 2:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = sum(t.state.name == "COMPLETE" for t in load(sweep).trials)
    assert 1 <= before < 5
    cli(*args, run_dir=sweep)
    study = load(sweep)
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(complete) == 5 and all(len(t.values) == 2 for t in complete)
    assert json.loads((sweep / "sweep_summary.json").read_text())["n_complete"] == 5


def test_flops_count_the_matrix_products_and_near_zero_the_small_weights(cli):
    from reg_runner.model.mlp import MLP

    net = MLP(_target_="reg_runner.model.mlp.MLP", depth=2, width=30, activation="relu", norm="none",
              norm_position="before_activation", dropout=0.0, residual=False, init="default")
    assert measures.flops_per_image(net, (1, 8, 8), 10) == 2 * (64 * 30 + 30 * 30 + 30 * 10)
    state = {"a.weight": torch.tensor([0.0, 5e-4, -9e-4, 2e-3]), "b.weight": torch.tensor([1.0, -1e-3]),
             "a.bias": torch.zeros(3)}
    assert measures.near_zero(state, ["a.weight", "b.weight"]) == 3 / 6  # |w| < 1e-3; biases are not weights

    run = cli("reg.l1=1e-2", "trainer.epochs=3").run_dir
    m = read_metrics(run)
    best = torch.load(run / "checkpoints" / "best.pt", weights_only=False)["model"]
    weights = [v for k, v in best.items() if k.endswith("weight") and v.dim() > 1]
    share = sum(int((w.abs() < 1e-3).sum()) for w in weights) / sum(w.numel() for w in weights)
    assert m["size"]["near_zero"] == share and m["size"]["flops_per_image"] == 2 * sum(w.numel() for w in weights)
