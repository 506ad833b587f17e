"""What a search leaves for its analysis (docs/search.md, "Result"): each trial's runs' folders and results as its
user attributes, its curves and its runs' ``metrics.json`` as Optuna artifacts (the sweep folder's ``artifacts/``),
and, for the report, Optuna's figures of the study and ``trials.csv``. The sweep folder's marker
(``.reg_runner.json``, written before the search's first trial) names the study and its storage for the report.
"""

import csv
import io
import logging
import math
import tempfile
import warnings
from pathlib import Path

from reg_runner import kinds
from reg_runner.errors import HIDDEN, UserError, cause, masked
from reg_runner.figures import to_png
from reg_runner.records import RunFolder
from reg_runner.schema import is_number
from reg_runner.trainer.trial import shown_storage, sqlite_file

log = logging.getLogger(__name__)
TEST_ACC, EPOCHS, WALL, SEEDS = ("reg_runner.test_acc_at_best", "reg_runner.epochs_run", "reg_runner.wall_s",
                                 "reg_runner.seeds")
ARTIFACTS = "artifacts"  # the artifact store's folder, in the sweep folder
RUN_DIR = "reg_runner.run_dir"  # a trial's user attribute: its run's folder
RUN_DIRS = "reg_runner.run_dirs"  # a trial of several seeds: its runs' folders


def trial_dirs(trial) -> list[str]:
    """The folders of a trial's runs (one, or one per seed)."""
    attrs = trial.user_attrs
    return list(attrs[RUN_DIRS]) if RUN_DIRS in attrs else [attrs[RUN_DIR]] if RUN_DIR in attrs else []


def trial_results(dirs: list[str]) -> dict:
    """A trial's results from its runs' records, as its user attributes hold them: test accuracy at best (the
    mean over its seeds), epochs run (one number, or one per seed), wall time (its longest run's: seeds train
    side by side in a stack) and seeds. A value no run recorded is left out."""
    records = [RunFolder(Path(d)).recorded() or {} for d in dirs]
    if not records:
        return {}
    out = {}
    tests = [(m.get("test_at_best") or {}).get("acc") for m in records]
    if all(is_number(t) for t in tests):
        out[TEST_ACC] = math.fsum(tests) / len(tests)
    epochs = [m.get("epochs_run") for m in records]
    if all(isinstance(e, int) for e in epochs):
        out[EPOCHS] = epochs[0] if len(epochs) == 1 else epochs
    walls = [(m.get("timing") or {}).get("wall_s") for m in records]
    if all(is_number(w) for w in walls):
        out[WALL] = max(walls)
    seeds = [m.get("seed") for m in records]
    if all(isinstance(s, int) for s in seeds):
        out[SEEDS] = seeds
    return out


def record_trial(trial, dirs: list[str], artifacts: Path | None) -> None:
    """Before the trial is told: its results as user attributes, and (``artifacts``: the store's folder) its
    curves and metrics as artifacts. Never fatal: a search goes on without them, and says so in its log."""
    try:
        for key, value in trial_results(dirs).items():
            trial.set_user_attr(key, value)
    except Exception as e:  # a storage that refuses a write: the run's own records still hold the numbers
        log.warning("trial %d: its results could not be recorded on the trial (%s)", trial.number, cause(e, 200))
    if artifacts is None or not dirs:
        return
    try:
        import optuna
        from optuna.artifacts import FileSystemArtifactStore, upload_artifact

        artifacts.mkdir(parents=True, exist_ok=True)
        store = FileSystemArtifactStore(base_path=str(artifacts))
        files = [Path(d) / "metrics.json" for d in dirs if (Path(d) / "metrics.json").is_file()]
        with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            if (png := trial_curves(dirs)) is not None:
                (Path(tmp) / "curves.png").write_bytes(png)
                files.insert(0, Path(tmp) / "curves.png")
            for path in files:
                upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=trial,
                                mimetype="image/png" if path.suffix == ".png" else "application/json")
    except Exception as e:
        log.warning("trial %d: its curves and metrics could not be attached (%s)", trial.number, cause(e, 200))


