"""The report over run folders made by the real CLI: both tables against the runs' own records."""

import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
from urllib.parse import quote

import pytest
from conftest import InProcess, read_metrics
from PIL import Image
from scipy.stats import ttest_ind


@pytest.fixture(scope="module")
def study(tmp_path_factory, tiny_data):
    from conftest import CLI

    cli = CLI(tmp_path_factory.mktemp("study"), tiny_data)
    sweep = cli("--multirun", "+experiment=baseline,l2,dropout", "seed=0,1,2", "trainer.epochs=4").run_dir
    runs = sorted(p for p in sweep.iterdir() if p.is_dir())
    # folders a report must survive: unreadable record, stopped before training, unfinished, foreign
    broken = sweep / "90_broken"
    shutil.copytree(runs[0], broken)
    (broken / "metrics.json").write_text("{ not json")
    early = sweep / "91_early"  # what a run stopped by a bad value before training leaves
    (early / ".hydra").mkdir(parents=True)
    overrides = (runs[3] / ".hydra" / "overrides.yaml").read_text()  # an l2 run's, seed 0
    assert "+experiment=l2" in overrides
    (early / ".hydra" / "overrides.yaml").write_text(overrides.replace("seed=0", "seed=7"))
    unfinished = sweep / "92_unfinished"
    shutil.copytree(runs[1], unfinished)
    m = read_metrics(unfinished)
    (unfinished / "metrics.json").write_text(json.dumps({**m, "status": "running"}))
    (sweep / "notes").mkdir()
    (sweep / "notes" / "todo.txt").write_text("not a run")
    return sweep, runs


def report(path, *args):
    """``python -m reg_runner.report PATH *args`` through its main in this process (the real command: a search's
    report in tests/test_analysis.py, a refusal in test_a_baseline_that_matches_no_group_is_refused_before_out_is_made
    and test_a_command_line_mistake_is_one_line)."""
    proc = in_process(["reg_runner.report", str(path), *args], os.getcwd())
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_table_1_matches_every_run_record(study, tmp_path):
    sweep, runs = study
    proc = report(sweep, "--out", str(tmp_path))
    rows = {r["run"]: r for r in csv.DictReader((tmp_path / "report.csv").open())}
    assert len(rows) == 12  # 9 runs + 3 broken ones; the foreign folder is not a run
    for run in runs:
        m, row = read_metrics(run), rows[run.name]
        assert float(row["best_val_acc"]) == m["best"]["val/acc"]
        assert float(row["test_acc_at_best"]) == m["test_at_best"]["acc"]
        assert float(row["final_train_loss"]) == m["final"]["train/loss"]
        assert float(row["final_val_loss"]) == m["final"]["val/loss"]
        assert int(row["best_epoch"]) == m["best_epoch"] and int(row["seed"]) == m["seed"]
        assert row["experiment"] in ("baseline", "l2", "dropout") and f"+experiment={row['experiment']}" in run.name
        assert row["status"] == "completed"
    assert rows["90_broken"]["status"] == "unreadable metrics.json"
    assert rows["91_early"]["status"].startswith("no metrics.json") and rows["91_early"]["experiment"] == "l2"
    # recorded as running, but no process holds its lock: killed, and resumable
    assert rows["92_unfinished"]["status"].startswith("killed (resume:")
    # in the tables a run is its job number and seed, linked to its folder; the csv keeps the folder's name
    assert f"| [90 · seed 0]({os.path.relpath(sweep, tmp_path)}/90_broken/) |" in proc.stdout
    assert f"| [0 · seed 0]({quote(os.path.relpath(runs[0], tmp_path))}/) |" in proc.stdout
    assert "notes" not in proc.stdout


