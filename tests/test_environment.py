"""environment.json: every installed distribution, the torch build, the machine, and the code's changes."""

import json
import subprocess
from importlib import metadata

import pytest
import torch

from reg_runner import fingerprint
from reg_runner.records import RunFolder


@pytest.fixture
def source(tmp_path, monkeypatch):
    """The code the records describe: a fresh git repository of one committed file (the cache cleared)."""
    repo = tmp_path / "repo"
    (repo / "pkg").mkdir(parents=True)
    (repo / "pkg" / "code.py").write_text("x = 1\n")

    def git(*args):
        subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args], check=True,
                       capture_output=True)

    git("init", "-q")
    git("add", ".")
    git("commit", "-q", "-m", "first")
    monkeypatch.setattr(fingerprint, "SOURCE", repo / "pkg")
    fingerprint._git_state.cache_clear()
    yield repo
    fingerprint._git_state.cache_clear()


def write(tmp_path) -> tuple[dict, RunFolder]:
    folder = RunFolder(tmp_path / "run")
    folder.path.mkdir()
    folder.write_environment(torch.device("cpu"))
    return json.loads(folder.environment.read_text()), folder


def test_every_distribution_and_the_torch_build_are_recorded(tmp_path, source):
    env, _ = write(tmp_path)
    assert env["distributions"]["pytorch-optimizer"] == metadata.version("pytorch_optimizer")  # lion, lamb, lars
    assert env["packages"]["pytorch-optimizer"] == metadata.version("pytorch_optimizer")
    assert env["distributions"]["torch"] == torch.__version__ and len(env["distributions"]) > 20
    build = env["torch_build"]
    assert build["version"] == torch.__version__ and build["cuda"] == torch.version.cuda
    assert build["cudnn"] == torch.backends.cudnn.version() and build["mps_available"] == torch.backends.mps.is_available()
    assert env["cpu"] and env["cpu"] == env["device_name"] and env["gpu"] is None
    assert env["git"]["commit"] and env["git"]["dirty"] is False and "patch" not in env["git"]


def test_a_dirty_tree_leaves_its_diff_beside_the_records(tmp_path, source):
    (source / "pkg" / "code.py").write_text("x = 2  # edited between two runs\n")
    (source / "pkg" / "new.py").write_text("y = 3\n")
    env, folder = write(tmp_path)
    git = env["git"]
    assert git["dirty"] is True and git["patch"] == "source.patch" and git["untracked"] == ["pkg/new.py"]
    patch = (folder.path / "source.patch").read_text()
    assert "-x = 1" in patch and "+x = 2  # edited between two runs" in patch
    # the patch applies to the commit it names: the edited file comes back
    subprocess.run(["git", "-C", str(source), "checkout", "-q", "--", "."], check=True)
    subprocess.run(["git", "-C", str(source), "apply", str(folder.path / "source.patch")], check=True)
    assert "x = 2" in (source / "pkg" / "code.py").read_text()


def test_no_repository_or_no_git_is_said_not_fatal(tmp_path, monkeypatch):
    monkeypatch.setattr(fingerprint, "SOURCE", tmp_path)
    fingerprint._git_state.cache_clear()
    try:
        env, folder = write(tmp_path)
        assert env["git"]["commit"] is None and env["git"]["error"].startswith("not a git repository")
        fingerprint._git_state.cache_clear()
        monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
        env = json.loads((folder.write_environment(torch.device("cpu")) or folder.environment).read_text())
        assert env["git"] == {"commit": None, "error": "git is not installed"}
    finally:
        fingerprint._git_state.cache_clear()
