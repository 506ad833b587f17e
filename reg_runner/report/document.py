"""The report as a sequence of blocks (headings, paragraphs, tables, figures), its numbers formatted once, and
their markdown (what the terminal shows and ``report.md`` holds; ``html`` renders the same blocks as a page). And
the runs table's rows as ``report.csv`` has them."""

import os
from collections import namedtuple
from pathlib import Path
from urllib.parse import quote

from reg_runner.report.runs import Filters, Run
from reg_runner.report.stats import Effects, Estimate

# the blocks (a paragraph is a str), and a table's cell that links
Link = namedtuple("Link", "text href")
Heading = namedtuple("Heading", "text level", defaults=[2])
Table = namedtuple("Table", "columns rows")  # cells: text or Link
Figure = namedtuple("Figure", "path data")  # a PNG's path and bytes
# markdown another part wrote (a search's analysis), kept as it is in report.md, and its figures' (path, bytes) for
# a page that embeds them
Text = namedtuple("Text", "markdown figures")


def run_row(run: Run, keys: list[str], sharpness: bool = False) -> dict:
    """A run's row of report.csv (its folder's whole name in ``run``) and of the runs table."""
    row = {
        "run": run.name,
        **{k: run.settings.get(k, "-") for k in keys},
        "seed": run.seed,
        "best_val_acc": run.number("best", "val/acc"),
        "test_acc_at_best": run.number("test_at_best", "acc"),
        "final_train_loss": run.number("final", "train/loss"),
        "final_val_loss": run.number("final", "val/loss"),
        "best_epoch": run.number("best_epoch"),
        "wall_s": run.number("timing", "wall_s"),
    }
    if sharpness:  # the loss rise at a fixed filter-normalized radius around the checkpoint (landscape.json)
        row["sharpness"] = run.sharpness
    return {**row, "status": run.status}


def _f(v, spec=".4f") -> str:
    return "-" if v is None else f"{v:{spec}}" if isinstance(v, float) else str(v)


def _pm(mean, std) -> str:
    return "-" if mean is None else f"{mean:.4f} ± {std:.4f}"


def _p(p) -> str:
    if p is None:
        return "-"
    stars = "**" if p < 0.01 else "*" if p < 0.05 else ""
    return f"{p:.3g}{stars}"


def _interval(e: Estimate) -> str:
    return "-" if e.half is None else f"[{e.value - e.half:+.4f}, {e.value + e.half:+.4f}]"


def runs_table(runs: list[Run], rows: list[dict], keys: list[str], out: Path) -> Table:
    """Each run by its job number and seed, linked to its folder (relative to the report's folder)."""
    columns = ["run", *list(rows[0])[1:]] if rows else ["run"]
    cells = []
    for run, row in zip(runs, rows):
        href = quote(os.path.relpath(run.path, out) + "/") if run.path is not None else ""
        # a sharpness in 3 significant figures: 2.6e-4 or 5.4e-6 keeps its digits (fixed decimals round it to 0)
        cells.append([Link(run.short, href), *(_f(v, {"wall_s": ".1f", "sharpness": ".3g"}.get(c, ".4f"))
                                               for c, v in list(row.items())[1:])])
    return Table([c if c in keys else c.replace("_", " ") for c in columns], cells)


def groups_table(groups: list[dict], keys: list[str], baseline: str | None, holm_m: int) -> Table:
    p = ", Holm" if holm_m else ""
    columns = [*(keys or ["group"]), "n", "val acc", "test acc", "Δ val", f"p (val{p})", "Δ test", f"p (test{p})"]
    rows = []
    for g in groups:
        n = f"{g['n']}" if g["n"] == g["of"] else f"{g['n']} of {g['of']} (left out: {', '.join(g['left_out'])})"
        against = ["baseline"] * 4 if g["group"] == baseline else [
            _f(g.get("d_val")), _p(g.get("p_val")), _f(g.get("d_test")), _p(g.get("p_test"))]
        rows.append([*(g["values"] if keys else [g["group"]]), n, _pm(g["val_mean"], g["val_std"]),
                     _pm(g["test_mean"], g["test_std"]), *against])
    return Table(columns, rows)


