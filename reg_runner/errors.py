"""User-facing errors: one line naming the key, the value and what is allowed. Anything a user can get wrong raises
``UserError``, said on one line with exit ``EXIT_USER_ERROR``; any other exception is a bug and keeps its traceback.
"""

import argparse
import contextlib
import os
import re
import sys
from pathlib import Path

from reg_runner import dotted as dotted_keys

EXIT_USER_ERROR = 2
CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "conf")  # the config tree; its keys are suggested


class Parser(argparse.ArgumentParser):
    """argparse, its mistakes (its sub-commands' too) on one line, ``error: ...``, exit 2, without the usage."""

    def error(self, message: str):
        refuse(f"{message} (see {self.prog} --help)")


# what would break a message's one line, or hide part of it: control characters and Unicode's line separators
_BREAKS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# the password of a URL: scheme://user:PASSWORD@host (a password's own "@", ":" and "/" are percent-encoded)
_PASSWORD = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^\s/@:'\"]*):[^\s/@'\"]*@")
HIDDEN = "***"  # what a password is shown as (SQLAlchemy's render_as_string(hide_password=True) writes the same)


def masked(text) -> str:
    """``text`` with the password of every URL in it hidden (``postgresql://user:***@host/db``): what every
    message, log line and record that may show a storage URL shows."""
    return _PASSWORD.sub(rf"\1:{HIDDEN}@", str(text))


def first_line(e) -> str:
    """The first line of an exception's message (its passwords hidden), or "" where it has none."""
    return (masked(e).strip().splitlines() or [""])[0]


def cause(e: BaseException, limit: int | None = None) -> str:
    """``Type: the first line of its message`` (at most ``limit`` characters), or ``Type``."""
    line = first_line(e)[:limit]
    return f"{type(e).__name__}: {line}" if line else type(e).__name__


def one_line(text) -> str:
    """``text`` on one line, its passwords hidden: a newline, a tab or any other control character in a value
    shown as Python escapes it (``\\n``), so a value typed with a newline cannot split or forge a message."""
    return _BREAKS.sub(lambda m: repr(m[0])[1:-1], masked(text))


def refuse(message: str, code: int = EXIT_USER_ERROR):
    """The one line of every refusal: ``error: <message>`` on stderr, then exit ``code``."""
    print(f"error: {one_line(message)}", file=sys.stderr, flush=True)
    sys.exit(code)


class UserError(Exception):
    """A mistake the user can fix; the message says what to do."""


class ConfigError(UserError):
    """``key=value is not allowed: <what is allowed>``. ``others``: the other keys of a rule across keys,
    ``(key, value)`` each, so that the message can name the one the user set."""

    def __init__(self, key: str, value, allowed: str, others: tuple = ()):
        self.key, self.value, self.allowed, self.others = key, value, allowed, tuple(others)
        super().__init__(f"{key}={show(value)} is not allowed: {allowed}")

    def named_as_set(self, typed: set[str]) -> "ConfigError":
        """This refusal, naming the first of its keys (then ``others``) that the user set (``typed``: the command
        line's keys and groups)."""
        if self.key in typed or self.key.partition(".")[0] in typed:
            return self
        for key, value in self.others:
            if key in typed:
                return ConfigError(key, value, f"with it, {self.key}={show(self.value)} is not allowed: {self.allowed}")
        return self


