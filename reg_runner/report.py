"""Compare runs: tables with mean ± std over seeds, and plots, from the runs' own records.

    python -m reg_runner.report outputs/multirun/<date>/<time>     # or any folder: it finds the runs below it
    python -m reg_runner.report outputs/ --out /tmp/report --baseline experiment=baseline

Every run folder below the path (single runs and multiruns alike) is read from its own files:
``.hydra/overrides.yaml`` (what was changed), ``metrics.json`` (status, best epoch, test at best,
final, timing) and ``history.csv`` (the curves). Unfinished, failed or unreadable folders are listed
with their status, never fatal.

- Table 1, one row per run: the overrides that differ between runs, seed, best val acc, test acc at
  the best-validation epoch, final train / val loss, best epoch, wall time, status.
- Table 2, runs grouped by those overrides with the seed left out: n, mean ± std of val and test
  accuracy, and the difference to the baseline group with Welch's t-test p-value (two-sided), Holm-adjusted
  when several groups are tested against the baseline.
- Plots: validation accuracy and loss per epoch per group (mean, min-max band over seeds);
  test accuracy per group (each seed, and mean ± std).

Written to the terminal (markdown) and to ``report.md``, ``report.csv``, ``curves.png`` and
``test_acc.png`` in the folder (or ``--out``). On an Optuna search's folder, also its analysis
(``reg_runner.sweep.analysis``): Optuna's figures of the study and ``trials.csv``.

``--where key=value``, ``--status`` and ``--tag`` select the runs the report reads.
"""

import argparse
import csv
import io
import json
import os
import re
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from reg_runner import atomic, dotted, kinds, signals
from reg_runner.errors import Parser, UserError, exit_on_user_error
from reg_runner.records import RunFolder

FINISHED = ("completed", "early_stopped")  # the runs a group's mean is taken over
# what --status selects: a run's status as its records say (``unrecorded``: no readable metrics.json)
STATUSES = ("completed", "early_stopped", "pruned", "diverged", "failed", "interrupted", "killed", "running", "cut",
            "unrecorded")
SKIP_DIRS = {"checkpoints", ".hydra", ".submitit", "__pycache__"}


@dataclass
class Run:
    path: Path
    name: str  # relative to the report's root
    status: str
    state: str = "unrecorded"  # the status alone, one of STATUSES (``status`` adds what to do about it)
    resolved: dict | None = None  # resolved_config.yaml as recorded (what --where and --tag read)
    settings: dict = field(default_factory=dict)  # what sets its group apart: its overrides, or its config's values
    seed: int | None = None
    metrics: dict | None = None
    config: dict | None = None  # resolved_config.yaml, flattened, without seed and what changes no number
    sharpness: float | None = None  # from landscape.json (python -m reg_runner.landscape), of best.pt on train images

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    def history(self) -> list[dict]:
        """The rows of history.csv that hold an epoch and the curves' metrics ([] if unreadable)."""
        try:
            with open(self.path / "history.csv") as f:
                rows = [{k: float(v) for k, v in row.items() if k and v not in ("", None)} for row in csv.DictReader(f)]
        except (OSError, ValueError, TypeError, csv.Error):
            return []
        return [r for r in rows if {"epoch", "val/acc", "val/loss"} <= r.keys()]


def is_run_folder(path: Path) -> bool:
    return (path / "metrics.json").exists() or (path / "resolved_config.yaml").exists() or (
        path / ".hydra" / "overrides.yaml"
    ).exists()


def natural(name: str) -> list:
    """Sort key: ``2_...`` before ``10_...`` (multirun job numbers)."""
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", name)]


def find_runs(root: Path) -> list[Run]:
    """The run folders at and below ``root`` (a range test's or a landscape's folder is none, nor holds one)."""
    runs = []
    for dirpath, dirnames, _ in os.walk(root):
        dirnames[:] = sorted((d for d in dirnames if d not in SKIP_DIRS), key=natural)
        path = Path(dirpath)
        kind = kinds.kind_of(path)
        if kind in (kinds.LR_FIND, kinds.LANDSCAPE):
            dirnames[:] = []
        elif kind == kinds.RUN or (kind is None and is_run_folder(path)):
            runs.append(read_run(path, root))
            dirnames[:] = []  # a run folder holds no other run
    return runs


