"""tags and notes: schema keys that label runs, never a structure, a result or a searched value."""

import pytest

from reg_runner import checks, keys
from reg_runner import config as config_lib
from reg_runner.errors import ConfigError


def composed(*overrides):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from reg_runner.cli import CONFIG_DIR

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        cfg = compose("config", overrides=list(overrides))
    GlobalHydra.instance().clear()
    return cfg


def test_labels_are_neither_structure_nor_result():
    plain = checks.check(composed(), through=1)
    labelled = checks.check(composed("tags=[course,week1]", "notes='a first try'"), through=1)
    assert labelled.tags == ["course", "week1"] and labelled.notes == "a first try"
    assert plain.tags == [] and plain.notes is None
    # the stacked launcher puts both in one stack; a study's signature and the report's groups ignore them
    assert keys.structural_values(plain) == keys.structural_values(labelled)
    assert config_lib.structural_difference([plain, labelled]) is None
    data = [config_lib.results_config(config_lib.as_data(composed(*o))) for o in ((), ("tags=[a]", "notes=x"))]
    assert data[0] == data[1] and "tags" not in data[1] and "notes" not in data[1]


@pytest.mark.parametrize("override, key, says", [
    ("tags=week1", "tags", "a list of words"),
    ("tags=[1,2]", "tags", "a list of words"),
    ("notes=''", "notes", "a non-empty string"),
])
def test_a_bad_label_is_one_line(override, key, says):
    with pytest.raises(ConfigError) as e:
        checks.check(composed(override), through=1)
    assert e.value.key == key and says in str(e.value)


@pytest.mark.parametrize("search", [(), ("hparams_search=quick", "data.val_size=null")])
def test_labels_are_never_swept_or_searched(cli, search):
    proc = cli("--multirun", *search, "tags=a,b", check=False, in_process=bool(search))  # the grid's: the real CLI
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "tags=a,b is not allowed: tags labels runs and is never swept or searched" in proc.stderr
    assert not proc.run_dir.exists()
