"""The benchmark scripts keep working (tiny mode; their timings are not part of the tests)."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT, TINY


@pytest.mark.slow  # the benchmark's runs, each in its own process
def test_compare_runs_variants_and_prints_ratios(tiny_data, tmp_path):
    extra = " ".join([f"data.root={tiny_data}", "data.verify=false", *TINY[:2]])
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "compare.py"), "--epochs", "2", "--repeats", "1", "--extra", extra,
         "augmentation=none", "augmentation=noise_affine"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = {line.split()[0]: line.split() for line in proc.stdout.splitlines() if line.startswith("augmentation=")}
    assert rows["augmentation=none"][2] == "1.000" and float(rows["augmentation=noise_affine"][2]) > 0


@pytest.mark.slow  # every loop of the benchmark, each in its own process: minutes
def test_bench_times_every_implementation_on_the_same_work(tiny_data, tmp_path, monkeypatch):
    """Every row's figures, each row's run in its own process (bench.py itself through its main, in this process:
    its real command runs in test_bench_with_a_missing_data_folder_says_so_in_one_line)."""
    out = tmp_path / "bench.json"
    env = {**os.environ, "DATAMAESTRO_DIR": str(tmp_path / "datamaestro")}
    proc = _script(monkeypatch, "bench", ["--tiny", "--data-root", str(tiny_data), "--no-verify", "--json", str(out),
                                          "--epochs", "3"], tmp_path, env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert (result["epochs"], result["repeats"]) == (3, 1)  # --tiny's epochs give way to the ones given
    rows = result["rows"]
    measured = {"runner", "runner, no histograms", "lean", "typical"}
    if importlib.util.find_spec("lightning"):
        measured.add("lightning")
    assert measured <= rows.keys() and "compute floor (fp32)" in rows
    for name in measured:
        r = rows[name]
        # every figure is there; how the figures compare depends on the machine's load, and is not tested
        assert all(r[k] > 0 for k in ("epoch_s", "process_s", "first_step_s")), name
        # the estimate of a 1000-epoch run: this process's fixed costs and 1000 epochs (one repeat: no median)
        assert r["est_1000_s"] == pytest.approx(r["process_s"] + 997 * r["epoch_s"], rel=1e-9), name
        assert r["peak_mb"] > 50 and 0 <= r["val_acc"] <= 1, name
        assert 3 * r["epoch_s"] < r["process_s"], name  # the epochs are a part of the process
        if name.startswith("runner"):  # its first step: its loop's start (metrics.json): start-up, then the epochs
            assert r["first_step_s"] + 3 * r["epoch_s"] < r["process_s"], name
        assert any(line.startswith(name) for line in proc.stdout.splitlines()), name
    assert rows["compute floor (fp32)"]["epoch_s"] > 0
    assert {c["ratio"] for c in result["checks"]} >= {"runner / lean", "typical / runner"}
    if "lightning" in measured:
        # Lightning fits the typical loop's model on the typical loop's loaders: the same training
        assert rows["lightning"]["val_acc"] == pytest.approx(rows["typical"]["val_acc"], abs=1e-4)
    # many runs in one process: one by one, and as stacks; the same seeds learn the same, stacked or not
    stacked = result["stacked"]
    assert set(stacked) == {"2 lone runs", "stacked 2"}
    assert all(r["model_epochs_per_s"] > 0 and r["peak_mb"] > 50 for r in stacked.values())
    assert stacked["stacked 2"]["val_acc"] == stacked["2 lone runs"]["val_acc"]
    assert "stacked 2 / 2 lone runs (process)" in {c["ratio"] for c in result["checks"]}
    if result["bf16_change"] is not None:
        assert result["bf16_change"]["same_training"] and result["bf16_change"]["val_acc_max_abs"] < 0.05


def test_bench_with_a_missing_data_folder_says_so_in_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench.py"), "--tiny", "--data-root", str(tmp_path / "nowhere")],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr
    assert lines[0].startswith(f"error: argument --data-root: {tmp_path / 'nowhere'} is not a folder"), lines


@pytest.mark.parametrize("args, expected", [
    (["--device", "tpu"], "argument --device: 'tpu' is not allowed: one of auto, cpu, cuda, cuda:N, mps"),
    (["--device", "cuda:99"], "argument --device: 'cuda:99' is not allowed: "),  # no CUDA, or not that many GPUs
    (["--stacks", "abc"], "argument --stacks: 'abc' is not allowed: comma-separated integers >= 1"),
    (["--stacks", "-2"], "argument --stacks: '-2' is not allowed: "),  # not a silent "none"
    (["--json", "{a_file}/bench.json"], "argument --json: '{a_file}/bench.json' cannot be written: "),
    (["--epochs", "0"], "argument --epochs: '0' is not allowed: an integer >= 1"),
    (["--epochs", "-3"], "argument --epochs: '-3' is not allowed: an integer >= 1"),
    (["--repeats", "0"], "argument --repeats: '0' is not allowed: an integer >= 1"),
    (["--stacked-epochs", "0"], "argument --stacked-epochs: '0' is not allowed: an integer >= 1"),
    (["--train-fraction", "0"], "argument --train-fraction: '0' is not allowed: a number in (0, 1)"),
    (["--train-fraction", "1.5"], "argument --train-fraction: '1.5' is not allowed: a number in (0, 1)"),
    (["--val-size", "0"], "argument --val-size: '0' is not allowed: an integer >= 1"),
    (["--val-size", "1000"], "argument --val-size: '1000' is not allowed: at most 200"),  # of the tiny data's 500
    (["--full"], "--full and --tiny cannot be combined"),
    (["--nope"], "unrecognized arguments: --nope"),
])
def test_bench_refuses_a_bad_argument_in_one_line_before_any_work(tiny_data, tmp_path, monkeypatch, capsys, args,
                                                                  expected):
    """Exit 2 and one line naming the argument, its value and what is allowed, before the first timing
    (nothing printed on stdout, no temporary folder made), never a traceback minutes into the run (in this
    process: the real command's one line is checked above)."""
    import tempfile

    bench = _benchmark("bench")
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    monkeypatch.setenv("DATAMAESTRO_DIR", str(tmp_path / "datamaestro"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["bench.py", "--tiny", "--data-root", str(tiny_data), "--no-verify",
                                      *(a.format(a_file=a_file) for a in args)])
    with pytest.raises(SystemExit) as exit_:
        bench.main()
    out, err = capsys.readouterr()
    assert exit_.value.code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("error: " + expected.format(a_file=a_file)), err
    assert out == "" and not any((tmp_path / "tmp").iterdir())


SECTIONS = ("precision", "options", "stack vs lone", "kill and resume", "lr_find and landscape", "K stacked",
            "reference run", "study")


@pytest.mark.slow  # every section of the check, its runs in their own processes
def test_the_device_check_runs_every_section_at_tiny_sizes(tiny_data, tmp_path):
    """``--dry-run``: every section of the GPU's one command, on the CPU at tiny sizes (its figures are not the
    point: that the script runs, and what its JSON holds)."""
    out = tmp_path / "device_check.json"
    env = {**os.environ, "DATAMAESTRO_DIR": str(tmp_path / "datamaestro")}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "device_check.py"), "--dry-run", "--data-root", str(tiny_data),
         "--no-verify", "--json", str(out)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    sections = result["sections"]
    assert result["dry_run"] and result["machine"]["device"] == "cpu" and result["elapsed_s"] > 0
    assert {name: sections[name]["status"] for name in SECTIONS} == dict.fromkeys(SECTIONS, "ok"), \
        {name: sections[name].get("error") for name in SECTIONS}
    rows = result["rows"]
    # a short run of every option: each norm of both families, each augmentation, optimizer and schedule preset
    options = {r["item"]: r["status"] for r in rows if r["section"] == "options"}
    expected = {f"{group}={p.stem}" for group in ("optimizer", "scheduler")
                for p in (ROOT / "conf" / group).glob("*.yaml")}
    expected |= {f"model.norm={n}" for n in ("none", "batchnorm", "layernorm", "rmsnorm")}
    expected |= {f"model=cnn model.norm={n}" for n in ("none", "batchnorm", "layernorm", "groupnorm")}
    expected |= {f"augmentation={a}" for a in ("noise", "affine", "noise_affine", "crop")}
    expected |= {"model.dropout=0.2", "model.residual=true"}
    assert expected <= options.keys() and {options[name] for name in expected} == {"ok"}
    # on the CPU a stacked member is its lone run to the bit, and a killed run resumes to the uninterrupted one
    compared = [r for r in rows if r["section"] == "stack vs lone" and r["item"].startswith("seed=")]
    assert len(compared) == 4 and {r["status"] for r in compared} == {"bitwise"}  # 3 members, the first again alone
    assert sections["stack vs lone"]["probe"] is None and sections["stack vs lone"]["again"]["bitwise"]
    assert [r["status"] for r in rows if r["section"] == "kill and resume" and r["item"].startswith("killed")] == [
        "identical"]
    speed = sections["K stacked"]["rows"]
    assert [r["k"] for r in speed] == [1, 2] and all(r["model_epochs_per_s"] > 0 for r in speed)
    assert speed[1]["over_k1"] == pytest.approx(speed[1]["model_epochs_per_s"] / speed[0]["model_epochs_per_s"])
    assert speed[0]["utilization_percent"] is None and speed[0]["utilization_note"]  # null, and why
    assert sections["reference run"]["epochs_run"] == 2 and sections["reference run"]["total_s"] > 0
    assert sections["study"]["main"]["runs"] == 6 and sections["study"]["how"] == "measured"
    for name in SECTIONS:  # the table
        assert any(line.startswith(name) for line in proc.stdout.splitlines()), name


def test_the_device_check_skips_what_its_budget_cannot_hold(tiny_data, tmp_path, monkeypatch, capsys):
    """With less time than any section needs, every section is skipped, saying why, and the JSON is written (a
    budget below the reserve kept for the report: the outcome does not depend on how busy the machine is)."""
    device_check = _device_check()
    monkeypatch.setenv("DATAMAESTRO_DIR", str(tmp_path / "datamaestro"))
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "device_check.json"
    budget = device_check.RESERVE_S / 2
    device_check.main(["--dry-run", "--data-root", str(tiny_data), "--no-verify", "--budget-s", str(budget), "--json",
                       str(out)])
    result = json.loads(out.read_text())
    assert {name: result["sections"][name]["status"] for name in SECTIONS} == dict.fromkeys(SECTIONS, "skipped")
    assert all(result["sections"][name]["reason"] for name in SECTIONS)  # every skip says why
    assert result["rows"] and all(row["status"] == "skipped" and row["result"] for row in result["rows"])
    assert "target:" in capsys.readouterr().out


@pytest.mark.parametrize("args, expected", [
    (["--budget-s", "0"], "argument --budget-s: '0' is not allowed: a number in (0, 86400] seconds"),
    (["--budget-s", "soon"], "argument --budget-s: 'soon' is not allowed: a number in (0, 86400] seconds"),
    (["--device", "tpu"], "argument --device: 'tpu' is not allowed: one of auto, cuda, cuda:N, cpu, mps"),
    (["--device", "cuda:99"], "argument --device: 'cuda:99' is not allowed: "),  # no CUDA, or not that many GPUs
    (["--json", "{a_file}/check.json"], "argument --json: '{a_file}/check.json' cannot be written: "),
    (["--json", "{tmp}"], "argument --json: '{tmp}' is a folder; give a file path"),
    (["--data-root", "{tmp}/nowhere"], "argument --data-root: {tmp}/nowhere is not a folder"),
    (["--nope"], "unrecognized arguments: --nope"),
])
def test_the_device_check_refuses_a_bad_argument_in_one_line_before_any_work(tiny_data, tmp_path, monkeypatch, capsys,
                                                                          args, expected):
    """Exit 2 and one line naming the argument, its value and what is allowed, before any run (nothing on stdout,
    no work folder, no JSON)."""
    import tempfile

    device_check = _device_check()
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    monkeypatch.chdir(tmp_path)
    given = [a.format(a_file=a_file, tmp=tmp_path) for a in args]
    data = ["--no-verify"] if "--data-root" in args else ["--data-root", str(tiny_data), "--no-verify"]
    with pytest.raises(SystemExit) as exit_:
        device_check.main(["--dry-run", *data, *given])
    out, err = capsys.readouterr()
    assert exit_.value.code == 2 and err.count("\n") == 1 and err.startswith(
        "error: " + expected.format(a_file=a_file, tmp=tmp_path)), err
    assert out == "" and not any((tmp_path / "tmp").iterdir()) and not (tmp_path / "device_check.json").exists()


def _benchmark(name: str):
    """benchmarks/<name>.py as a module."""
    if str(ROOT / "benchmarks") not in sys.path:
        sys.path.insert(0, str(ROOT / "benchmarks"))
    return importlib.import_module(name)


def _script(monkeypatch, name: str, argv: list[str], cwd, env: dict):
    """``python benchmarks/<name>.py *argv`` through the script's main in this process (conftest's call_in_process:
    sys.argv, the environment, the folder and the output as the command has them, what it changes put back, and
    sys.path and torch's random state here); its ``sys.exit("...")`` message on its stderr, as Python prints it."""
    import torch
    from conftest import call_in_process

    monkeypatch.setattr(sys, "path", list(sys.path))  # a script puts its folder first
    main = _benchmark(name).main

    def command():
        try:
            main()
        except SystemExit as e:
            if isinstance(e.code, str):
                print(e.code, file=sys.stderr)
            raise

    with torch.random.fork_rng(devices=[]):  # what a script draws or seeds (bench's matmuls, vmap_form's members)
        return call_in_process(command, [str(ROOT / "benchmarks" / f"{name}.py"), *argv], cwd, env)


def _device_check():
    """benchmarks/device_check.py as a module (its main takes the command line as a list)."""
    return _benchmark("device_check")


@pytest.mark.parametrize("budget_s", [100.0, 10_000.0])
def test_the_study_is_measured_whole_or_extrapolated_from_a_probe_and_a_longer_run(monkeypatch, tmp_path, budget_s):
    """The study's plan on a GPU, with its processes stood in for by runs whose epochs cost a + b E (start-up f):
    a probe of 10 epochs, then as many as the time left allows; all 1000 measured if they fit, else the 1000
    extrapolated from the two runs with the start-up counted once."""
    from types import SimpleNamespace

    device_check = _device_check()
    f, a, b = 10.0, 2.0, 0.5
    launched = []

    def run_study(ctx, epochs, name, limit):
        launched.append(epochs)
        loop = a + b * epochs
        return dict(epochs=epochs, process_s=f + loop, loop_s=loop, fixed_s=f, stacks=[5, 5, 20], runs=30,
                    peak_rss_mb=0.0)

    monkeypatch.setattr(device_check, "run_study", run_study)
    report = device_check.Report(sys.stdout)
    ctx = device_check.Context(SimpleNamespace(dry_run=False), device_check.FULL, device_check.torch.device("cpu"),
                               [], tmp_path, report, device_check.Budget(budget_s))
    device_check.study(ctx, ctx.budget.limit(None))
    result = report.sections["study"]
    assert launched[0] == device_check.FULL["study_probe_epochs"] and len(launched) == 2
    if launched[1] == device_check.FULL["study_epochs"]:
        assert budget_s > f + a + b * 1000 and result["how"] == "measured"
    else:
        assert 2 * launched[0] <= launched[1] < 1000 and result["how"].startswith("extrapolated linearly")
    assert result["seconds"] == pytest.approx(f + a + b * 1000)


def test_the_refusal_benchmark_runs_each_kind_of_mistake_and_prints_its_table(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "refusal.py"), "--rounds", "1"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    header, *lines = proc.stdout.splitlines()
    assert header.split() == ["command", "median", "s", "x", "import", "hydra"]
    # the table: a row per command, each with its median and its ratio (the figures themselves are not tested:
    # they depend on how busy the machine is)
    rows = {line.rsplit(None, 2)[0]: [float(x) for x in line.split()[-2:]] for line in lines}
    assert sorted(rows) == sorted(["import hydra", *(f"refuse {o}" for o in (
        "model.dropout=2", "model.dropuot=0.5", "model=resnet", "reg.l2=[1,2"))])
    assert all(median > 0 and ratio > 0 for median, ratio in rows.values())
    assert not list(tmp_path.iterdir())  # no folder: each was refused before one was made


@pytest.mark.slow  # 3 multiruns, each in its own process
def test_the_stacking_benchmark_runs_every_row_and_prints_its_table(tiny_data, tmp_path, monkeypatch):
    """Every launcher's row, for a user's own ``nn.Module`` (the generic stacked form); a built-in family's rows are
    the same commands with ``model=mlp`` or ``model=cnn`` in place of the ``_target_`` (their stacks are
    tests/test_stacked.py's and tests/test_cnn.py's). Each row's multirun is a process of its own, as the script
    measures it; the script itself runs through its main in this process."""
    proc = _script(monkeypatch, "stacking", ["--quick", "--data-root", str(tiny_data), "--no-verify", "--json",
                                             str(tmp_path / "rows.json"), "--families", "generic"], tmp_path,
                   {**os.environ, "DATAMAESTRO_DIR": str(tmp_path / "datamaestro")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    header = lines.index(next(line for line in lines if line.startswith("family")))
    assert lines[header].split() == ["family", "K", "launcher", "wall", "s", "train", "s", "x", "wall", "x", "train",
                                     "stacked"]
    rows = [line.split() for line in lines[header + 1:]]
    # a row per family and launcher, each with its figures (the figures themselves are not tested: they depend on
    # how busy the machine is)
    assert [(r[0], " ".join(r[2:-7])) for r in rows] == [
        ("generic", v) for v in ("basic", "stacked cold", "stacked remembered")]
    assert all(r[1] == "2" and r[-2:] in (["of", "2"],) and float(r[-6]) > 0 for r in rows), rows
    recorded = json.loads((tmp_path / "rows.json").read_text())["rows"]
    assert len(recorded) == 3 and all(r["stacked"] in (0, 2) for r in recorded)


def test_the_vmap_form_check_prints_a_row_per_network(tmp_path, monkeypatch):
    """Whether torch.func's vectorized form gives the members their lone numbers depends on the machine's kernels:
    the row says exact or what differs first, never asserted here (the script through its main, in this process:
    it starts none)."""
    proc = _script(monkeypatch, "vmap_form", ["--quick"], tmp_path, dict(os.environ))
    assert proc.returncode == 0, proc.stderr[-2000:]
    header, *rows = proc.stdout.splitlines()
    assert header.split()[:3] == ["network", "K", "batch"] and header.endswith("on cpu")
    assert [row[:24].strip() for row in rows] == ["three linear", "two convs + BatchNorm"]
    for row in rows:
        verdict = row[34:].strip()
        assert verdict == "exact" or verdict.startswith(("outputs of member", "the gradient of", "the buffer")), row


def test_every_mutation_finds_its_line_once_and_names_tests_that_exist():
    """``benchmarks/mutations.py`` plants each bug by replacing a line's text: when the code moves, the text must
    follow it (a mutation whose line is gone cannot be applied), and the tests it names must still exist."""
    import ast

    mutations = _benchmark("mutations")
    defined = {path: {node.name for node in ast.walk(ast.parse(path.read_text()))
                      if isinstance(node, (ast.FunctionDef, ast.ClassDef))}
               for path in (ROOT / "tests").glob("test_*.py")}
    for name, path, old, new, tests, _heavy in mutations.MUTATIONS:
        assert (ROOT / path).read_text().count(old) == 1 and old != new, (name, path)
        for test in tests:
            file, _, function = test.partition("::")
            assert function.split("[")[0] in defined[ROOT / file], (name, test)