def effects_blocks(effects: Effects, pairs: list[tuple[str, str]]) -> list:
    rows = effects.main_effects()
    out = [Heading("Main effects (test accuracy at best)"),
           Table(["key", "level", "against", "Δ test acc", "95% interval", "p (Holm)"],
                 [[r["key"], r["level"], r["reference"], f"{r['effect'].value:+.4f}", _interval(r["effect"]),
                   _p(r.get("p"))] for r in rows])]
    note = (f"A level's effect: the mean of its cells minus the mean of the reference level's cells, each cell (one "
            f"combination of the keys' levels) its seeds' mean, every combination of the other keys weighted alike. "
            f"Intervals: Student's t at 95% from the seeds' spread within the cells ({effects.df} degrees of freedom); "
            f"p: two-sided, Holm-adjusted across the {len(rows)} effects.")
    if effects.s2 is None:
        note = "One run per combination: no seed-to-seed spread, so no intervals and no p-values (run 2 seeds or more)."
    out.append(note)
    shown = [(a, b, e) for a, b in pairs if (e := effects.interaction(a, b)) is not None]
    if shown:
        out += [Heading("Interactions", 3),
                Table(["keys", "interaction", "95% interval", "p"],
                      [[f"{a} × {b}", f"{e.value:+.4f}", _interval(e), _p(e.p)] for a, b, e in shown]),
                "Interaction: the effect of the second key at the first's other level minus its effect at the "
                "first's reference level; 0 where the two effects add up. p: two-sided, not adjusted."]
    return out


def build(runs: list[Run], keys: list[str], run_rows: list[dict], groups: list[dict], baseline: str | None,
          root: Path, out: Path, filters: Filters, read: int, by_configs: bool, design_line: str | None) -> list:
    """The report's blocks, figures left out (they follow the tables)."""
    selected = f" Selected by {filters.describe()}: {len(runs)} of the {read} runs read." if filters else ""
    by = "Grouped by (their resolved configs differ where their overrides do not):" if by_configs else "Grouped by:"
    holm_m = max((g.get("holm", 0) for g in groups), default=0)
    blocks = [Heading(f"Report: {root}", 1),
              f"{len(runs)} runs, {sum(r.trained for r in runs)} trained to the end. {by} "
              f"{', '.join(keys) or '(nothing differs)'}."
              f" Test accuracy is measured at each run's best-validation epoch.{selected}",
              Heading("Runs"), runs_table(runs, run_rows, keys, out),
              Heading(f"Groups (seed left out; baseline: `{baseline}`)"), groups_table(groups, keys, baseline, holm_m),
              "Mean ± sample std over the runs of each group trained to the end. p: Welch's two-sided t-test against "
              "the baseline group (* p < 0.05, ** p < 0.01); with few seeds, read it as a hint, not a verdict."]
    if holm_m:
        blocks.append(f"Holm's correction is applied: {holm_m} groups are tested against the baseline, and each p "
                      "shown is Holm-adjusted (Holm-Bonferroni), so that the chance of any false difference among them "
                      "stays under the level read."
                      + (" Unadjusted: " + "; ".join(f"{g['group']} {_p(g.get('p_val_raw'))} (val), "
                                                     f"{_p(g.get('p_test_raw'))} (test)" for g in groups if "holm" in g)
                         + "." if holm_m <= 8 else ""))
    return blocks + ([design_line] if design_line else [])


def _markdown_cell(cell) -> str:
    text = f"[{cell.text}]({cell.href})" if isinstance(cell, Link) and cell.href else getattr(cell, "text", cell)
    return str(text).replace("|", "\\|")


def markdown(blocks: list) -> str:
    out = []
    for block in blocks:
        if isinstance(block, Heading):
            out += [f"{'#' * block.level} {block.text}", ""]
        elif isinstance(block, Table):
            out += ["| " + " | ".join(block.columns) + " |", "|" + "---|" * len(block.columns)]
            out += ["| " + " | ".join(map(_markdown_cell, row)) + " |" for row in block.rows]
            out.append("")
        elif isinstance(block, Figure):
            out += [f"![{block.path.stem}]({block.path.name})", ""]
        elif isinstance(block, Text):
            out.append(block.markdown)
        else:
            out += [block, ""]
    return "\n".join(out).rstrip("\n") + "\n"
