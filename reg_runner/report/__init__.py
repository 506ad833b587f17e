"""Compare runs: tables with mean ± std over seeds, main effects of a factorial design, and figures, from the runs'
own records.

Every run folder below the path is read from its own records (``runs``), the report built as blocks (``document``):
what it selects, holds and writes: docs/study.md; a search's analysis added: docs/search.md.
"""

import argparse
import csv
import io
import sys
from pathlib import Path

from reg_runner import atomic, kinds, signals
from reg_runner.figures import to_png
from reg_runner.errors import Parser, UserError, exit_on_user_error, folder_arg, masked
from reg_runner.records import make_folder
from reg_runner.report import html, stats
from reg_runner.report.document import Figure, Heading, Text, build, effects_blocks, markdown, run_row
from reg_runner.report.groups import by_group, choose_settings, design, varying_keys
from reg_runner.report.plots import DPI, curves, dots, interaction, main_effects
from reg_runner.report.runs import STATUSES, Filters, find_runs, parse_filters, select
from reg_runner.sweep import analysis
from reg_runner.trainer.trial import database_refused


def writable_folder(out: Path, made: list) -> None:
    """``out``, made if needed and checked writable; ``made`` gets the folders it makes (the outermost first)."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a folder for report.md, report.csv and the plots")
    kinds.refuse_other_than(out, (kinds.RUN, kinds.SWEEP), "give another --out for the report")
    new = make_folder("--out", out, into=made)
    try:
        probe = out / ".reg_runner_write_test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        signals.remove_empty(new)
        raise UserError(f"--out {out} cannot be written ({e.strerror}); give a writable folder") from None


def _check_keys(facet, interactions, keys, shape, plots: bool) -> None:
    """``--facet`` and ``--interaction`` name keys the runs vary in, an interaction's of a factorial design."""
    allowed = f"one of the keys the runs vary in ({', '.join(keys) or 'none'})"
    if facet is not None and not plots:
        raise UserError(f"--facet {facet!r} is not allowed with --no-plots: it arranges the curves' figure")
    if facet is not None and facet not in keys:
        raise UserError(f"--facet {facet!r} is not allowed: {allowed}")
    for a, b in interactions:
        given = f"--interaction {a} {b}"
        if a not in keys or b not in keys or a == b:
            raise UserError(f"{given} is not allowed: two different keys, each {allowed}")
        if not shape.factorial:
            raise UserError(f"{given} is not allowed: the runs are not a factorial design ({len(shape.missing)} "
                            "combinations of their keys have no run trained to the end)")


def report(root: Path, out: Path | None = None, baseline: str | None = None, plots: bool = True,
           made: list | None = None, filters: Filters = Filters(), storage: str | None = None,
           facet: str | None = None, interactions: list | tuple = ()) -> str:
    """The report of the runs below ``root`` that ``filters`` select, written to ``out`` (default ``root``);
    ``made``: gets the folders made for it. Returns its markdown."""
    kinds.refuse_other_than(root, (kinds.RUN, kinds.SWEEP), "give a run folder, a sweep folder, or any folder "
                            "above runs")
    runs = find_runs(root)
    if not runs:
        raise UserError(f"no run folder below {root} (a run folder holds metrics.json or .hydra/)")
    read = len(runs)
    runs = select(runs, filters)
    if not runs:
        raise UserError(f"no run below {root} matches {filters.describe()} ({read} runs read)")
    by_configs = choose_settings(runs) != "overrides"
    keys = varying_keys(runs)
    groups = by_group(runs, keys)
    shape = design(groups, keys)
    _check_keys(facet, interactions, keys, shape, plots)
    rows, baseline = stats.group_rows(groups, shape, baseline)  # a --baseline that matches no group: before --out
    out = out or root
    table = [run_row(r, keys, sharpness=any(r.sharpness is not None for r in runs)) for r in runs]
    blocks = build(runs, keys, table, rows, baseline, root, out, filters, read, by_configs,
                   shape.describe() if len(keys) > 1 else None)
    effects = stats.effects(rows, shape, baseline) if shape.factorial else None
    if drawn := plots and any(r.trained for r in runs):
        figures = {"test_acc": dots(rows, keys, baseline), "curves": curves(rows, groups, keys, baseline, facet)}
        figures = [Figure(out / f"{name}.png", to_png(fig, DPI)) for name, fig in figures.items() if fig is not None]
        blocks += [Heading("Figures"), *figures] if figures else []
    if effects is not None:
        blocks += effects_blocks(effects, list(interactions))
        if drawn:
            blocks.append(Figure(out / "main_effects.png", to_png(main_effects(effects), DPI)))
            blocks += [Figure(out / f"interaction_{a}_{b}.png", to_png(interaction(effects, a, b), DPI))
                       for a, b in interactions]
    searched, section = analysis.search(root, out, storage, plots)  # an Optuna search's figures and trials
    text = markdown(blocks) + section
    page = html.page(blocks + ([Text(section, [f for f in searched if f[0].suffix == ".png"])] if section else []),
                     f"Report: {root}")
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(table[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(table)
    writable_folder(out, made if made is not None else [])
    with signals.deferred(hold=True):  # the report's files together: all of them, or none
        atomic.write_text(out / "report.csv", buf.getvalue())
        for path, data in [f for f in blocks if isinstance(f, Figure)] + searched:  # a Figure is (path, data)
            atomic.write_bytes(path, data)
        atomic.write_text(out / "report.html", page)
        atomic.write_text(out / "report.md", text)
    return text


def _storage(text: str) -> str:
    """``--storage``: a database URL SQLAlchemy reads, whose driver is installed (one that is not is no study)."""
    if refused := database_refused(text):
        raise argparse.ArgumentTypeError(f"{masked(text)!r} is not allowed: {refused}")
    return text


def main(argv=None) -> None:
    parser = Parser(prog="python -m reg_runner.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("path", type=Path, help="a run folder, a sweep folder, or any folder above runs")
    parser.add_argument("--out", type=folder_arg, default=None,
                        help="where to write report.md/html/csv and the figures (default: path)")
    parser.add_argument("--baseline", default=None, help="the group, or one key=value of it, to compare against")
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument("--facet", default=None, metavar="KEY",
                        help="curves: one panel per level of this key (one the runs vary in)")
    parser.add_argument("--interaction", action="append", nargs=2, default=[], metavar=("A", "B"),
                        help="a factorial design: the mean test accuracy at each level of A, a line per level of B "
                             "(repeatable)")
    parser.add_argument("--where", action="append", default=[], metavar="KEY=VALUE",
                        help="only the runs whose resolved config has this value at this dotted key (repeatable: all "
                             "must hold), e.g. --where model.norm=batchnorm")
    parser.add_argument("--status", action="append", default=[], metavar="STATUS",
                        help=f"only the runs of this status (repeatable: any of them): {', '.join(STATUSES)}")
    parser.add_argument("--tag", action="append", default=[], metavar="TAG",
                        help="only the runs that carry this tag (tags=[...] when they ran; repeatable: all of them)")
    parser.add_argument("--storage", default=None, metavar="URL", type=_storage,
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
                      storage=args.storage, facet=args.facet, interactions=[tuple(p) for p in args.interaction])
        state["written"] = True
        signals.stop_if_caught()  # a signal while the files were written: they are whole, and said so
        print(text)
        print(f"written: {written}", file=sys.stderr)
