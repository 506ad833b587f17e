"""A job's config is checked once: the check made before Hydra makes a folder (the CLI's callback, a sweeper, the
stacked launcher) travels with the job to the code that trains it, which never repeats a stage of it."""

from collections import Counter

import pytest

from conftest import tiny
from reg_runner import checks
from reg_runner import config as config_lib
from reg_runner.errors import CONFIG_DIR

STAGES = {1: "parse", 2: "rules", 3: "against_data", 4: "against_machine"}


@pytest.fixture
def stages(monkeypatch) -> dict[int, Counter]:
    """How many times each stage of ``checks.check`` ran, per config (by its seed: each job's differs)."""
    calls = {stage: Counter() for stage in STAGES}

    def counted(stage, real):
        def wrapper(*args, **kwargs):
            out = real(*args, **kwargs)
            if stage == 1:
                if args[0] is config_lib.RunConfig:
                    calls[1][out.seed] += 1
            else:
                calls[stage][args[0].seed] += 1
            return out
        return wrapper

    for stage, name in STAGES.items():
        monkeypatch.setattr(checks, name, counted(stage, getattr(checks, name)))
    return calls


def test_a_single_run_is_checked_once(cli, stages):
    proc = cli("seed=3", "trainer.epochs=1", check=False, in_process=True)
    assert proc.returncode == 0, proc.stderr
    assert {stage: dict(counts) for stage, counts in stages.items()} == {1: {3: 1}, 2: {3: 1}, 3: {3: 1}, 4: {3: 1}}


@pytest.mark.parametrize("launcher", [[], ["hydra/launcher=stacked"]], ids=["basic", "stacked"])
def test_a_multiruns_jobs_are_each_checked_once(cli, stages, launcher):
    """The sweep's shared config (seed 0) once, through stage 1 (the callback's); each job (seeds 1 and 2) once,
    by the sweeper; the machine stage once for both, as they differ in nothing it reads."""
    proc = cli("--multirun", "seed=1,2", "trainer.epochs=1", *launcher, check=False, in_process=True)
    assert proc.returncode == 0, proc.stderr
    assert dict(stages[1]) == {0: 1, 1: 1, 2: 1}
    assert dict(stages[2]) == dict(stages[3]) == {1: 1, 2: 1}
    assert dict(stages[4]) == {1: 1}


def composed(data, *overrides):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR):
        return compose("config", overrides=tiny(f"data.root={data}", *overrides))


def test_carry_on_runs_only_the_stages_not_passed(tiny_data, stages):
    cfg = composed(tiny_data, "seed=5")
    checked = checks.check(cfg, through=3)
    assert checked.stage == 3 and not stages[4]
    done = checks.carry_on(checked)
    assert done.stage == 4 and done.cfg is checked.cfg and stages[4][5] == 1
    assert checks.carry_on(done) is done and stages[4][5] == 1
    assert checks.carry_on(checked, through=3) is checked
    passed = set()  # a sweep's jobs equal in all that the machine stage reads: checked against it once
    other = checks.check(composed(tiny_data, "seed=6"), through=3)
    assert checks.carry_on(checked, passed=passed).stage == checks.carry_on(other, passed=passed).stage == 4
    assert dict(stages[4]) == {5: 2}
    assert dict(stages[2]) == dict(stages[3]) == {5: 1, 6: 1}


def test_a_check_is_taken_over_once_by_the_job_of_its_folder(tiny_data, tmp_path):
    from reg_runner.cli import Task

    task = Task()
    checked = checks.check(composed(tiny_data, "seed=5"), ["seed=5"], through=3)
    task.expect(tmp_path / "a" / ".." / "run", checked, "locked folder")
    assert task.take(tmp_path / "other") == (None, None)  # another job's folder
    assert task.take(tmp_path / "run") == (checked, "locked folder")
    assert task.take(tmp_path / "run") == (None, None)  # taken: the next is checked again
    assert Task().take(tmp_path / "run") == (None, None)  # another command's task holds nothing of this one


@pytest.fixture
def arrived(monkeypatch) -> list:
    """The check each job arrived with at ``run_stack`` (None: it came unchecked and is checked there)."""
    from reg_runner import run as run_lib

    seen, real = [], run_lib.check

    def wrapper(job):
        seen.append(None if job.checked is None else job.checked.stage)
        return real(job)

    monkeypatch.setattr(run_lib, "check", wrapper)
    return seen


@pytest.mark.parametrize("launcher", [[], ["hydra/launcher=stacked"]], ids=["basic", "stacked"])
def test_a_searchs_trials_arrive_checked(cli, arrived, launcher):
    """The study sweeper checks each trial's config before it launches it: in this process, that check is the one
    its run uses."""
    proc = cli("--multirun", "hparams_search=quick", "data.val_size=null", "hydra.sweeper.n_trials=2",
               "trainer.epochs=1", *launcher, check=False, in_process=True)
    assert proc.returncode == 0, proc.stderr
    assert arrived == [4, 4]
