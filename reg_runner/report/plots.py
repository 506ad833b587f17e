"""The report's figures, ``test_acc.png``, ``curves.png``, ``main_effects.png``, ``interaction_A_B.png``: what each
shows, legible from 2 groups to 100 with no legend, docs/study.md, "Figures"."""

import math
import statistics

from reg_runner.records import RunFolder
from reg_runner.report.runs import Run
from reg_runner.report.stats import Effects

DPI = 110
MAX_WIDTH = 22.5  # inches: 2,475 pixels at DPI
BEST = 5  # curves: the groups drawn besides the baseline, when there are more
CHAR = 0.062  # inches per character of 8-point text, about: what a label column needs
FONT = 7  # the names at the lines' ends


def _figure(width: float, height: float):
    from matplotlib.figure import Figure  # no pyplot: no global figure to close, no GUI backend

    return Figure(figsize=(min(width, MAX_WIDTH), height), dpi=DPI, layout="constrained")


def _name_ends(ax, ends: list[tuple[float, str, str]], height: float) -> None:
    """Name each line (its last y, text, colour) right of the axes at its end's height, spread apart so that no
    two names overlap; ``height``: the axes' height in inches, about."""
    lo, hi = ax.get_ylim()
    ax.set_ylim(lo, hi)  # the names are placed for these limits
    gap = 1.25 * FONT / 72 / height
    order = sorted(range(len(ends)), key=lambda i: ends[i][0])
    place, floor = {}, -math.inf
    for i in order:
        floor = place[i] = max((ends[i][0] - lo) / (hi - lo), floor + gap)
    ceiling = 1.0
    for i in reversed(order):
        place[i] = min(place[i], ceiling)
        ceiling = place[i] - gap
    for i, (y, text, colour) in enumerate(ends):
        ax.annotate(text, xy=(1, y), xycoords=("axes fraction", "data"), xytext=(1.04, place[i]),
                    textcoords="axes fraction", va="center", fontsize=FONT, color=colour,
                    arrowprops={"arrowstyle": "-", "color": colour, "lw": 0.5, "shrinkA": 0, "shrinkB": 0})


def _label(group: dict, keys: list[str], skip: int | None = None) -> str:
    return " · ".join(v for i, v in enumerate(group["values"]) if i != skip) if keys else group["group"]


def dots(groups: list[dict], keys: list[str], baseline: str | None):
    """None where no group has a test accuracy."""
    shown = sorted((g for g in groups if g["tests"]), key=lambda g: g["test_mean"])  # the best at the top
    if not shown:
        return None
    labels = [_label(g, keys) for g in shown]
    header = " · ".join(keys) or "group"
    fig = _figure(5.5 + CHAR * max(map(len, [*labels, header])), 1.4 + 0.24 * len(shown))
    ax = fig.add_subplot()
    for i, g in enumerate(shown):
        ax.scatter(g["tests"], [i] * len(g["tests"]), s=14, color="0.55", linewidths=0, zorder=4)  # over the bar
        ci = None if g["test_ci"] is None else [[g["test_ci"]], [g["test_ci"]]]
        ax.errorbar([g["test_mean"]], [i], xerr=ci, fmt="o", ms=5, capsize=3, zorder=3,
                    color="C3" if g["group"] == baseline else "C0")
    ax.set_yticks(range(len(shown)), labels, fontsize=8)
    ax.set_ylim(-0.6, len(shown) - 0.4)
    reach = [x for g in shown for x in (*g["tests"], g["test_mean"] - (g["test_ci"] or 0),
                                         g["test_mean"] + (g["test_ci"] or 0))]
    low, high = max(min(reach), 0.0), min(max(reach), 1.0)  # an interval past an accuracy of 0 or 1 runs off the axis
    pad = 0.04 * (high - low) or 0.005
    ax.set_xlim(low - pad, high + pad)
    ax.annotate(header, xy=(0, 1), xycoords="axes fraction", xytext=(-6, 4), textcoords="offset points",
                ha="right", va="bottom", fontsize=8, fontweight="bold")
    ax.grid(axis="x", alpha=0.3)
    ax.set_xlabel("test accuracy at the best-validation epoch")
    ax.set_title("each seed (grey); the mean and its 95% interval (red: the baseline)", fontsize=9, loc="right")
    return fig


def _curve(members: list[Run]) -> dict | None:
    """The mean, min and max over the seeds of validation accuracy and loss, on the epochs every seed has."""
    histories = [h for h in (RunFolder(r.path).read_history() for r in members) if h]
    if not histories:
        return None
    epochs = sorted(set.intersection(*({int(row["epoch"]) for row in h} for h in histories)))
    out = {"epochs": epochs}
    for metric in ("val/acc", "val/loss"):
        series = [[{int(row["epoch"]): row[metric] for row in h}[e] for e in epochs] for h in histories]
        out[metric] = [(statistics.mean(c), min(c), max(c)) for c in zip(*series)]
    return out


