"""User-facing errors: one line naming the key, the value and what is allowed.

Anything a user can get wrong (a config value, a data folder, a resume path) raises
``UserError``; the CLI prints its message on one line and exits with ``EXIT_USER_ERROR``.
Every other exception is a bug in reg_runner and keeps its traceback.
"""

import argparse
import contextlib
import os
import sys

EXIT_USER_ERROR = 2


class Parser(argparse.ArgumentParser):
    """argparse, with its mistakes on one line (``error: ...``, exit 2) instead of usage and a message.

    Its sub-commands' parsers are of this class too (argparse makes them with ``type(self)``).
    """

    def error(self, message: str):
        print(f"error: {message} (see {self.prog} --help)", file=sys.stderr, flush=True)
        sys.exit(EXIT_USER_ERROR)


class UserError(Exception):
    """A mistake the user can fix; the message says what to do."""


class ConfigError(UserError):
    """``key=value is not allowed: <what is allowed>``, the value written as on a command line."""

    def __init__(self, key: str, value, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"{key}={show(value)} is not allowed: {allowed}")


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
    return repr(value)


class DataError(UserError):
    """Data that is missing, unreadable or not what it claims to be."""


@contextlib.contextmanager
def exit_on_user_error(in_callback: bool = False):
    """Turn a ``UserError`` into one line on stderr and exit code 2 (``HYDRA_FULL_ERROR=1``: re-raise).

    ``SystemExit`` passes through Hydra's error reporting, which would print a traceback for
    any ``Exception``. ``in_callback``: in a Hydra callback, which Hydra would let an exception through
    only as a warning, and then make the run's folder anyway: with ``HYDRA_FULL_ERROR=1`` the traceback
    is printed and the command exits all the same.
    """
    try:
        yield
    except UserError as e:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            if not in_callback:
                raise
            import traceback

            traceback.print_exc()
        print(f"error: {e}", file=sys.stderr, flush=True)
        sys.exit(EXIT_USER_ERROR)


def integer_arg(lo: int, hi: int | None = None, odd: bool = False, note: str = ""):
    """An argparse ``type``: an integer >= ``lo`` (and <= ``hi``; odd), refused in the Parser's one line."""
    allowed = (f"an {'odd ' if odd else ''}integer " + (f"in [{lo}, {hi}]" if hi is not None else f">= {lo}")) + note

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            v = None
        if v is None or v < lo or (hi is not None and v > hi) or (odd and v % 2 == 0):
            raise argparse.ArgumentTypeError(f"{text!r} is not allowed: {allowed}")
        return v

    return parse


def number_arg(lo: float, hi: float, lo_open: bool = True, hi_open: bool = False, note: str = ""):
    """An argparse ``type``: a number in the interval, refused in the Parser's one line."""
    allowed = f"a number in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}{note}"

    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            v = float("nan")
        if not ((lo < v if lo_open else lo <= v) and (v < hi if hi_open else v <= hi)):
            raise argparse.ArgumentTypeError(f"{text!r} is not allowed: {allowed}")
        return v

    return parse