def trial_curves(dirs: list[str]) -> bytes | None:
    """The trial's learning curves, one line per run: training loss, validation loss and accuracy per epoch."""
    histories = [(Path(d).name, RunFolder(Path(d)).read_history()) for d in dirs]
    histories = [(name, rows) for name, rows in histories if rows]
    if not histories:
        return None
    from matplotlib.figure import Figure  # no pyplot: no global figure to close, no GUI backend

    fig = Figure(figsize=(10, 3.8))
    axes = fig.subplots(1, 2)
    for name, rows in histories:
        epochs = [r["epoch"] for r in rows]
        label = name if len(histories) > 1 else None
        axes[0].plot(epochs, [r["val/acc"] for r in rows], label=label)
        line = axes[1].plot(epochs, [r["val/loss"] for r in rows], label=f"val {name}" if label else "val")[0]
        if all("train/loss" in r for r in rows):
            axes[1].plot(epochs, [r["train/loss"] for r in rows], linestyle="--", color=line.get_color(),
                         label=f"train {name}" if label else "train")
    for ax, title in zip(axes, ("validation accuracy", "loss")):
        ax.set(xlabel="epoch", title=title)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7)
    if len(histories) > 1:
        axes[0].legend(fontsize=7)
    fig.tight_layout()
    return to_png(fig, 100)


# --- the report's side ---------------------------------------------------------------------------------------

def search(root: Path, out: Path, storage: str | None = None, plots: bool = True) -> tuple[list, str]:
    """A search's analysis for the report: the files to write (path, bytes) and its markdown section; ([], "")
    for a folder that is no search's. The study is opened read-only, and its URL shown without its password.
    Nothing here stops the report but a study database that does not exist (a ``UserError``): what cannot be
    drawn is said."""
    study_info = kinds.marker(root).get("study")
    if not (isinstance(study_info, dict) and study_info.get("name")):
        return [], ""
    name, url = study_info["name"], storage or study_info.get("storage")
    section = ["", f"## Search: study `{name}`", ""]
    if url is None:
        return [], "\n".join(section + ["Its study was kept in memory (hydra.sweeper.storage=null): nothing "
                                        "remains to analyze beyond the runs above."]) + "\n"
    shown = shown_storage(url)
    if HIDDEN in url:
        return [], "\n".join(section + [f"Its storage `{shown}` hides a password: give the URL with --storage to "
                                        "analyze the study."]) + "\n"
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.load_study(study_name=name, storage=read_only_storage(url))
    except UserError:
        raise
    except Exception as e:
        return [], "\n".join(section + [f"The study cannot be opened from `{shown}` ({cause(e, 200)})."]) + "\n"
    trials = study.get_trials(deepcopy=False)
    n = len(study.directions)  # several: the objectives by name
    objectives = list(study.metric_names or [f"objective {i}" for i in range(n)]) if n > 1 else None
    files = [(out / "trials.csv", trials_csv(trials, objectives, study.best_trials if objectives else ()))]
    complete = sum(t.state.name == "COMPLETE" for t in trials)
    section.append(f"{len(trials)} trials, {complete} complete, in `{shown}`. One row per trial: `trials.csv`.")
    if objectives:
        section.append(f"Objectives: {', '.join(objectives)}; {len(study.best_trials)} trials on the Pareto front "
                       "(the `pareto` column), which no other complete trial matches or beats in every objective.")
    if plots:
        drawn, missing = figures(study, out, objectives)
        files += drawn
        section += [""] + [f"![{p.stem}]({p.name})" for p, _ in drawn]
        if missing:
            section += [""] + [f"- {p}: {why}" for p, why in missing]
        if any(p.stem == "importances" for p, _ in drawn):
            section += ["", "Importances: PED-ANOVA (Optuna's PedAnovaImportanceEvaluator) over the complete trials; "
                        "with few trials, read them as a hint."]
    artifacts = root / ARTIFACTS
    dashboard = f"optuna-dashboard {shown}" + (f" --artifact-dir {artifacts}" if artifacts.is_dir() else "")
    section += ["", f"Each trial's curves, metrics and results in optuna-dashboard (`pip install optuna-dashboard`): "
                f"`{dashboard}`."]
    return files, "\n".join(section) + "\n"


def read_only_storage(url: str):
    """A study's storage opened to read, never to write (a write fails): an SQLite file that must exist, with
    ``mode=ro``; PostgreSQL in read-only transactions; another database without creating its tables."""
    import optuna
    from urllib.parse import quote

    from sqlalchemy.engine import make_url

    path, engine = sqlite_file(url), {}
    if path is not None:
        url = f"sqlite:///file:{quote(str(path.absolute()))}?mode=ro&uri=true"
    elif make_url(url).get_backend_name() == "postgresql":  # options given in the URL are kept
        options = f"{make_url(url).query.get('options', '')} -c default_transaction_read_only=on".strip()
        engine = {"connect_args": {"options": options}}
    return optuna.storages.RDBStorage(url, engine_kwargs=engine, skip_table_creation=True)