def curves(groups: list[dict], members: dict[str, list[Run]], keys: list[str], baseline: str | None,
           facet: str | None = None):
    """None where no run trained to the end has a readable history.csv."""
    drawn = {g["group"]: c for g in groups if (c := _curve([r for r in members[g["group"]] if r.trained]))}
    if not drawn:
        return None
    skip = keys.index(facet) if facet else None
    levels = list(dict.fromkeys(g["values"][skip] for g in groups)) if facet else [None]
    base = [(g, "0.45", "baseline") for g in groups if g["group"] == baseline and baseline in drawn]
    panels = []  # (level, [(group, colour, name)], how many groups the panel could show)
    for level in levels:
        own = [g for g in groups if g["group"] in drawn and g["group"] != baseline
               and (level is None or g["values"][skip] == level)]
        best = sorted(own, key=lambda g: -(g["val_mean"] or 0))[:BEST]  # validation chooses, never the test set
        panels.append((level, [(g, f"C{i}", _label(g, keys, skip)) for i, g in enumerate(best)] + base, len(own)))
    width = (4.6 + CHAR * max(len(name) for _, shown, _ in panels for _, _, name in shown)) * len(panels) + 0.8
    height = 6.2
    fig = _figure(width, height)
    axes = fig.subplots(2, len(panels), sharex=True, sharey="row", squeeze=False)
    metrics = ("val/acc", "val/loss")
    for col, (level, shown, n) in enumerate(panels):
        for ax, metric in zip(axes[:, col], metrics):
            for g, colour, _ in shown:
                c = drawn[g["group"]]
                mean, low, high = zip(*c[metric])
                ax.plot(c["epochs"], mean, color=colour, lw=1.3, ls="--" if g["group"] == baseline else "-")
                ax.fill_between(c["epochs"], low, high, color=colour, alpha=0.15, linewidth=0)
            ax.margins(x=0)
            ax.grid(alpha=0.3)
        note = f"the best {len(shown) - len(base)} of {n} by validation accuracy" if n > len(shown) - len(base) else ""
        title = (f"{facet} = {level}" + (f" ({note})" if note else "")) if facet else note
        axes[0, col].set_title(title, fontsize=9)
        axes[1, col].set_xlabel("epoch")
    axes[0, 0].set_ylabel("validation accuracy")
    axes[1, 0].set_ylabel("validation loss")
    for row, metric in zip(axes, metrics):  # the first tenth of the epochs runs off: the rest is what differs
        later = [v for _, shown, _ in panels for g, _, _ in shown
                 for point in drawn[g["group"]][metric][len(drawn[g["group"]]["epochs"]) // 10:] for v in point]
        pad = 0.05 * (max(later) - min(later)) or 0.01
        row[0].set_ylim(min(later) - pad, max(later) + pad)
    for col, (_, shown, _) in enumerate(panels):  # once every panel of a row is drawn: its limits are final
        for ax, metric in zip(axes[:, col], metrics):
            _name_ends(ax, [(drawn[g["group"]][metric][-1][0], name, colour) for g, colour, name in shown],
                       height / 2 - 0.6)
    header = " · ".join(k for k in keys if k != facet)
    fig.suptitle(f"mean over seeds, band: min-max; lines named by {header or 'group'}", fontsize=9)
    return fig


def main_effects(effects: Effects):
    keys = effects.design.keys
    longest = max(len(v) for k in keys for v in effects.design.levels[k])
    most = max(len(effects.design.levels[k]) for k in keys)
    fig = _figure(max(6.5, 1.2 + max(2.2, 1.2 * CHAR * longest * most) * len(keys)), 3.8)
    axes = fig.subplots(1, len(keys), sharey=True, squeeze=False)[0]
    grand = effects.mean().value
    for ax, k in zip(axes, keys):
        levels = effects.design.levels[k]
        est = [effects.mean({k: level}) for level in levels]
        ax.errorbar(range(len(levels)), [e.value for e in est], yerr=[e.half or 0 for e in est], fmt="o-", capsize=4,
                    color="C0")
        ax.axhline(grand, color="0.6", ls="--", lw=0.8)
        ax.set_xticks(range(len(levels)), levels, fontsize=8)
        ax.set_xlim(-0.5, len(levels) - 0.5)
        ax.set_title(k, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("mean test accuracy")
    fig.suptitle("main effects: each level's mean over the other keys and the seeds,\n95% intervals "
                 "(dashed: the mean of all)", fontsize=9)
    return fig


def interaction(effects: Effects, a: str, b: str):
    la, lb = effects.design.levels[a], effects.design.levels[b]
    names = [f"{b} = {v}" for v in lb]
    fig = _figure(2.6 + 1.3 * len(la) + CHAR * max(map(len, names)), 3.8)
    ax = fig.add_subplot()
    ends = []
    for j, vb in enumerate(lb):
        xs = [i + (j - (len(lb) - 1) / 2) * 0.05 for i in range(len(la))]  # apart, so that the bars do not hide
        est = [effects.mean({a: va, b: vb}) for va in la]
        ax.errorbar(xs, [e.value for e in est], yerr=[e.half or 0 for e in est], fmt="o-", capsize=4, color=f"C{j}")
        ends.append((est[-1].value, names[j], f"C{j}"))
    ax.set_xticks(range(len(la)), la, fontsize=8)
    ax.set_xlim(-0.25, len(la) - 0.75)
    ax.set_xlabel(a)
    ax.set_ylabel("mean test accuracy")
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(f"{a} × {b}: means over the other keys and the seeds, 95% intervals\n(parallel lines: the effects "
                 "add up)", fontsize=9)
    _name_ends(ax, ends, 2.6)
    return fig
