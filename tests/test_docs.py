"""The docs: the configuration reference generated from the schemas (every key described, the committed file
current), the README's size and its test command, and what user-facing text may not say."""

import re

import pytest
from conftest import ROOT

from reg_runner import docs

DOCS = ROOT / "docs"
README = ROOT / "README.md"
TEST_COMMAND = "pip install -c constraints.txt -e '.[test]' && pytest"


@pytest.fixture(scope="module")
def generated():
    return docs.reference()


def test_every_key_of_every_schema_has_a_description(generated):
    _, missing = generated
    assert missing == []


def test_the_committed_reference_is_current(generated):
    text, _ = generated
    assert (DOCS / "reference.md").read_text() == text, "docs/reference.md is stale: run python -m reg_runner.docs"


def test_the_reference_covers_every_key_of_every_option(generated):
    text, _ = generated
    for group in ("data", "model", "reg", "augmentation", "optimizer", "scheduler", "trainer", "logging"):
        for option in docs.options(group):
            values = docs.composed(overrides=(f"{group}={option}",))[group]
            section = text.split(f"### `{group}={option}`", 1)[1].split("\n## ", 1)[0].split("\n### ", 1)[0]

            def keys(node, prefix):
                for k, v in node.items():
                    if isinstance(v, dict) and k != "transforms":
                        yield from keys(v, f"{prefix}{k}.")
                    else:
                        yield f"{prefix}{k}"

            for key in keys(values, f"{group}."):
                assert f"| `{key}` |" in section, (option, key)


def test_a_key_without_a_description_is_found():
    from reg_runner.schema import Group, integer

    class Undescribed(Group):
        described: integer(0)
        """what it is"""
        bare: integer(0)

    assert [r.key for r in docs.rows(Undescribed, {}, "x.") if not r.description] == ["x.bare"]


def test_readme_is_short_and_keeps_the_test_command_ci_runs():
    lines = README.read_text().splitlines()
    assert len(lines) <= 250, len(lines)
    assert any(line.startswith(TEST_COMMAND) for line in lines)
    assert TEST_COMMAND in (ROOT / ".ci" / "run").read_text()


def test_readme_links_to_pages_that_exist():
    links = re.findall(r"\]\((docs/[^)#]+)", README.read_text())
    assert len(links) >= 10
    for link in links:
        assert (ROOT / link).is_file(), link


def user_text():
    return [README, *sorted(DOCS.glob("*.md"))]


@pytest.mark.parametrize("pattern", [r"\b20\d\d-\d\d-\d\d\b", r"\bI\b", r"\b[Ww]e\b", r"\bmy\b", r"\bour\b",
                                     r"this host", r"\bissue\b", r"today"])
def test_user_facing_text_has_no_dates_first_person_or_issues(pattern):
    for path in user_text():
        text = path.read_text()
        text = re.sub(r"```.*?```", "", text, flags=re.S)  # commands may name dated folders
        text = re.sub(r"`[^`\n]*`", "", text)
        assert not re.search(pattern, text), (path.name, re.search(pattern, text))


CITATIONS = ("https://arxiv.org/abs/1502.03167", "https://jmlr.org/papers/v15/srivastava14a.html",
             "https://arxiv.org/abs/1607.06450", "https://arxiv.org/abs/1512.03385", "https://arxiv.org/abs/1711.05101",
             "https://arxiv.org/abs/1506.01186", "https://arxiv.org/abs/1712.09913", "https://arxiv.org/abs/1412.6544")


def test_every_technique_is_cited_with_a_link():
    text = "\n".join(p.read_text() for p in user_text())
    for url in CITATIONS:
        assert url in text, url


def test_the_error_examples_print_what_the_code_prints(tmp_path, monkeypatch):
    """Each ``$ python -m reg_runner ...`` example of docs/runs.md and the line under it, run in-process."""
    import contextlib
    import io
    import shlex
    import sys

    from hydra.core.global_hydra import GlobalHydra

    from reg_runner.cli import entry

    examples = re.findall(r"^\$ python -m reg_runner (.+)\n(error: .+)$", (DOCS / "runs.md").read_text(), re.M)
    examples = [(args, line) for args, line in examples if "--multirun" not in args]
    assert len(examples) >= 4
    monkeypatch.chdir(tmp_path)
    for args, line in examples:
        GlobalHydra.instance().clear()
        err = io.StringIO()
        monkeypatch.setattr(sys, "argv", ["reg_runner", *shlex.split(args), f"hydra.run.dir={tmp_path / 'run'}"])
        with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as stop:
            entry()
        GlobalHydra.instance().clear()
        assert stop.value.code == 2 and err.getvalue().strip() == line, args
    assert not (tmp_path / "run").exists()
