"""The command line's overrides: ``key=value`` items, each key given once, none that Hydra sets itself, Hydra's own
keys only in the mode that reads them (a key the run would not read: stage 2 of ``reg_runner.checks``)."""

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from reg_runner.errors import ConfigError

# chosen by the group (scheduler=plateau), which brings the option's keys: a name typed as a key would not
CHOSEN_BY_GROUP = {"scheduler.name": "scheduler", "augmentation.name": "augmentation"}


def plain_overrides(overrides) -> list[str]:
    """The command line's overrides as strings (a ListConfig would resolve a ``${...}`` in them)."""
    if OmegaConf.is_list(overrides):
        return [str(o) for o in OmegaConf.to_container(overrides, resolve=False)]
    return [str(o) for o in overrides]


def override_items(overrides) -> list[tuple[str, str]]:
    """``(key, value)`` of each ``key=value`` on the command line, without ``+``/``++``/``~``."""
    split = [item.partition("=") for item in plain_overrides(overrides)]
    return [(key.lstrip("+~"), value) for key, sep, value in split if sep]


def chosen_by_group(overrides) -> None:
    """An option's ``name`` typed as a key (``scheduler.name=plateau``) would bring none of its keys; a key given
    twice keeps only its last value; Hydra's own runtime keys are not settings."""
    seen = {}
    for key, value in override_items(overrides):
        if key in seen:
            raise ConfigError(key, value, f"one value: it is given twice ({key}={seen[key]}, then {key}={value}), "
                              "and only the last would count")
        seen[key] = value
        if key.startswith(("hydra.runtime.", "hydra.job.num", "hydra.job.id")) or key == "hydra.mode":
            raise ConfigError(key, value, "set by Hydra, not on the command line (--multirun chooses the mode)")
        if key in CHOSEN_BY_GROUP:
            group = CHOSEN_BY_GROUP[key]
            raise ConfigError(key, value, f"set by the {group} group: choose the option with {group}={value}, "
                              "which brings its keys")


MULTIRUN_ONLY = ("hydra.sweep.", "hydra.sweeper", "hydra/sweeper", "hydra.launcher", "hydra/launcher")


def hydra_overrides(overrides, multirun: bool) -> None:
    """Hydra's own keys on the command line (``config.hydra.overrides.hydra``): each once, none that Hydra sets
    itself (it adds ``hydra.mode=MULTIRUN`` for --multirun), none that this mode does not read."""
    overrides = [o for o in plain_overrides(overrides) if o.partition("=")[0].lstrip("+~") != "hydra.mode"]
    chosen_by_group(overrides)
    for key, value in override_items(overrides):
        if multirun and key.startswith("hydra.run."):
            raise ConfigError(key, typed_value(value), "not read by a --multirun: its folder is hydra.sweep.dir")
        if not multirun and key.startswith(MULTIRUN_ONLY):
            raise ConfigError(key, typed_value(value), "not read by a single run, which has no sweep, sweeper or "
                              "launcher: add --multirun" + (" (its folder is hydra.sweep.dir)"
                                                            if key.startswith("hydra.sweep.") else ""))


def typed_value(text: str):
    try:
        return OverridesParser.create().parse_override(f"k={text}").value()
    except Exception:
        return text
