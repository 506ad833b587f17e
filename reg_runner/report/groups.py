"""Runs grouped by what sets them apart (the seed left out), and the design the groups make: the keys that vary,
their levels, and whether every combination of them was run (a factorial design)."""

import itertools
import json
import math
from dataclasses import dataclass

from reg_runner import keys as key_roles
from reg_runner.config import KEYS
from reg_runner.report.runs import Run


def grouped(key: str) -> bool:
    """Whether runs may be grouped by ``key`` (not by the seed, a path or a label: ``reg_runner.keys``)."""
    return key_roles.GROUPING not in KEYS.role_of(key).left_out_of


def choose_settings(runs: list[Run]) -> str:
    """Group runs by their overrides where those tell every group's configs apart, else by the values of
    their resolved configs that differ (runs without .hydra/, or overrides that hide a difference).
    Returns what the groups are by."""
    keys = varying_keys(runs)
    configs = {id(r): {k: v for k, v in r.config.items() if grouped(k)} for r in runs if r.config is not None}
    if all(len({json.dumps(configs[id(r)], sort_keys=True) for r in g if id(r) in configs}) <= 1
           for g in by_group(runs, keys).values()):
        return "overrides"
    differ = sorted({k for c in configs.values() for k in c if len({c2.get(k) for c2 in configs.values()}) > 1})
    for r in runs:
        r.settings = {k: configs.get(id(r), {}).get(k, "-") for k in differ}
    return "resolved configs"


def varying_keys(runs: list[Run]) -> list[str]:
    keys = sorted({k for r in runs for k in r.settings if grouped(k) and not k.startswith("hydra.")})
    return [k for k in keys if len({r.settings.get(k, "-") for r in runs}) > 1]


def by_group(runs: list[Run], keys: list[str]) -> dict[str, list[Run]]:
    """The runs of each group by its name, ``key=value,key=value`` (what ``--baseline`` matches), the groups in the
    order of their first run."""
    groups: dict[str, list[Run]] = {}
    for r in runs:
        groups.setdefault(",".join(f"{k}={v}" for k, v in zip(keys, values(r, keys))) or "all runs", []).append(r)
    return groups


def values(run: Run, keys: list[str]) -> tuple[str, ...]:
    """A run's values of the varied keys, in their order (what tables and figures label its group by)."""
    return tuple(run.settings.get(k, "-") for k in keys)


@dataclass
class Design:
    """The varied keys, each with its levels (in the order the runs first show them), and the combinations of
    levels that no run trained to the end holds."""

    keys: list[str]
    levels: dict[str, list[str]]
    missing: list[tuple[str, ...]]

    @property
    def factorial(self) -> bool:
        return len(self.keys) >= 2 and not self.missing

    def describe(self) -> str:
        """One line: what the design is, and for one that is not factorial, what the report does instead."""
        shape = " × ".join(f"{k} ({len(self.levels[k])})" for k in self.keys)
        if self.factorial:
            return f"Factorial design: {shape}, every combination run; main effects below."
        combos = math.prod(len(self.levels[k]) for k in self.keys)
        shown = "; ".join(",".join(f"{k}={v}" for k, v in zip(self.keys, m)) for m in self.missing[:3])
        more = f" and {len(self.missing) - 3} more" if len(self.missing) > 3 else ""
        return (f"Not a factorial design: {combos - len(self.missing)} of the {combos} combinations of {shape} have a "
                f"run trained to the end (none for {shown}{more}); no main effects, the groups are compared as they "
                "are.")


def design(groups: dict[str, list[Run]], keys: list[str]) -> Design:
    levels = {k: list(dict.fromkeys(members[0].settings.get(k, "-") for members in groups.values())) for k in keys}
    done = {values(members[0], keys) for members in groups.values() if any(r.test_acc is not None for r in members)}
    missing = [c for c in itertools.product(*(levels[k] for k in keys)) if c not in done]
    return Design(keys, levels, missing)