def read_run(path: Path, root: Path) -> Run:
    name = str(path.relative_to(root)) if path != root else path.name
    run = Run(path, name, status="unknown")
    try:
        items = yaml.safe_load((path / ".hydra" / "overrides.yaml").read_text()) or []
        for item in items if isinstance(items, list) else []:
            key, _, value = str(item).partition("=")
            run.settings[key.lstrip("+~")] = value
    except (OSError, yaml.YAMLError):
        pass
    try:
        config = yaml.safe_load((path / "resolved_config.yaml").read_text())
        if isinstance(config, dict):
            from reg_runner.config import results_config

            run.resolved = config
            run.config = {k: v for k, v in _flatten(results_config(config)).items() if grouped(k)}
    except (OSError, yaml.YAMLError):
        pass
    folder = RunFolder(path)
    record = folder.recorded()
    if record is None:
        run.status = "no metrics.json (stopped before training)"
    elif record.get("status") == "unreadable":
        run.status = "unreadable metrics.json"
    else:
        run.metrics = record
        run.status = folder.status()
        run.state = run.status if run.status in STATUSES else "unrecorded"
        run.seed = record.get("seed") if isinstance(record.get("seed"), int) else None
    try:
        recorded = json.loads((path / "landscape.json").read_text())
        if recorded["split"] == "train" and recorded["checkpoint"] == "best":  # one column, comparable numbers
            run.sharpness = float(recorded["sharpness"]["value"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    if run.status in ("killed", "interrupted", "failed"):
        run.status += " (resume: python -m reg_runner.resume <folder>)"
    elif run.status == "cut":  # its search ran another trial in its place: resuming it would reach no study
        cut = folder.cut_from_search() or {}
        run.status = f"cut off by a kill (trial {cut.get('trial', '?')}; the search ran another in its place)"
    if run.seed is None and "seed" in run.settings:
        run.seed = _number(run.settings["seed"])
    return run


def _number(text):
    try:
        return int(text)
    except (TypeError, ValueError):
        return text


def _flatten(node, prefix="") -> dict:
    out = {}
    for k, v in node.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = json.dumps(v) if isinstance(v, (list, dict)) else str(v)
    return out


def choose_settings(runs: list[Run]) -> str:
    """Group runs by their overrides where those tell every group's configs apart, else by the values of
    their resolved configs that differ (runs without .hydra/, or overrides that hide a difference).
    Returns what the groups are by."""
    keys = varying_keys(runs)
    groups: dict[str, list[Run]] = {}
    for r in runs:
        groups.setdefault(group_label(r, keys), []).append(r)
    consistent = all(len({json.dumps(r.config, sort_keys=True) for r in g if r.config is not None}) <= 1
                     for g in groups.values())
    if consistent:
        return "overrides"
    configs = [r.config for r in runs if r.config is not None]
    differ = sorted({k for c in configs for k in c if len({c2.get(k) for c2 in configs}) > 1})
    for r in runs:
        r.settings = {k: (r.config or {}).get(k, "-") for k in differ}
    return "resolved configs"


def varying_keys(runs: list[Run]) -> list[str]:
    keys = sorted({k for r in runs for k in r.settings if grouped(k) and not k.startswith("hydra.")})
    return [k for k in keys if len({r.settings.get(k, "-") for r in runs}) > 1]


def grouped(key: str) -> bool:
    """Whether runs may be grouped by ``key`` (not by the seed, a path or a label: ``reg_runner.keys``)."""
    from reg_runner import keys
    from reg_runner.config import KEYS

    return keys.GROUPING not in KEYS.role_of(key).left_out_of


def group_label(run: Run, keys: list[str]) -> str:
    return ",".join(f"{k}={run.settings.get(k, '-')}" for k in keys) or "all runs"


@dataclass(frozen=True)
class Filters:
    """What selects the runs of a report: every ``--where`` and every ``--tag`` must hold, and the status must
    be one of ``--status`` (any, when none is given)."""

    where: tuple = ()  # (key, value, as typed)
    status: tuple = ()
    tags: tuple = ()

    def __bool__(self) -> bool:
        return bool(self.where or self.status or self.tags)

    def describe(self) -> str:
        return " ".join([*(f"--where {text}" for _, _, text in self.where), *(f"--status {s}" for s in self.status),
                         *(f"--tag {t}" for t in self.tags)])


_MISSING = object()


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
        try:
            return float(value)
        except ValueError:
            pass
    return value


def _at(config, key: str):
    return dotted.get(config, key, _MISSING)


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
            import difflib

            hint = difflib.get_close_matches(key, known, n=1)
            raise UserError(f"--where {text!r} is not allowed: no run's resolved config has the key {key!r}"
                            + (f" (did you mean {hint[0]}?)" if hint else "")
                            + "; give a dotted key of resolved_config.yaml, e.g. --where model.norm=batchnorm")

    def keep(r: Run) -> bool:
        if filters.status and r.state not in filters.status:
            return False
        if filters.tags and not set(filters.tags) <= set(map(str, (r.resolved or {}).get("tags") or [])):
            return False
        return all(_same(_at(r.resolved, key), value) for key, value, _ in filters.where)

    return [r for r in runs if keep(r)]


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjustment (Holm-Bonferroni) of m p-values tested together, in their order: the
    i-th smallest is multiplied by m - i + 1, kept at least its predecessor's, at most 1."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def _get(m: dict | None, *path):
    """A number recorded at ``path`` in ``m``; None if absent or not a number (a damaged record)."""
    for p in path:
        if not isinstance(m, dict) or m.get(p) is None:
            return None
        m = m[p]
    if isinstance(m, bool) or not isinstance(m, (int, float)):
        return None
    return m


def run_row(run: Run, keys: list[str], sharpness: bool = False) -> dict:
    m = run.metrics
    row = {
        "run": run.name,
        **{k: run.settings.get(k, "-") for k in keys},
        "seed": run.seed,
        "best_val_acc": _get(m, "best", "val/acc"),
        "test_acc_at_best": _get(m, "test_at_best", "acc"),
        "final_train_loss": _get(m, "final", "train/loss"),
        "final_val_loss": _get(m, "final", "val/loss"),
        "best_epoch": _get(m, "best_epoch"),
        "wall_s": _get(m, "timing", "wall_s"),
        "status": run.status,
    }
    if sharpness:  # the loss rise at a fixed filter-normalized radius around the checkpoint (landscape.json)
        row = {**{k: v for k, v in row.items() if k != "status"}, "sharpness": run.sharpness, "status": run.status}
    return row


def welch_p(a: list[float], b: list[float]) -> float | None:
    if len(a) < 2 or len(b) < 2:
        return None
    if statistics.pstdev(a) == 0 and statistics.pstdev(b) == 0:
        return 1.0 if statistics.mean(a) == statistics.mean(b) else 0.0
    from scipy.stats import ttest_ind

    return float(ttest_ind(a, b, equal_var=False).pvalue)


def group_rows(runs: list[Run], keys: list[str], baseline: str | None) -> tuple[list[dict], str | None]:
    groups: dict[str, list[Run]] = {}
    for r in runs:
        groups.setdefault(group_label(r, keys), []).append(r)
    labels = list(groups)
    if baseline is None:
        baseline = next((g for g in labels if "experiment=baseline" in g), None)
    if baseline is None:
        baseline = next((g for g in labels if all(v == "-" for v in _values(g))), labels[0] if labels else None)
    else:
        matches = [g for g in labels if baseline == g or baseline in g.split(",")]
        if len(matches) != 1:
            which = "no group" if not matches else f"{len(matches)} groups ({'; '.join(matches)})"
            raise UserError(f"--baseline {baseline!r} matches {which}: give one group's whole label; groups: "
                            f"{'; '.join(labels)}")
        baseline = matches[0]

    def accs(group, key):
        return [_get(r.metrics, *key) for r in groups[group] if r.finished and _get(r.metrics, *key) is not None]

    base_val, base_test = accs(baseline, ("best", "val/acc")), accs(baseline, ("test_at_best", "acc"))
    rows = []
    for g in labels:
        val, test = accs(g, ("best", "val/acc")), accs(g, ("test_at_best", "acc"))
        left_out = [r for r in groups[g] if not (r.finished and _get(r.metrics, "test_at_best", "acc") is not None)]
        row = {"group": g, "n": len(test), "of": len(groups[g]),
               "left_out": [f"seed {r.seed if r.seed is not None else '?'} {r.status.split(' (')[0]}" for r in left_out],
               "val_mean": _mean(val), "val_std": _std(val), "test_mean": _mean(test), "test_std": _std(test)}
        if g != baseline and test and base_test:
            row.update(d_val=_mean(val) - _mean(base_val), p_val=welch_p(val, base_val),
                       d_test=_mean(test) - _mean(base_test), p_test=welch_p(test, base_test))
        rows.append(row)
    for key in ("p_val", "p_test"):  # several groups against one baseline: each family of tests adjusted
        tested = [r for r in rows if r.get(key) is not None]
        if len(tested) > 1:
            for r, p in zip(tested, holm([r[key] for r in tested])):
                r[f"{key}_raw"], r[key], r["holm"] = r[key], p, len(tested)
    return rows, baseline


def _values(label: str) -> list[str]:
    return [item.partition("=")[2] for item in label.split(",")]


def _mean(xs):
    return statistics.mean(xs) if xs else None


def _std(xs):
    return statistics.stdev(xs) if len(xs) > 1 else (0.0 if xs else None)


def _f(v, digits=4) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _g(v) -> str:
    """Three significant figures: a sharpness of 2.6e-4 or 5.4e-6 keeps its digits (fixed decimals round it to 0)."""
    return "-" if v is None else f"{v:.3g}" if isinstance(v, float) else str(v)


def _pm(mean, std) -> str:
    return "-" if mean is None else f"{mean:.4f} ± {std:.4f}"


def _p(p) -> str:
    if p is None:
        return "-"
    stars = "**" if p < 0.01 else "*" if p < 0.05 else ""
    return f"{p:.3g}{stars}"


def markdown(runs, keys, table1, table2, baseline, root, filters: Filters = Filters(), read: int | None = None) -> str:
    selected = f" Selected by {filters.describe()}: {len(runs)} of the {read} runs read." if filters else ""
    out = [f"# Report: {root}", "",
           f"{len(runs)} runs, {sum(r.finished for r in runs)} finished. Grouped by: {', '.join(keys) or '(nothing differs)'}."
           f" Test accuracy is measured at each run's best-validation epoch.{selected}", "", "## Runs", ""]
    cols = ["run", *keys, "seed", "best val acc", "test acc at best", "final train loss", "final val loss",
            "best epoch", "wall s", *(["sharpness"] if "sharpness" in table1[0] else []), "status"]
    out += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in table1:
        vals = list(row.values())
        out.append("| " + " | ".join(_f(v, 1) if c == "wall s" else _g(v) if c == "sharpness" else _f(v)
                                     for c, v in zip(cols, vals)) + " |")
    holm_m = max((g.get("holm", 0) for g in table2), default=0)
    p = ", Holm" if holm_m else ""
    out += ["", f"## Groups (seed left out; baseline: `{baseline}`)", "",
            f"| group | n | val acc | test acc | Δ val | p (val{p}) | Δ test | p (test{p}) |",
            "|---|---|---|---|---|---|---|---|"]
    for g in table2:
        n = f"{g['n']}" if g["n"] == g["of"] else f"{g['n']} of {g['of']} (left out: {', '.join(g['left_out'])})"
        name = f"**{g['group']}** (baseline)" if g["group"] == baseline else g["group"]
        out.append(f"| {name} | {n} | {_pm(g['val_mean'], g['val_std'])} | {_pm(g['test_mean'], g['test_std'])} | "
                   f"{_f(g.get('d_val'))} | {_p(g.get('p_val'))} | {_f(g.get('d_test'))} | {_p(g.get('p_test'))} |")
    out += ["", "Mean ± sample std over the finished runs of each group. p: Welch's two-sided t-test against the "
            "baseline group (* p < 0.05, ** p < 0.01); with few seeds, read it as a hint, not a verdict."]
    if holm_m:
        out += ["", f"Holm's correction is applied: {holm_m} groups are tested against the baseline, and each p shown "
                "is Holm-adjusted (Holm-Bonferroni), so that the chance of any false difference among them stays "
                "under the level read. Unadjusted: "
                + "; ".join(f"{g['group']} {_p(g.get('p_val_raw'))} (val), {_p(g.get('p_test_raw'))} (test)"
                            for g in table2 if "holm" in g) + "."]
    return "\n".join(out) + "\n"


def plot(runs: list[Run], keys: list[str], table2: list[dict], out: Path) -> list[tuple[Path, bytes]]:
    """The two figures, as PNG files' paths and contents (written with the report, all together)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: dict[str, list[Run]] = {}
    for r in runs:
        if r.finished:
            groups.setdefault(group_label(r, keys), []).append(r)
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    for label, members in groups.items():
        histories = [h for h in (r.history() for r in members) if h]
        if not histories:
            continue
        epochs = sorted(set.intersection(*({int(row["epoch"]) for row in h} for h in histories)))
        for ax, metric in zip(axes, ("val/acc", "val/loss")):
            series = [[{int(row["epoch"]): row[metric] for row in h}[e] for e in epochs] for h in histories]
            mean = [statistics.mean(col) for col in zip(*series)]
            line = ax.plot(epochs, mean, label=f"{label} (n={len(series)})", linewidth=1.4)[0]
            ax.fill_between(epochs, [min(c) for c in zip(*series)], [max(c) for c in zip(*series)],
                            color=line.get_color(), alpha=0.2, linewidth=0)
    for ax, title in zip(axes, ("validation accuracy", "validation loss")):
        ax.set_xlabel("epoch")
        ax.set_title(f"{title} (mean, min-max over seeds)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    curves = (out / "curves.png", _png(fig))

    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(table2) + 2), 4.5))
    for i, g in enumerate(table2):
        members = groups.get(g["group"], [])
        points = [_get(r.metrics, "test_at_best", "acc") for r in members]
        points = [p for p in points if p is not None]
        ax.scatter([i] * len(points), points, s=12, color="gray", alpha=0.7, zorder=2)
        if g["test_mean"] is not None:
            ax.errorbar([i], [g["test_mean"]], yerr=[g["test_std"]], fmt="o", color="C0", capsize=5, zorder=3)
    ax.set_xticks(range(len(table2)), [g["group"] for g in table2], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("test accuracy at best validation epoch")
    ax.set_title("test accuracy per group (each seed; mean ± std)")
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    points = (out / "test_acc.png", _png(fig))
    return [curves, points]


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def writable_folder(out: Path) -> list[Path]:
    """``out``, made if needed and checked writable; the folders made (the outermost first)."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a folder for report.md, report.csv and the plots")
    from reg_runner.callbacks import make_folder

    kinds.refuse_other_than(out, (kinds.RUN, kinds.SWEEP), "give another --out for the report")
    made = make_folder("--out", out)
    try:
        probe = out / ".reg_runner_write_test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        signals.remove_empty(made)
        raise UserError(f"--out {out} cannot be written ({e.strerror}); give a writable folder") from None
    return made


def _folder(text: str) -> Path:
    """``--out``: a folder's path; an empty one would quietly mean the current folder."""
    if not text.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not allowed: a folder path (empty would mean the current "
                                         "folder)")
    return Path(text)


def report(root: Path, out: Path | None = None, baseline: str | None = None, plots: bool = True,
           made: list | None = None, filters: Filters = Filters(), storage: str | None = None) -> str:
    """The report of the runs below ``root`` that ``filters`` select, written to ``out`` (default ``root``);
    ``made``: gets the folders made for it."""
    kinds.refuse_other_than(root, (kinds.RUN, kinds.SWEEP), "give a run folder, a sweep folder, or any folder "
                            "above runs")
    runs = find_runs(root)
    if not runs:
        raise UserError(f"no run folder below {root} (a run folder holds metrics.json or .hydra/)")
    read = len(runs)
    runs = select(runs, filters)
    if not runs:
        raise UserError(f"no run below {root} matches {filters.describe()} ({read} runs read)")
    grouped_by = choose_settings(runs)
    keys = varying_keys(runs)
    table1 = [run_row(r, keys, sharpness=any(r.sharpness is not None for r in runs)) for r in runs]
    table2, baseline = group_rows(runs, keys, baseline)  # a --baseline that matches no group: before --out is made
    out = out or root
    text = markdown(runs, keys, table1, table2, baseline, root, filters, read)
    if grouped_by != "overrides":
        text = text.replace("Grouped by:", "Grouped by (their resolved configs differ where their overrides do not):", 1)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(table1[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(table1)
    images = plot(runs, keys, table2, out) if plots and any(r.finished for r in runs) else []
    for png, _ in images:
        text += f"\n![{png.stem}]({png.name})\n"
    from reg_runner.sweep import analysis

    searched, section = analysis.search(root, out, storage, plots)  # an Optuna search's figures and trials
    text += section
    (made if made is not None else []).extend(writable_folder(out))
    with signals.deferred(hold=True):  # the report's files together: all of them, or none
        atomic.write_text(out / "report.csv", buf.getvalue())
        for png, data in images + searched:
            atomic.write_bytes(png, data)
        atomic.write_text(out / "report.md", text)
    return text


def main(argv=None) -> None:
    parser = Parser(prog="python -m reg_runner.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("path", type=Path, help="a run folder, a sweep folder, or any folder above runs")
    parser.add_argument("--out", type=_folder, default=None, help="where to write report.md/csv/png (default: path)")
    parser.add_argument("--baseline", default=None, help="the group, or one key=value of it, to compare against")
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument("--where", action="append", default=[], metavar="KEY=VALUE",
                        help="only the runs whose resolved config has this value at this dotted key (repeatable: all "
                             "must hold), e.g. --where model.norm=batchnorm")
    parser.add_argument("--status", action="append", default=[], metavar="STATUS",
                        help=f"only the runs of this status (repeatable: any of them): {', '.join(STATUSES)}")
    parser.add_argument("--tag", action="append", default=[], metavar="TAG",
                        help="only the runs that carry this tag (tags=[...] when they ran; repeatable: all of them)")
    parser.add_argument("--storage", default=None, metavar="URL",
                        help="an Optuna search's database URL, where its records hide the password")
    args = parser.parse_args(argv)
    made: list[Path] = []
    state = {"written": False}
    written = (args.out or args.path) / "report.md"
    with signals.command(lambda: f"after the report was written: {written}" if state["written"] else
                         "before the report was written; nothing was written", made), exit_on_user_error():
        if not args.path.is_dir():
            raise UserError(f"{args.path} is not a folder; give a run folder, a sweep folder, or any folder above runs")
        filters = parse_filters(args.where, args.status, args.tag)
        text = report(args.path, args.out, args.baseline, plots=not args.no_plots, made=made, filters=filters,
                      storage=args.storage)
        state["written"] = True
        signals.stop_if_caught()  # a signal while the files were written: they are whole, and said so
        print(text)
        print(f"written: {written}", file=sys.stderr)


if __name__ == "__main__":
    main()
