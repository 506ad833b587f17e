"""The report over run folders made by the real CLI: both tables against the runs' own records."""

import csv
import json
import os
import shutil
import statistics
import subprocess
import sys

import pytest
from conftest import read_metrics
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
    proc = subprocess.run([sys.executable, "-m", "reg_runner.report", str(path), *args], capture_output=True,
                          text=True, timeout=120)
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
    assert "| 90_broken |" in proc.stdout and "notes" not in proc.stdout


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
        line = next(line for line in text.splitlines() if line.startswith(("| experiment=" + name, "| **experiment=" + name)))
        # the baseline group also holds the unreadable and the unfinished copies; l2 the early-stopped folder
        n = {"baseline": "3 of 5 (left out: seed 0 unreadable metrics.json, seed 1 killed)",
             "l2": "3 of 4 (left out: seed 7 no metrics.json", "dropout": "3 |"}[name]
        assert f"| {n}" in line
        assert f"{statistics.mean(val):.4f} ± {statistics.stdev(val):.4f}" in line
        assert f"{statistics.mean(test):.4f} ± {statistics.stdev(test):.4f}" in line
        if name == "baseline":
            assert "(baseline)" in line
        else:
            assert f"{statistics.mean(test) - statistics.mean(base_test):.4f}" in line
            p = ttest_ind(test, base_test, equal_var=False).pvalue
            assert f"{p:.3g}" in line


def test_pngs_are_valid_images(study, tmp_path):
    report(study[0], "--out", str(tmp_path))
    for name in ("curves.png", "test_acc.png"):
        with Image.open(tmp_path / name) as img:
            img.verify()
            assert img.format == "PNG" and img.size[0] > 400
    assert "![curves](curves.png)" in (tmp_path / "report.md").read_text()


def test_a_single_run_folder_and_a_baseline_choice(study, tmp_path):
    sweep, runs = study
    text = report(runs[3], "--out", str(tmp_path / "one")).stdout
    assert "1 runs, 1 finished" in text
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


@pytest.mark.parametrize("argv, expected", [
    (["reg_runner.report"], "the following arguments are required: path"),
    (["reg_runner.report", "{tmp}", "--nope"], "unrecognized arguments: --nope"),
    (["reg_runner.data", "frobnicate"], "argument command: invalid choice: 'frobnicate'"),
    (["reg_runner.data", "import"], "the following arguments are required: folder"),
    (["reg_runner.resume"], "the following arguments are required: run_dir"),
    (["reg_runner.resume", "--epochs", "5", "{tmp}"], "unrecognized arguments: --epochs"),
])
def test_a_command_line_mistake_is_one_line(tmp_path, argv, expected):
    """The tools' argparse mistakes (reg_runner.errors.Parser): one line, exit 2, not usage and a message."""
    proc = subprocess.run([sys.executable, "-m", *(a.format(tmp=tmp_path) for a in argv)], capture_output=True,
                          text=True, timeout=120, cwd=tmp_path)
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
    line = next(line for line in text.splitlines() if line.startswith("| experiment=dropout"))
    assert "| 2 of 3 (left out: seed 2 diverged) |" in line


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
        proc = subprocess.run([sys.executable, "-m", "reg_runner.report", str(sweep), "--out", str(out)],
                              capture_output=True, text=True)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and expected in proc.stderr, proc.stderr
    read_only = tmp_path / "read_only"
    read_only.mkdir()
    read_only.chmod(0o555)
    try:
        proc = subprocess.run([sys.executable, "-m", "reg_runner.report", str(sweep), "--out", str(read_only)],
                              capture_output=True, text=True)
        if os.geteuid() != 0:  # root writes anywhere
            assert proc.returncode == 2 and "cannot be written" in proc.stderr and "Traceback" not in proc.stderr
    finally:
        read_only.chmod(0o755)


def test_an_empty_out_is_refused_not_taken_for_the_current_folder(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "reg_runner.report", str(tmp_path), "--out", ""], capture_output=True,
                          text=True, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "--out: '' is not allowed: a folder path (empty would mean the current folder)" in proc.stderr
    assert not any(tmp_path.iterdir())


def _ok(path):
    report(path)
    return path


def test_no_runs_is_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "reg_runner.report", str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.strip() == f"error: no run folder below {tmp_path} (a run folder holds metrics.json or .hydra/)"
