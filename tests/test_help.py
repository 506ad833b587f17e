"""``--help``: the groups and their options, the launchers and sweepers, the companion commands and shell
completion; ``lr_find --help``: only what the range test reads. In-process, through Hydra's own help."""

import contextlib
import io
import re
import sys

import pytest
from conftest import ROOT

CONF = ROOT / "conf"
COMPANIONS = ("resume", "report", "lr_find", "landscape", "data")


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def groups() -> list[str]:
    return sorted(p.name for p in CONF.iterdir() if p.is_dir() and p.name != "hydra")


def printed(main, *args) -> str:
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    out = io.StringIO()
    argv = sys.argv
    sys.argv = ["reg_runner", *args]
    try:
        with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):  # --hydra-help exits 0
            main()
    finally:
        sys.argv = argv
        GlobalHydra.instance().clear()
    return out.getvalue()


@pytest.fixture(scope="module")
def helps():
    from reg_runner.cli import main
    from reg_runner.lr_find.__main__ import main as lr_find_main

    return {"run": printed(main, "--help"), "hydra": printed(main, "--hydra-help"),
            "lr_find": printed(lr_find_main, "--help")}


def listed(text: str) -> dict[str, list[str]]:
    """The ``group: a, b, c`` lines of a help text."""
    return {m[1]: m[2].split(", ") for m in re.finditer(r"^([a-z_]+): ([a-z0-9_, ]+)$", text, re.M)}


def test_help_lists_every_group_with_its_options(helps):
    assert {g: listed(helps["run"]).get(g) for g in groups()} == {g: options(g) for g in groups()}


def test_help_names_every_launcher_and_sweeper_hydra_knows(helps):
    known = {m[1]: m[2].split(", ") for m in re.finditer(r"^hydra/(launcher|sweeper|sweeper/pruner|sweeper/sampler): "
                                                         r"(.+)$", helps["hydra"], re.M)}
    assert {"stacked", "joblib", "submitit_local", "submitit_slurm", "slurm", "basic"} <= set(known["launcher"])
    for group, names in known.items():
        for name in names:
            assert re.search(rf"hydra/{group}=(\S*[|=])?{name}\b|\b{name}: ", helps["run"]), (group, name)


def test_help_names_the_companion_commands_and_completion(helps):
    text = helps["run"]
    for command in COMPANIONS:
        assert f"python -m reg_runner.{command} " in text, command
    assert 'reg-runner = "reg_runner.__main__:command"' in (ROOT / "pyproject.toml").read_text()  # the command completed
    assert 'eval "$(reg-runner -sc install=bash)"' in text and "reg-runner -sc install=fish | source" in text


def test_lr_find_help_lists_only_the_groups_it_reads(helps):
    from reg_runner import lr_find

    reads = [g for g in groups() if lr_find.unread(g) is None]
    assert set(reads) < set(groups())  # it refuses some
    assert listed(helps["lr_find"]) == {g: options(g) for g in reads}
    for key in ("min_lr", "max_lr", "steps", "smoothing", "stop_factor"):
        assert f"lr_find.{key} " in helps["lr_find"], key
