"""Replay a finished unpruned search through Optuna's pruners: which epochs each would have saved,
and whether it would have kept the search's best trial.

    python benchmarks/prune_replay.py outputs/optuna/prune_none --n-jobs 8

A search without a pruner trains every trial to the end, so its run folders hold each trial's whole
curve (history.csv) and the stack it trained in (environment.json). This replays those curves as
reg_runner's sweeper ran them: trials in batches of ``--n-jobs`` (the search's hydra.sweeper.n_jobs),
told when the whole batch is done; in a batch, one stack after another (a lone run is a stack of one);
in a stack, epoch by epoch, each trial recording its runs' mean best objective so far (what
``reg_runner/trainer/trial.py`` records) and asking the pruner. Runs side by side in other processes
(joblib, SLURM) are replayed one after another, which they were not. Only the pruner is replayed, not the sampler: a real pruned
search also feeds its pruned trials to TPE, which then samples other trials. So the figures rank
pruner settings on one population of trials; confirm the chosen one with a real search.

Each row: the pruner and its keys, the trials it pruned, the epochs trained against the unpruned
search's, and the best value among the trials it let finish (and the rank of that trial in the
unpruned search).
"""

import argparse
import csv
import itertools
import json
import math
from dataclasses import dataclass
from pathlib import Path

import optuna
import yaml

from reg_runner.errors import Parser, refuse
from reg_runner.schema import VAL_METRICS
from reg_runner.sweep.objectives import direction_of

ROOT = Path(__file__).resolve().parents[1]
PRUNERS = ROOT / "conf" / "hydra" / "sweeper" / "pruner"


@dataclass
class Trial:
    number: int
    curve: list[float]  # what the trial reported at each epoch: its runs' mean best objective so far
    stack: tuple[int, ...]  # the trials it trained beside, itself included (itself alone: a lone run)
    runs: int  # its runs (hydra.sweeper.seeds_per_trial)


def _number(folder: Path) -> int | None:
    """The trial number of a trial folder ``<number>_<parameters>`` or of a run folder in it."""
    for name in (folder.name, folder.parent.name):
        number, _, rest = name.partition("_")
        if number.isdigit() and rest:
            return int(number)
    return None


def trials(sweep: Path, objective: str) -> tuple[str, list[Trial]]:
    """The study's name and its trials, from the run folders of a finished unpruned search. ``objective``
    is one of ``VAL_METRICS``; its curves are the best so far in its direction, as the sweeper records them."""
    best = max if direction_of(objective) == "maximize" else min
    runs: dict[int, list[Path]] = {}
    for folder in sweep.iterdir():
        number = _number(folder)
        if folder.is_dir() and number is not None:
            seeds = sorted(folder.glob("seed=*"))  # hydra.sweeper.seeds_per_trial > 1: one folder per seed
            runs[number] = seeds or [folder]
    numbers = sorted(runs)
    if not numbers:
        raise ValueError("no trial folders (<number>_<parameters>/) in it")
    if numbers != list(range(len(numbers))):
        raise ValueError(f"trial folders {numbers[:10]}... are not 0..N-1 (a search cut short?)")
    study, out = None, []
    for n in numbers:
        env = json.loads((runs[n][0] / "environment.json").read_text())
        if not isinstance(env.get("trial"), dict):  # a grid multirun's runs record "trial": null
            raise ValueError("not an Optuna search: its runs record no trial (environment.json \"trial\": null, as a "
                             "grid multirun's); give the folder of an hparams_search=... run without a pruner")
        curves = []
        for run in runs[n]:
            with open(run / "history.csv") as f:
                values = [float(r[objective]) for r in csv.DictReader(f)]
            curves.append(list(itertools.accumulate(values, best)))
        metrics = json.loads((runs[n][0] / "metrics.json").read_text())
        if len({len(c) for c in curves}) != 1 or metrics["status"] != "completed":
            raise ValueError(f"{runs[n][0].relative_to(sweep)} is not a completed run: replay a search without a pruner")
        if metrics.get("objective", objective) != objective:  # the replay must rank trials as the search did
            raise ValueError(f"its trials optimized {metrics['objective']}, not {objective}: give --objective "
                             f"{metrics['objective']}")
        study = env["trial"]["study"]
        stack = tuple(sorted({_number(Path(p)) for p in env.get("stack") or [runs[n][0]]}))
        out.append(Trial(n, [math.fsum(v) / len(v) for v in zip(*curves)], stack, len(curves)))
    return study, out


def pruner_from(name: str, keys: dict) -> optuna.pruners.BasePruner:
    """The pruner of conf/hydra/sweeper/pruner/<name>.yaml, with some of its keys changed (a key the
    preset interpolates, such as hyperband's max_resource, must be given)."""
    spec = yaml.safe_load((PRUNERS / f"{name}.yaml").read_text())
    spec.update(keys)
    cls = getattr(optuna.pruners, spec.pop("_target_").rpartition(".")[2])
    return cls(**spec)