def test_table_2_groups_by_experiment_with_seeds_left_out(study, tmp_path):
    sweep, runs = study
    text = report(sweep, "--out", str(tmp_path)).stdout
    by = {}
    for run in runs:
        m = read_metrics(run)
        by.setdefault(m and run.name.split("+experiment=")[1].split(",")[0], []).append(m)
    base_test = [m["test_at_best"]["acc"] for m in by["baseline"]]
    for name, ms in by.items():
        val = [m["best"]["val/acc"] for m in ms]
        test = [m["test_at_best"]["acc"] for m in ms]
        line = next(line for line in text.splitlines() if line.startswith(f"| {name} |"))
        # the baseline group also holds the unreadable and the unfinished copies; l2 the early-stopped folder
        n = {"baseline": "3 of 5 (left out: seed 0 unreadable metrics.json, seed 1 killed)",
             "l2": "3 of 4 (left out: seed 7 no metrics.json", "dropout": "3 |"}[name]
        assert f"| {n}" in line
        assert f"{statistics.mean(val):.4f} ± {statistics.stdev(val):.4f}" in line
        assert f"{statistics.mean(test):.4f} ± {statistics.stdev(test):.4f}" in line
        if name == "baseline":
            assert line.endswith("| baseline | baseline | baseline | baseline |")
        else:
            assert f"{statistics.mean(test) - statistics.mean(base_test):.4f}" in line
            # two groups tested against one baseline: Holm's correction, by hand (the smaller p doubled, the
            # larger kept at least that)
            p = {k: ttest_ind([m["test_at_best"]["acc"] for m in v], base_test, equal_var=False).pvalue
                 for k, v in by.items() if k != "baseline"}
            low, high = sorted(p.values())
            adjusted = min(1.0, 2 * low) if p[name] == low else max(min(1.0, 2 * low), high)
            assert f"| {adjusted:.3g}" in line
    assert "| p (val, Holm) |" in text and "Holm's correction is applied: 2 groups are tested" in text


def test_pngs_are_valid_images(study, tmp_path):
    proc = report(study[0], "--out", str(tmp_path))
    assert "Warning" not in proc.stderr and "tight" not in proc.stderr, proc.stderr  # nothing a user cannot act on
    for name in ("curves.png", "test_acc.png"):
        with Image.open(tmp_path / name) as img:
            img.verify()
            assert img.format == "PNG"
    # what is drawn, not only a canvas: the two groups beside the baseline in their own colours (matplotlib's
    # cycle), the baseline in grey, no third group; each group's mean, the baseline's in red
    with Image.open(tmp_path / "curves.png") as img:
        colours = {c: n for n, c in img.convert("RGB").getcolors(maxcolors=1 << 22)}
    for colour in ((0x1F, 0x77, 0xB4), (0xFF, 0x7F, 0x0E), (0x73, 0x73, 0x73)):
        assert colours.get(colour, 0) >= 20, colour
    assert colours.get((0x2C, 0xA0, 0x2C), 0) < 20  # no third group
    with Image.open(tmp_path / "test_acc.png") as img:
        colours = {c: n for n, c in img.convert("RGB").getcolors(maxcolors=1 << 22)}
    assert colours.get((0x1F, 0x77, 0xB4), 0) >= 20 and colours.get((0xD6, 0x27, 0x28), 0) >= 20
    text = (tmp_path / "report.md").read_text()
    assert "![curves](curves.png)" in text and "![test_acc](test_acc.png)" in text
    assert "main_effects" not in text and "factorial" not in text  # one key varies: no design to speak of


def test_a_single_run_folder_and_a_baseline_choice(study, tmp_path):
    sweep, runs = study
    text = report(runs[3], "--out", str(tmp_path / "one")).stdout
    assert "1 runs, 1 trained to the end" in text
    text = report(sweep, "--out", str(tmp_path / "b"), "--baseline", "experiment=l2").stdout
    assert "baseline: `experiment=l2`" in text


