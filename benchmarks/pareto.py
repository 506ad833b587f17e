"""The figure of docs/search.md's Pareto study: test accuracy against parameters, every complete trial of a
two-objective search, its front marked, MLPs and CNNs apart, L1 on or off.

    python -m reg_runner --multirun hparams_search=pareto
    python benchmarks/pareto.py outputs/optuna/pareto --out docs/pareto_front.png

The search chose on validation accuracy; the test accuracy drawn is each trial's at its runs' best-validation
epochs, read afterwards (the test set steered nothing). Prints one line per trial of the front.
"""

import argparse
import sys
from pathlib import Path

import optuna

from reg_runner.records import RunFolder
from reg_runner.sweep.analysis import trial_dirs


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep", type=Path, help="the search's folder (with study.db)")
    parser.add_argument("--study", default="pareto")
    parser.add_argument("--out", type=Path, default=Path("pareto_front.png"))
    args = parser.parse_args(argv)
    if not (args.sweep / "study.db").is_file():
        sys.exit(f"error: {args.sweep / 'study.db'} does not exist: give the folder of a finished search")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=args.study, storage=f"sqlite:///{args.sweep / 'study.db'}")
    front = {t.number for t in study.best_trials}
    points = []
    for t in study.get_trials(deepcopy=False):
        if t.state.name != "COMPLETE":
            continue
        records = [RunFolder(Path(d)).recorded() or {} for d in trial_dirs(t)]
        tests = [(m.get("test_at_best") or {}).get("acc") for m in records]
        if not tests or None in tests:
            continue
        points.append(dict(number=t.number, params=t.values[1], val=t.values[0], test=sum(tests) / len(tests),
                           family=t.params.get("model", "mlp"), l1=bool(t.params.get("search.l1")),
                           on_front=t.number in front, near_zero=(records[0].get("size") or {}).get("near_zero"),
                           described=", ".join(f"{k}={_short(v)}" for k, v in t.params.items()
                                               if not k.startswith("search."))))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for family, marker in (("mlp", "o"), ("cnn", "s")):
        for l1, fill in ((False, "tab:blue"), (True, "tab:orange")):
            chosen = [p for p in points if p["family"] == family and p["l1"] == l1]
            if chosen:
                ax.scatter([p["params"] for p in chosen], [p["test"] for p in chosen], marker=marker, c=fill,
                           s=36, alpha=0.6, label=f"{family.upper()}, L1 {'on' if l1 else 'off'}")
    on = sorted((p for p in points if p["on_front"]), key=lambda p: p["params"])
    ax.plot([p["params"] for p in on], [p["test"] for p in on], color="black", linewidth=1, zorder=0)
    ax.scatter([p["params"] for p in on], [p["test"] for p in on], facecolors="none", edgecolors="black", s=110,
               label="Pareto front (chosen on val/acc)")
    ax.set_xscale("log")
    ax.set_xlabel("parameters (log scale)")
    ax.set_ylabel("test accuracy at the best-validation epoch")
    ax.set_title(f"{len(points)} trials of {args.study}: accuracy against size")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"written: {args.out}")
    for p in sorted(on, key=lambda p: p["params"]):
        print(f"trial {p['number']}: {p['params']:,.0f} parameters, val/acc {p['val']:.4f}, test/acc {p['test']:.4f}, "
              f"near-zero weights {p['near_zero']:.1%}; {p['described']}")


def _short(v):
    return f"{v:.3g}" if isinstance(v, float) else v


if __name__ == "__main__":
    main()