def replay(study_name: str, search: list[Trial], pruner, n_jobs: int, direction: str = "maximize") -> dict:
    """The search again as reg_runner's sweeper runs it: batches of ``n_jobs`` trials, told when the whole
    batch is done; in a batch, each stack in turn (a lone run is a stack of one); in a stack, epoch by
    epoch, each live trial in number order records its value and asks the pruner."""
    study = optuna.create_study(direction=direction, pruner=pruner, study_name=study_name,
                                storage=optuna.storages.InMemoryStorage())
    trained, finished = 0, {}
    for start in range(0, len(search), n_jobs):
        batch = {t.number: (t, study.ask()) for t in search[start:start + n_jobs]}
        stacks = list(dict.fromkeys(tuple(n for n in t.stack if n in batch) for t, _ in batch.values()))
        pruned = set()
        for stack in stacks:
            live = list(stack)
            for epoch in range(1, max(len(batch[n][0].curve) for n in stack) + 1):
                for n in list(live):
                    trial, asked = batch[n]
                    trained += trial.runs
                    asked.report(trial.curve[epoch - 1], epoch)
                    if epoch < len(trial.curve) and asked.should_prune():
                        pruned.add(n)
                        live.remove(n)
                live = [n for n in live if len(batch[n][0].curve) > epoch]
        for n, (trial, asked) in batch.items():
            if n in pruned:
                study.tell(asked, state=optuna.trial.TrialState.PRUNED)
            else:
                study.tell(asked, trial.curve[-1])
                finished[n] = trial.curve[-1]
    sign = 1 if direction == "maximize" else -1  # val/loss: the lowest is the best
    top = max(finished, key=lambda n: sign * finished[n])
    ranking = sorted(range(len(search)), key=lambda n: -sign * search[n].curve[-1])
    return dict(pruned=len(search) - len(finished), trained=trained, total=sum(len(t.curve) * t.runs for t in search),
                best=finished[top], best_trial=top, rank=ranking.index(top) + 1)


SETTINGS = [  # (pruner file, keys changed): the presets as they were, then the candidates
    ("median", dict(n_startup_trials=5, n_warmup_steps=10)),
    ("median", dict(n_startup_trials=5, n_warmup_steps=5)),
    ("median", dict(n_startup_trials=5, n_warmup_steps=20)),
    ("median", dict(n_startup_trials=3, n_warmup_steps=10)),
    ("median", dict(n_startup_trials=5, n_warmup_steps=10, n_min_trials=5)),
    ("percentile", dict(percentile=25.0, n_warmup_steps=10)),
    ("percentile", dict(percentile=33.0, n_warmup_steps=10)),
    ("percentile", dict(percentile=40.0, n_warmup_steps=10)),
    ("percentile", dict(percentile=25.0, n_warmup_steps=20)),
    ("successive_halving", dict(min_resource=10, reduction_factor=3)),
    ("successive_halving", dict(min_resource=5, reduction_factor=3)),
    ("successive_halving", dict(min_resource=20, reduction_factor=3)),
    ("successive_halving", dict(min_resource=10, reduction_factor=2)),
    ("successive_halving", dict(min_resource=10, reduction_factor=4)),
    ("hyperband", dict(min_resource=10, max_resource="epochs", reduction_factor=3)),
    ("hyperband", dict(min_resource=10, max_resource="auto", reduction_factor=3)),
    ("hyperband", dict(min_resource=5, max_resource="epochs", reduction_factor=3)),
    ("hyperband", dict(min_resource=20, max_resource="epochs", reduction_factor=3)),
    ("hyperband", dict(min_resource=10, max_resource="epochs", reduction_factor=2)),
]


def fail(message: str) -> None:
    refuse(message)


def _objective(text: str) -> str:
    # what the sweeper itself may optimize: a validation metric; the test set never chooses or ranks anything
    if text not in VAL_METRICS:
        raise argparse.ArgumentTypeError(f"{text!r} is not allowed: {' or '.join(VAL_METRICS)} (a validation "
                                         "metric: the test set never chooses or ranks anything)")
    return text


def main() -> None:
    parser = Parser(prog="python benchmarks/prune_replay.py", description=__doc__.splitlines()[0])
    parser.add_argument("sweep", type=Path, help="folder of a finished search run without a pruner")
    parser.add_argument("--n-jobs", type=int, default=8, help="trials per batch, as hydra.sweeper.n_jobs")
    parser.add_argument("--lone", action="store_true",
                        help="replay every run alone, one after another (the basic launcher), not in its stack")
    parser.add_argument("--objective", type=_objective, default="val/acc",
                        help=f"the search's objective: {' or '.join(VAL_METRICS)} (default val/acc)")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    if not args.sweep.is_dir():
        fail(f"{args.sweep}: not a folder")
    if args.n_jobs < 1:
        fail(f"--n-jobs {args.n_jobs}: an integer >= 1")
    try:
        study, search = trials(args.sweep, args.objective)
    except ValueError as e:
        fail(f"{args.sweep}: {e}")
    except (OSError, KeyError) as e:
        fail(f"{args.sweep}: not the folder of a finished search ({type(e).__name__}: {e})")
    if args.lone:
        search = [Trial(t.number, t.curve, (t.number,), t.runs) for t in search]
    epochs = len(search[0].curve)
    best = max if direction_of(args.objective) == "maximize" else min
    print(f"study {study}: {len(search)} trials, {sum(len(t.curve) * t.runs for t in search)} epochs, best {args.objective} "
          f"{best(t.curve[-1] for t in search):.4f}; batches of {args.n_jobs}, "
          f"{'each run alone' if args.lone else 'stacks as they trained'}\n")
    print("| pruner | keys | pruned | epochs | of unpruned | best kept | its rank |")
    print("|---|---|---|---|---|---|---|")
    for name, keys in SETTINGS:
        if keys.get("max_resource") == "epochs":  # the preset's ${trainer.epochs}
            keys = {**keys, "max_resource": epochs}
        r = replay(study, search, pruner_from(name, keys), args.n_jobs, direction_of(args.objective))
        shown = ", ".join(f"{k}={v}" for k, v in keys.items())
        print(f"| {name} | {shown} | {r['pruned']} | {r['trained']:,} | {r['trained'] / r['total']:.0%} "
              f"| {r['best']:.4f} (trial {r['best_trial']}) | {r['rank']} |")


if __name__ == "__main__":
    main()
