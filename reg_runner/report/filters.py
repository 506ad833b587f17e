"""What selects the runs of a report: ``--where key=value``, ``--status`` and ``--tag``."""

import difflib
from contextlib import suppress
from dataclasses import dataclass

import yaml

from reg_runner import dotted
from reg_runner.errors import UserError
from reg_runner.report.runs import STATUSES, Run


@dataclass(frozen=True)
class Filters:
    """Every ``--where`` and every ``--tag`` must hold, and the status must be one of ``--status`` (any, when none
    is given)."""

    where: tuple = ()  # (key, value, as typed)
    status: tuple = ()
    tags: tuple = ()

    def __bool__(self) -> bool:
        return bool(self.where or self.status or self.tags)

    def describe(self) -> str:
        return " ".join([*(f"--where {text}" for _, _, text in self.where), *(f"--status {s}" for s in self.status),
                         *(f"--tag {t}" for t in self.tags)])


def parse_filters(where=(), status=(), tags=()) -> Filters:
    """The command line's filters, checked: one line naming what is allowed for a bad one."""
    parsed = []
    for text in where:
        key, sep, value = text.partition("=")
        if not sep or not key.strip() or " " in key.strip():
            raise UserError(f"--where {text!r} is not allowed: key=value, with a dotted key of the runs' resolved "
                            "config, e.g. --where model.norm=batchnorm")
        parsed.append((key.strip(), _typed(value), text))
    for s in status:
        if s not in STATUSES:
            raise UserError(f"--status {s!r} is not allowed: one of {', '.join(STATUSES)}")
    for t in tags:
        if not t.strip():
            raise UserError(f"--tag {t!r} is not allowed: a tag the runs carry (tags=[...] when they ran)")
    return Filters(tuple(parsed), tuple(status), tuple(tags))


def _typed(text: str):
    """A value as YAML reads it (``true``, ``null``, ``[a,b]``, ``0.1``), and ``1e-3`` a number too."""
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        return text
    if isinstance(value, str):
        with suppress(ValueError):
            return float(value)
    return value


def _same(a, b) -> bool:
    """Equal as values: 0.001 is 1e-3 and 1 is 1.0, but true is not 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def _keys(node, prefix="") -> list[str]:
    out = []
    for k, v in node.items():
        out.append(f"{prefix}{k}")
        if isinstance(v, dict):
            out += _keys(v, f"{prefix}{k}.")
    return out


def select(runs: list[Run], filters: Filters) -> list[Run]:
    """The runs the filters keep. A ``--where`` key that no run's config holds is a mistake, named in one line."""
    if not filters:
        return runs
    known = sorted({k for r in runs if r.resolved for k in _keys(r.resolved)})
    for key, _, text in filters.where:
        if key not in known:
            hint = difflib.get_close_matches(key, known, n=1)
            raise UserError(f"--where {text!r} is not allowed: no run's resolved config has the key {key!r}"
                            + (f" (did you mean {hint[0]}?)" if hint else "")
                            + "; give a dotted key of resolved_config.yaml, e.g. --where model.norm=batchnorm")

    def keep(r: Run) -> bool:
        if filters.status and r.state not in filters.status:
            return False
        if filters.tags and not set(filters.tags) <= set(map(str, (r.resolved or {}).get("tags") or [])):
            return False
        return all(_same(dotted.get(r.resolved, key, dotted.MISSING), value) for key, value, _ in filters.where)

    return [r for r in runs if keep(r)]