def show(value) -> str:
    """A value as YAML and Hydra's command line write it: true, null, 'text', [0.9, 2.0]."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(show(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {show(v)}" for k, v in value.items()) + "}"
    return repr(masked(value)) if isinstance(value, str) else repr(value)


class DataError(UserError):
    """Data that is missing, unreadable or not what it claims to be."""


@contextlib.contextmanager
def exit_on_user_error(in_callback: bool = False):
    """A ``UserError`` as one line and exit 2 (a ``SystemExit``, which Hydra's error reporting lets through);
    ``HYDRA_FULL_ERROR=1`` re-raises it, but ``in_callback`` (Hydra would only warn, then make the run's folder
    anyway) prints its traceback and exits all the same."""
    try:
        yield
    except UserError as e:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            if not in_callback:
                raise
            import traceback

            traceback.print_exc()
        refuse(str(e))


def folder_arg(text: str) -> Path:
    """An argparse ``type``: a folder's path; an empty one would quietly mean the current folder."""
    if not text.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not allowed: a folder path (empty would mean the current "
                                         "folder)")
    return Path(text)


def _argument(convert, ok, allowed: str):
    """An argparse ``type``: ``convert(text)`` where ``ok`` takes it, else ``'<text>' is not allowed: <allowed>``."""

    def parse(text: str):
        with contextlib.suppress(ValueError):
            v = convert(text)
            if ok(v):
                return v
        raise argparse.ArgumentTypeError(f"{text!r} is not allowed: {allowed}")

    return parse


def integer_arg(lo: int, hi: int | None = None, odd: bool = False, note: str = ""):
    """An integer >= ``lo`` (and <= ``hi``; odd)."""
    return _argument(int, lambda v: v >= lo and (hi is None or v <= hi) and not (odd and v % 2 == 0),
                     f"an {'odd ' if odd else ''}integer " + (f"in [{lo}, {hi}]" if hi is not None else f">= {lo}")
                     + note)


def number_arg(lo: float, hi: float, hi_open: bool = False, note: str = ""):
    """A number in (lo, hi], or (lo, hi) with ``hi_open``."""
    return _argument(float, lambda v: lo < v and (v < hi if hi_open else v <= hi),
                     f"a number in ({lo:g}, {hi:g}{')' if hi_open else ']'}{note}")


def hydra_error(e: BaseException, overrides=()) -> str:
    """Hydra's (or OmegaConf's) exception about a command line, on one line, from its attributes (an option that
    does not exist, a key the config lacks, an override the grammar cannot read; tests/test_private.py pins them),
    else its own message, its lines joined. ``overrides``: the command line's, to give a missing key's value."""
    from hydra.errors import MissingConfigException, OverrideParseException
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

    inner = e.__cause__
    if isinstance(e, MissingConfigException) and e.missing_cfg_file and e.options is not None:
        group, _, option = e.missing_cfg_file.rpartition("/")
        return f"{group}={option} is not allowed: one of {', '.join(e.options)}"
    if isinstance(e, MissingConfigException) and e.missing_cfg_file and "/" not in e.missing_cfg_file:
        return f"--config-name={e.missing_cfg_file} is not allowed: one of {', '.join(options(''))}"  # conf/*.yaml
    if isinstance(inner, (ConfigAttributeError, ConfigKeyError)) and inner.full_key:
        missing = str(inner.full_key)  # the first key of the path the config lacks: trainer.early_stoping of
        for written in reversed([str(o) for o in overrides if "=" in str(o)]):  # trainer.early_stoping.patience=3
            key, value = written.split("=", 1)
            key = key.lstrip("+~")
            if key == missing or key.startswith(missing + "."):
                return no_such_key(key, value)
        return no_such_key(missing, "...")
    if isinstance(e, OverrideParseException):
        # its message: where the override was in the list, the parser's complaint, a link to the grammar
        complaint = [line for line in e.message.splitlines() if line.strip()][-2:][0]
        return (f"{e.override} is not allowed: Hydra cannot read it ({complaint.strip()}); the override grammar: "
                "https://hydra.cc/docs/advanced/override_grammar/basic/")
    text = "; ".join(line.strip().rstrip(".") for line in str(e).splitlines() if line.strip())
    if isinstance(inner, OmegaConfBaseException):
        text += "; " + first_line(inner.msg or inner)
    return text.rstrip(".") if text else type(e).__name__


def options(group: str) -> list[str]:
    """The options of a config group: its files in conf/ (what help texts and messages list)."""
    return sorted(path.stem for path in (Path(CONFIG_DIR) / group).glob("*.yaml"))


def no_such_key(key: str, value: str) -> str:
    """A key the composed config lacks: which options of its group have it (Hydra would suggest ``+key``)."""
    group, _, rest = key.partition(".")
    having = [o for o in options(group) if rest and dotted_keys.get(_yaml(Path(CONFIG_DIR) / group / f"{o}.yaml"),
                                                                    rest, dotted_keys.MISSING) is not dotted_keys.MISSING]
    message = f"{key}={value} is not allowed: the config has no key {key}"
    if having:
        return f"{message}; the {group} options that have it: {', '.join(f'{group}={h}' for h in having)}"
    near = closest_key(key)
    return f"{message} (did you mean {near}?)" if near else message


def closest_key(key: str) -> str | None:
    """The key of the config tree nearest to a mistyped one (``model.dropuot``: model.dropout), or None."""
    import difflib

    def dotted(node, prefix=""):
        for k, v in node.items() if isinstance(node, dict) else ():
            if k == "defaults" or str(k).startswith("_"):
                continue
            yield f"{prefix}{k}"
            yield from dotted(v, f"{prefix}{k}.")

    root, prefix = Path(CONFIG_DIR), ""
    if key.startswith("hydra.") and (root / "hydra" / key.split(".")[1]).is_dir():  # hydra.sweeper.n_trial
        root, prefix, key = root / "hydra", "hydra.", key.removeprefix("hydra.")
    top = {} if prefix else _yaml(root / "config.yaml")
    groups = sorted({p.name for p in root.iterdir() if p.is_dir() and p.name != "hydra"} | {str(k) for k in top
                                                                                           if k != "defaults"})
    group, _, rest = key.partition(".")
    if group not in groups:
        near = difflib.get_close_matches(group, groups, n=1)
        return f"{near[0]}.{rest}" if near and rest else (near[0] if near else None)
    keys = {k for node in [top.get(group), *map(_yaml, (root / group).glob("*.yaml"))] for k in dotted(node)}
    near = difflib.get_close_matches(rest, sorted(keys), n=1) if rest else []
    return f"{prefix}{group}.{near[0]}" if near else None


def _yaml(path: Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text()) or {}