def trials_csv(trials, objectives: list | None = None, front=()) -> bytes:
    """One row per trial: number, state, value (with several ``objectives``: a column per objective, and
    ``pareto``: whether the trial is on the front ``front``), its parameters, and its runs' results and folders."""
    params = list(dict.fromkeys(p for t in trials for p in t.params))
    on_front = {t.number for t in front}
    rows = []
    for t in trials:
        dirs = trial_dirs(t)
        attrs = t.user_attrs
        found = {**trial_results(dirs), **{k: attrs[k] for k in (TEST_ACC, EPOCHS, WALL, SEEDS) if k in attrs}}
        values = ({o: (t.values[i] if t.values else None) for i, o in enumerate(objectives)}
                  | {"pareto": t.number in on_front} if objectives else {"value": t.value})
        rows.append({"number": t.number, "state": t.state.name, **values,
                     **{p: t.params.get(p) for p in params},
                     "test_acc_at_best": found.get(TEST_ACC), "epochs_run": _cell(found.get(EPOCHS)),
                     "wall_s": found.get(WALL), "seeds": _cell(found.get(SEEDS)), "run_dirs": _cell(dirs)})
    buffer = io.StringIO()
    value_columns = [*objectives, "pareto"] if objectives else ["value"]
    writer = csv.DictWriter(buffer, fieldnames=["number", "state", *value_columns, *params, "test_acc_at_best",
                                                "epochs_run", "wall_s", "seeds", "run_dirs"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return masked(buffer.getvalue()).encode()


def _cell(v):
    if isinstance(v, (list, tuple)):
        return " ".join(str(x) for x in v)
    return v


def figures(study, out: Path, objectives: list | None = None) -> tuple[list, list]:
    """Optuna's figures of the study as PNGs: (path, bytes) drawn, and (name, why) of those it could not draw.
    With several ``objectives``: the Pareto front first, and the other figures of the first objective."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from optuna.importance import PedAnovaImportanceEvaluator
    from optuna.visualization import matplotlib as draw

    one = dict(target=lambda t: t.values[0], target_name=objectives[0]) if objectives else {}
    makers = {
        "pareto_front": lambda: draw.plot_pareto_front(study, target_names=objectives),
        "importances": lambda: draw.plot_param_importances(study, evaluator=PedAnovaImportanceEvaluator(), **one),
        "parallel_coordinates": lambda: draw.plot_parallel_coordinate(study, **one),
        "optimization_history": lambda: draw.plot_optimization_history(study, **one),
        "slices": lambda: draw.plot_slice(study, **one),
        "intermediate_values": lambda: draw.plot_intermediate_values(study),
    }
    # the front needs several objectives; Optuna records intermediate values of single-objective studies only
    del makers["intermediate_values" if objectives else "pareto_front"]
    trials = study.get_trials(deepcopy=False)
    complete = sum(t.state.name == "COMPLETE" for t in trials)
    drawn, missing = [], []
    with matplotlib.rc_context():  # Optuna's plots set the ggplot style for the whole process: for theirs only
        for name, make in makers.items():
            if name != "intermediate_values" and complete < 2:
                missing.append((name, f"needs 2 complete trials ({complete} so far)"))
                continue
            if name == "intermediate_values" and not any(t.intermediate_values for t in trials):
                missing.append((name, "no trial recorded a learning curve"))
                continue
            try:
                with warnings.catch_warnings():  # experimental plots, and PED-ANOVA's notes on small samples
                    warnings.simplefilter("ignore")
                    axes = make()
                    if name == "pareto_front" and len(objectives) == 2:  # sizes span decades: read them on a log axis
                        for objective, scale in zip(objectives, (axes.set_xscale, axes.set_yscale)):
                            if objective in ("params", "flops"):
                                scale("log")
                    image = to_png(np.ravel(axes)[0].figure, 100, tight=True)
                drawn.append((out / f"{name}.png", image))
            except Exception as e:  # a study this figure cannot show (one distinct value...): the others still are
                missing.append((name, f"not drawn ({cause(e, 200)})"))
            finally:
                plt.close("all")
    return drawn, missing