def test_a_baseline_that_matches_no_group_is_refused_before_out_is_made(study, tmp_path):
    sweep, _ = study
    out = tmp_path / "new" / "report"
    proc = subprocess.run([sys.executable, "-m", "reg_runner.report", str(sweep), "--baseline", "seed=7",
                           "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("error: --baseline 'seed=7' matches no group") and proc.stdout == ""
    assert not (tmp_path / "new").exists()


def in_process(words: list[str], cwd) -> "InProcess":
    """``python -m <words>`` through the tool's main in this process (conftest.call_in_process)."""
    import importlib

    from conftest import call_in_process

    module = importlib.import_module(words[0] + (".__main__" if words[0] == "reg_runner.data" else ""))
    return call_in_process(lambda: sys.exit(module.main()), [f"python -m {words[0]}", *words[1:]], cwd,
                           dict(os.environ))


@pytest.mark.parametrize("argv, expected", [
    (["reg_runner.report"], "the following arguments are required: path"),
    (["reg_runner.report", "{tmp}", "--nope"], "unrecognized arguments: --nope"),
    # a --storage that names no database: refused before anything, not a report that says it cannot open it
    (["reg_runner.report", "{tmp}", "--storage", "notadb://x"], "argument --storage: 'notadb://x' is not allowed: a "
     "database SQLAlchemy knows: 'notadb' is none"),
    (["reg_runner.report", "{tmp}", "--storage", ""], "argument --storage: '' is not allowed: a database URL"),
    (["reg_runner.report", "{tmp}", "--storage", "mysql://u:hunter2@h/db"], "argument --storage: 'mysql://u:***@h/db' "
     "is not allowed: a URL whose database driver is installed: mysql needs the Python module MySQLdb"),
    (["reg_runner.data", "frobnicate"], "argument command: invalid choice: 'frobnicate'"),
    (["reg_runner.data", "import"], "the following arguments are required: folder"),
    (["reg_runner.resume"], "the following arguments are required: run_dir"),
    (["reg_runner.resume", "--epochs", "5", "{tmp}"], "unrecognized arguments: --epochs"),
])
def test_a_command_line_mistake_is_one_line(tmp_path, argv, expected):
    """The tools' argparse mistakes (reg_runner.errors.Parser): one line, exit 2, not usage and a message.
    Each tool's first case through its real CLI, its second through its main in this process."""
    words = [a.format(tmp=tmp_path) for a in argv]
    if len(argv) == 1 or argv[:2] == ["reg_runner.data", "frobnicate"]:
        proc = subprocess.run([sys.executable, "-m", *words], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    else:
        proc = in_process(words, tmp_path)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and proc.stdout == "", proc.stderr
    prog = " ".join(argv[:2] if argv[:2] == ["reg_runner.data", "import"] else argv[:1])
    assert proc.stderr.startswith(f"error: {expected}") and proc.stderr.endswith(f"(see python -m {prog} --help)\n")


def test_a_diverged_seed_is_named_not_silently_dropped(study, tmp_path):
    sweep, runs = study
    copy = tmp_path / "sweep"
    shutil.copytree(sweep, copy)
    dropout_seed2 = next(p for p in copy.iterdir() if "experiment=dropout" in p.name and "seed=2" in p.name)
    m = read_metrics(dropout_seed2)
    (dropout_seed2 / "metrics.json").write_text(json.dumps({**m, "status": "diverged"}))
    text = report(copy, "--out", str(tmp_path / "out")).stdout
    line = next(line for line in text.splitlines() if line.startswith("| dropout |"))
    assert "| 2 of 3 (left out: seed 2 diverged) |" in line


@pytest.mark.slow  # a run per kind of damaged record
def test_bad_records_and_bad_out_folders_are_one_line(study, tmp_path):
    sweep, runs = study
    odd = tmp_path / "odd"
    shutil.copytree(runs[0], odd / "a_list")
    (odd / "a_list" / "metrics.json").write_text("[1, 2, 3]")
    (odd / "a_list" / ".hydra" / "overrides.yaml").write_text("{not: a list}")
    shutil.copytree(runs[1], odd / "strings")
    m = read_metrics(odd / "strings")
    (odd / "strings" / "metrics.json").write_text(json.dumps({**m, "best": {"val/acc": "high"}, "seed": "x",
                                                               "test_at_best": {"acc": "0.9"}}))
    (odd / "strings" / "history.csv").write_text("epoch,loss\n1,2\n")  # no curve columns
    rows = {r["run"]: r for r in csv.DictReader(_ok(odd).joinpath("report.csv").open())}
    assert rows["a_list"]["status"] == "unreadable metrics.json"
    assert rows["strings"]["best_val_acc"] == "" and rows["strings"]["test_acc_at_best"] == ""

    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    for out, expected in ((a_file, f"error: --out {a_file} is a file"), (a_file / "sub", "cannot be created")):
        proc = in_process(["reg_runner.report", str(sweep), "--out", str(out)], tmp_path)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and expected in proc.stderr, proc.stderr
    read_only = tmp_path / "read_only"
    read_only.mkdir()
    read_only.chmod(0o555)
    try:
        proc = in_process(["reg_runner.report", str(sweep), "--out", str(read_only)], tmp_path)
        if os.geteuid() != 0:  # root writes anywhere
            assert proc.returncode == 2 and "cannot be written" in proc.stderr and "Traceback" not in proc.stderr
    finally:
        read_only.chmod(0o755)


def test_an_empty_out_is_refused_not_taken_for_the_current_folder(tmp_path):
    proc = in_process(["reg_runner.report", str(tmp_path), "--out", ""], tmp_path)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "--out: '' is not allowed: a folder path (empty would mean the current folder)" in proc.stderr
    assert not any(tmp_path.iterdir())


def _ok(path):
    report(path)
    return path


def test_no_runs_is_one_line(tmp_path):
    proc = in_process(["reg_runner.report", str(tmp_path)], tmp_path)
    assert proc.returncode == 2 and proc.stderr.strip() == f"error: no run folder below {tmp_path} (a run folder holds metrics.json or .hydra/)"


def test_holm_adjusts_by_hand():
    from reg_runner.report.stats import holm

    # sorted 0.01, 0.03, 0.04: times 3, 2, 1 -> 0.03, 0.06, 0.04, kept non-decreasing -> 0.06
    assert holm([0.04, 0.01, 0.03]) == pytest.approx([0.06, 0.03, 0.06])
    assert holm([0.5, 0.6]) == [1.0, 1.0] and holm([0.2]) == [0.2]


def test_sharpness_keeps_its_significant_figures():
    from reg_runner.report.document import markdown, run_row, runs_table
    from reg_runner.report.runs import Run

    run = Run(path=None, name="r", status="completed", sharpness=2.6e-4)
    small = Run(path=None, name="s", status="completed", sharpness=5.4e-6)
    table1 = [run_row(r, [], sharpness=True) for r in (run, small)]
    text = markdown([runs_table([run, small], table1, [], "root")])
    assert "| 0.00026 |" in text and "| 5.4e-06 |" in text and "0.0000 " not in text


@pytest.fixture(scope="module")
def labelled(study, tmp_path_factory):
    """Copies of the study's runs with other tags and statuses, as runs made with tags=[...] record them."""
    import yaml

    sweep, runs = study
    root = tmp_path_factory.mktemp("labelled")
    plan = {"a": (["course", "week1"], "completed"), "b": (["course"], "completed"), "c": ([], "completed"),
            "d": (["course", "week1"], "diverged")}
    for (name, (tags, status)), run in zip(plan.items(), runs[:2] + runs[3:5]):
        shutil.copytree(run, root / name)
        config = yaml.safe_load((root / name / "resolved_config.yaml").read_text())
        (root / name / "resolved_config.yaml").write_text(yaml.safe_dump({**config, "tags": tags}))
        (root / name / "metrics.json").write_text(json.dumps({**read_metrics(run), "status": status, "tags": tags}))
    return root


@pytest.mark.parametrize("where, status, tags, expected", [
    ((), (), ("course",), "abd"),
    ((), (), ("course", "week1"), "ad"),
    ((), ("completed",), ("week1",), "a"),
    ((), ("diverged", "killed"), (), "d"),
    (("reg.l2=0.0",), (), (), "ab"),  # the baseline runs: YAML's 0.0 and the recorded 0.0
    (("reg.l2=1e-4",), (), ("course",), "d"),  # an l2 run: 1e-4 read as the number it is
    (("model.norm=none", "trainer.epochs=4"), ("completed",), (), "abc"),
])
def test_filters_select_the_runs(labelled, where, status, tags, expected):
    from reg_runner.report.runs import find_runs, parse_filters, select

    assert yaml_l2(labelled / "d") == 1e-4  # runs[3:5] are l2's (+experiment=l2 sets reg.l2)
    chosen = select(find_runs(labelled), parse_filters(where, status, tags))
    assert "".join(sorted(r.name for r in chosen)) == expected


def yaml_l2(run):
    import yaml

    return yaml.safe_load((run / "resolved_config.yaml").read_text())["reg"]["l2"]


@pytest.mark.parametrize("args, says", [
    (["--status", "done"], "--status 'done' is not allowed: one of completed, early_stopped, pruned, diverged"),
    (["--where", "model.norm"], "--where 'model.norm' is not allowed: key=value"),
    (["--where", "model.nrom=none"], "no run's resolved config has the key 'model.nrom' (did you mean model.norm?)"),
    (["--tag", "nobody"], "no run below"),
    (["--facet", "model.nrom"], "--facet 'model.nrom' is not allowed: one of the keys the runs vary in (experiment)"),
    (["--facet", "experiment", "--no-plots"], "--facet 'experiment' is not allowed with --no-plots"),
])
def test_a_bad_filter_is_one_line(labelled, tmp_path, args, says):
    words = ["reg_runner.report", str(labelled), "--out", str(tmp_path / "o"), *args]
    if args[0] == "--status":  # the first through the real CLI, the others through its main in this process
        proc = subprocess.run([sys.executable, "-m", *words], capture_output=True, text=True, timeout=120)
    else:
        proc = in_process(words, os.getcwd())
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and says in proc.stderr, proc.stderr
    assert not (tmp_path / "o").exists()


def test_the_report_says_what_it_selected(labelled, tmp_path):
    text = report(labelled, "--out", str(tmp_path), "--tag", "week1", "--status", "completed").stdout
    assert "Selected by --status completed --tag week1: 1 of the 4 runs read." in text
    rows = list(csv.DictReader((tmp_path / "report.csv").open()))
    assert [r["run"] for r in rows] == ["a"]


# A factorial study of 32 groups (5 keys of 2 levels) x 2 seeds, made in this process from one tiny run's records:
# each copy gets its overrides, its resolved config, and a test accuracy with known effects and seed noise.
FACTORS = {"model.activation": ("relu", "tanh"), "model.dropout": ("0.0", "0.2"), "optimizer.lr": ("0.001", "0.003"),
           "reg.l1": ("0.0", "1e-05"), "reg.l2": ("0.0", "0.0001")}  # in the report's order of keys
EFFECTS = (-0.01, 0.02, 0.005, 0.0, 0.01)  # what the second level adds to the test accuracy


def make_factorial(study, root, leave_out=()):
    import itertools
    import random

    import yaml

    from reg_runner import dotted

    source = study[1][0]
    config = yaml.safe_load((source / "resolved_config.yaml").read_text())
    history = list(csv.DictReader((source / "history.csv").open()))
    noise = random.Random(0)
    job = 0
    for levels in itertools.product((0, 1), repeat=len(FACTORS)):
        for seed in (0, 1):
            values = {k: FACTORS[k][i] for k, i in zip(FACTORS, levels)}
            folder = root / (f"{job}_" + ",".join(f"{k}={v}" for k, v in values.items()) + f",seed={seed}")
            job += 1
            if levels in leave_out:
                continue
            shutil.copytree(source, folder, ignore=shutil.ignore_patterns("checkpoints", "events.*"))
            (folder / ".hydra" / "overrides.yaml").write_text(
                "".join(f"- {k}={v}\n" for k, v in [*values.items(), ("seed", seed)]))
            own = json.loads(json.dumps(config))
            for k, v in values.items():
                parent, _, leaf = k.rpartition(".")
                dotted.get(own, parent)[leaf] = v if v.isalpha() else float(v)
            own["seed"] = seed
            (folder / "resolved_config.yaml").write_text(yaml.safe_dump(own))
            acc = 0.9 + sum(e * i for e, i in zip(EFFECTS, levels)) + noise.gauss(0, 0.004)
            if levels[1] and levels[4]:
                acc -= 0.008  # dropout and L2 together: less than their sum
            m = read_metrics(source)
            m.update(seed=seed, best={**m["best"], "val/acc": acc + 0.001},
                     test_at_best={**m["test_at_best"], "acc": acc})
            (folder / "metrics.json").write_text(json.dumps(m))
            with (folder / "history.csv").open("w") as f:
                writer = csv.DictWriter(f, fieldnames=list(history[0]))
                writer.writeheader()
                writer.writerows({**row, "val/acc": float(row["val/acc"]) + acc - 0.9} for row in history)
    return root


@pytest.fixture(scope="module")
def factorial(study, tmp_path_factory):
    return make_factorial(study, tmp_path_factory.mktemp("factorial"))


@pytest.fixture(scope="module")
def factorial_report(factorial, tmp_path_factory):
    """The report, in this process, with the figures it drew kept (matplotlib Figures, after drawing)."""
    import warnings

    import reg_runner.report as module

    out, figures = tmp_path_factory.mktemp("factorial_report"), []

    def keep(fig, dpi):
        figures.append(fig)
        return png(fig, dpi)

    png, module.to_png = module.to_png, keep
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            text = module.report(factorial, out=out, facet="model.activation",
                                 interactions=[("model.dropout", "reg.l2")])
    finally:
        module.to_png = png
    return out, text, figures, caught


def test_a_32_group_factorial_draws_legible_figures(factorial_report):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.text import Text

    out, text, figures, caught = factorial_report
    assert [str(w.message) for w in caught] == []  # no tight-layout note, nor any other a user cannot act on
    names = ["test_acc", "curves", "main_effects", "interaction_model.dropout_reg.l2"]
    assert sorted(p.stem for p in out.glob("*.png")) == sorted(names) and len(figures) == 4
    for name in names:
        with Image.open(out / f"{name}.png") as img:
            img.load()  # decoded, every pixel
            assert img.format == "PNG" and img.size[0] <= 2500, (name, img.size)
            assert len(img.convert("RGB").getcolors(maxcolors=1 << 22)) > 50, name  # drawn, not blank
    for fig in figures:
        canvas = FigureCanvasAgg(fig)
        canvas.draw()  # as saved: the layout done, every text where the PNG has it
        renderer = canvas.get_renderer()
        areas = [ax.get_window_extent(renderer) for ax in fig.axes]
        for ax in fig.axes:
            assert ax.get_legend() is None
            boxes = [Text.get_window_extent(t, renderer) for t in ax.texts]
            for t, box in zip(ax.texts, boxes):  # the names at the lines' ends, and the header: none over any
                assert not any(box.overlaps(area) for area in areas), t.get_text()  # panel's data area
                assert sum(box.overlaps(other) for other in boxes) == 1, t.get_text()  # nor over one another
    dots, curves = figures[0], figures[1]
    labels = [t.get_text() for t in dots.axes[0].get_yticklabels()]
    assert len(labels) == 32 and "tanh · 0.2 · 0.003 · 1e-05 · 0.0001" in labels  # the values, not key=value
    assert [t.get_text() for t in dots.axes[0].texts] == [" · ".join(FACTORS)]  # under a header naming the keys
    assert dots.get_size_inches()[1] > 0.24 * 32  # as tall as its groups need
    # one panel per activation (and metric), each the best 5 of its 16 groups and the baseline, each line named
    assert len(curves.axes) == 4
    for ax in curves.axes:
        assert len(ax.get_lines()) == 6 and len(ax.texts) == 6


def _hand_effects(rows):
    """From report.csv: each factor's effect (mean of its cells at the second level minus at the first), its 95%
    interval from the pooled within-cell variance, and p, Holm-adjusted across the factors."""
    from scipy.stats import t

    cells = {}
    for r in rows:
        cells.setdefault(tuple(r[k] for k in FACTORS), []).append(float(r["test_acc_at_best"]))
    df = sum(map(len, cells.values())) - len(cells)
    s2 = sum((y - statistics.mean(ys)) ** 2 for ys in cells.values() for y in ys) / df
    out = {}
    for i, k in enumerate(FACTORS):
        hi = [statistics.mean(ys) for c, ys in cells.items() if c[i] == FACTORS[k][1]]
        lo = [statistics.mean(ys) for c, ys in cells.items() if c[i] == FACTORS[k][0]]
        se = (s2 * (sum(1 / len(ys) for c, ys in cells.items() if c[i] == FACTORS[k][1]) / len(hi) ** 2
                    + sum(1 / len(ys) for c, ys in cells.items() if c[i] == FACTORS[k][0]) / len(lo) ** 2)) ** 0.5
        d = statistics.mean(hi) - statistics.mean(lo)
        out[k] = [d, d - t.ppf(0.975, df) * se, d + t.ppf(0.975, df) * se, 2 * t.sf(abs(d) / se, df)]
    ranked = sorted(out, key=lambda k: out[k][3])
    running = 0
    for rank, k in enumerate(ranked):
        running = max(running, min(1, (len(ranked) - rank) * out[k][3]))
        out[k][3] = running
    return out


def test_main_effects_are_the_hand_computation_from_report_csv(factorial_report):
    out, text, _, _ = factorial_report
    rows = list(csv.DictReader((out / "report.csv").open()))
    assert len(rows) == 64
    expected = _hand_effects(rows)
    table = {line.split(" | ")[0].strip("| "): line for line in text.splitlines()
             if line.startswith(tuple(f"| {k} | {v[1]} | {v[0]} |" for k, v in FACTORS.items()))}
    assert sorted(table) == sorted(FACTORS)
    for k, (d, lo, hi, p) in expected.items():
        stars = "**" if p < 0.01 else "*" if p < 0.05 else ""
        assert table[k].endswith(f"| {d:+.4f} | [{lo:+.4f}, {hi:+.4f}] | {p:.3g}{stars} |"), (table[k], d, lo, hi, p)
    # the effects put in are found: dropout +0.02 less half the interaction, activation -0.01, l1 nothing
    assert expected["model.dropout"][1] < 0.02 - 0.004 < expected["model.dropout"][2]
    assert expected["model.activation"][2] < 0 and expected["reg.l1"][1] < 0 < expected["reg.l1"][2]
    assert "Factorial design: model.activation (2) × model.dropout (2) × optimizer.lr (2)" in text
    line = next(line for line in text.splitlines() if line.startswith("| model.dropout × reg.l2 |"))
    assert float(line.split(" | ")[1]) == pytest.approx(-0.008, abs=0.006)


def test_report_html_holds_every_run_and_opens_from_the_disk(factorial, factorial_report):
    from html.parser import HTMLParser
    from urllib.parse import unquote

    out = factorial_report[0]

    class Tables(HTMLParser):
        def __init__(self):
            super().__init__()
            self.tables, self.images, self.links, self.scripts = [], [], [], 0

        def handle_starttag(self, tag, attrs):
            attrs = dict(attrs)
            if tag == "table":
                self.tables.append([])
            elif tag == "tr":
                self.tables[-1].append([])
            elif tag == "td":
                self.tables[-1][-1].append("")
            elif tag == "img":
                self.images.append(attrs["src"])
            elif tag == "a" and not attrs["href"].startswith("#"):  # the sections' own links aside
                self.links.append(attrs["href"])
            elif tag == "script":
                self.scripts += 1

        def handle_data(self, data):
            if self.tables and self.tables[-1] and self.tables[-1][-1]:
                self.tables[-1][-1][-1] += data

    page = Tables()
    page.feed((out / "report.html").read_text())
    runs, groups = (t[1:] for t in page.tables[:2])  # the header row has th cells only
    csv_rows = list(csv.DictReader((out / "report.csv").open()))
    assert len(runs) == len(csv_rows) == 64 and len(groups) == 32
    assert [r[0] for r in runs] == [f"{r['run'].split('_')[0]} · seed {r['seed']}" for r in csv_rows]
    assert [float(r[8]) for r in runs] == pytest.approx([float(r["test_acc_at_best"]) for r in csv_rows], abs=5e-5)
    assert len(page.links) == 64 and all((out / unquote(href)).resolve() == (factorial / r["run"]).resolve()
                                         for href, r in zip(page.links, csv_rows))
    assert len(page.images) == 4 and all(src.startswith("data:image/png;base64,") for src in page.images)
    assert page.scripts == 1 and not any("://" in href for href in page.links)  # nothing from a server


def test_a_design_that_is_not_factorial_says_so_in_one_line(study, tmp_path):
    root = make_factorial(study, tmp_path / "runs", leave_out=[(1, 1, 0, 0, 1)])
    text = report(root, "--out", str(tmp_path / "out")).stdout
    said = [line for line in text.splitlines() if "factorial" in line]
    assert said == ["Not a factorial design: 31 of the 32 combinations of model.activation (2) × model.dropout (2) "
                    "× optimizer.lr (2) × reg.l1 (2) × reg.l2 (2) have a run trained to the end (none for "
                    "model.activation=tanh,model.dropout=0.2,optimizer.lr=0.001,reg.l1=0.0,reg.l2=0.0001); no main "
                    "effects, the groups are compared as they are."]
    assert "Main effects" not in text and not (tmp_path / "out" / "main_effects.png").exists()
    assert (tmp_path / "out" / "test_acc.png").exists()
    proc = in_process(["reg_runner.report", str(root), "--out", str(tmp_path / "o2"), "--interaction", "reg.l2",
                       "model.dropout"], os.getcwd())
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "--interaction reg.l2 model.dropout is not allowed: the runs are not a factorial design" in proc.stderr
    assert not (tmp_path / "o2").exists()
