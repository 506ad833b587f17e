"""Every tool knows what a folder is: a run, a learning-rate range test, a landscape's output, a sweep.

Each command marks the folder it makes; report, resume and landscape refuse a folder of a kind they do
not read in one line, exit 2, and leave it as it was. The refusals run in this process; each tool's real
CLI once."""

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CLI, call_in_process

from reg_runner import kinds, landscape


@pytest.fixture(scope="module")
def folders(tmp_path_factory, tiny_data) -> dict:
    cli = CLI(tmp_path_factory.mktemp("kinds"), tiny_data)
    run = cli("trainer.epochs=2", "logging.tensorboard=false").run_dir
    out = cli.tmp_path / "landscape_out"
    # through its main in this process (the real command draws in test_landscape.py)
    made = call_in_process(landscape.main, ["python -m reg_runner.landscape", str(run), "--grid", "3", "--dims", "1",
                                            "--out", str(out)], cli.tmp_path, cli.env)
    assert made.returncode == 0, made.stderr[-3000:]
    return dict(cli=cli, run=run, landscape=out,
                lr_find=cli("lr_find.steps=20", module="reg_runner.lr_find").run_dir,
                sweep=cli("--multirun", "seed=0,1", "trainer.epochs=1", "logging.tensorboard=false").run_dir)


def snapshot(folder: Path) -> dict:
    return {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def test_each_command_marks_its_folder_and_older_folders_are_told_by_their_files(folders, tmp_path):
    import shutil

    for kind in (kinds.RUN, kinds.LR_FIND, kinds.LANDSCAPE, kinds.SWEEP):
        assert kinds.marker(folders[kind]) == {"kind": kind}
        old = tmp_path / kind  # as a folder made before the marker existed
        shutil.copytree(folders[kind], old, ignore=shutil.ignore_patterns(kinds.MARKER))
        assert kinds.kind_of(old) == kind
    for job in (p for p in folders["sweep"].iterdir() if p.is_dir()):
        assert kinds.marker(job) == {"kind": kinds.RUN}


def _refusal(capsys, main, argv) -> str:
    with pytest.raises(SystemExit) as ended:
        main(argv)
    err = capsys.readouterr().err
    assert ended.value.code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err.strip()


WRONG = [("report", kind) for kind in (kinds.LR_FIND, kinds.LANDSCAPE)] + \
        [(tool, kind) for tool in ("resume", "landscape") for kind in (kinds.LR_FIND, kinds.LANDSCAPE, kinds.SWEEP)]


@pytest.mark.parametrize("tool, kind", WRONG, ids=[f"{t}-{k}" for t, k in WRONG])
def test_a_folder_of_another_kind_is_named_in_one_line_and_left_as_it_was(folders, capsys, tool, kind):
    import importlib

    folder = folders[kind]
    before = snapshot(folder)
    line = _refusal(capsys, importlib.import_module(f"reg_runner.{tool}").main, [str(folder)])
    assert line.startswith(f"error: {folder} is {kinds.WHAT[kind]}, not ") and "run" in line.split(", not ")[1]
    assert snapshot(folder) == before


@pytest.mark.parametrize("tool, kind", [("report", kinds.LR_FIND), ("resume", kinds.SWEEP),
                                        ("landscape", kinds.LANDSCAPE)])
def test_the_real_cli_refuses_a_folder_of_another_kind(folders, tool, kind):
    folder, cli = folders[kind], folders["cli"]
    before = snapshot(folder)
    proc = subprocess.run([sys.executable, "-m", f"reg_runner.{tool}", str(folder)], cwd=cli.tmp_path, env=cli.env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [proc.stderr.strip()], proc.stderr
    assert proc.stderr.startswith(f"error: {folder} is {kinds.WHAT[kind]}") and "Traceback" not in proc.stderr
    assert snapshot(folder) == before


def test_a_run_into_a_folder_of_another_kind_is_refused(folders, capsys):
    cli = folders["cli"]
    for kind, key in ((kinds.LR_FIND, "hydra.run.dir"), (kinds.LANDSCAPE, "hydra.run.dir")):
        before = snapshot(folders[kind])
        # through the command's entry point in this process (the real CLI's refusals of a folder of another kind:
        # test_the_real_cli_refuses_a_folder_of_another_kind)
        proc = cli("trainer.epochs=1", run_dir=folders[kind], check=False)
        assert proc.returncode == 2 and f"is {kinds.WHAT[kind]}; choose another {key}" in proc.stderr, proc.stderr
        assert snapshot(folders[kind]) == before
    before = snapshot(folders["run"])
    proc = cli("--multirun", "seed=0,1", run_dir=folders["run"], check=False)
    assert proc.returncode == 2 and f"is {kinds.WHAT[kinds.RUN]}; choose another hydra.sweep.dir" in proc.stderr
    assert snapshot(folders["run"]) == before


def test_landscape_refuses_a_run_a_live_process_trains(folders, capsys):
    """The run's lock, held by another process: its checkpoints are still changing, its folder is that process's."""
    from reg_runner import landscape

    run = folders["run"]
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR); "
                               "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)",
                               str(run / ".lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = snapshot(run)
        line = _refusal(capsys, landscape.main, [str(run), "--grid", "3"])
        assert line.startswith(f"error: {run} is being trained right now") and snapshot(run) == before
    finally:
        holder.kill()
        holder.wait()


def test_report_reads_runs_and_passes_over_the_other_kinds_below_it(folders, tmp_path):
    from reg_runner.report.runs import find_runs

    root = folders["cli"].tmp_path
    found = {r.path for r in find_runs(root)}
    assert folders["run"] in found and {p for p in folders["sweep"].iterdir() if p.is_dir()} <= found
    assert not any(folders[kind] in path.parents or path == folders[kind] for path in found
                   for kind in (kinds.LR_FIND, kinds.LANDSCAPE))
