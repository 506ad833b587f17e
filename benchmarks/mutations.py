"""Deliberate one-line bugs, each applied alone to a copy of the project: which test catches it?

    python benchmarks/mutations.py                 # every mutation, its targeted tests, a table at the end
    python benchmarks/mutations.py --only penalty  # the mutations whose name contains a word
    python benchmarks/mutations.py --fast          # leave out the ones whose tests run the CLI for minutes
    python benchmarks/mutations.py --list

The working tree is never edited: each mutation is made in a fresh copy (reg_runner/, conf/, tests/,
benchmarks/, pyproject.toml) in a temporary folder, and its tests run there, one torch thread, one
process (``pytest -n0 -x``). A mutation is caught when its tests fail; one that survives is a hole in
the tests. Exit code: 0 if every mutation was caught, 1 otherwise.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from reg_runner.errors import Parser, integer_arg

ROOT = Path(__file__).resolve().parent.parent
COPIED = ("reg_runner", "conf", "tests", "benchmarks", "pyproject.toml")

# name, file, the line's text as it is, as the bug makes it, the tests that should catch it, heavy (minutes of CLI)
MUTATIONS = [
    ("engine: one member's gradient scaled by the stack's size", "reg_runner/trainer/engine.py",
     "total = data_loss.sum()  # its gradient is each member's own", "total = data_loss.mean()",
     ["tests/test_engine.py::test_a_stacked_member_is_its_lone_run_to_the_bit"], False),
    ("engine: every member draws member 0's batch order", "reg_runner/trainer/engine.py",
     'generator=m.gens["batches"]) for m in members])', 'generator=members[0].gens["batches"]) for m in members])',
     ["tests/test_engine.py::test_a_stacked_member_is_its_lone_run_to_the_bit"], False),
    ("penalty: the L2 gradient is λ2·θ, not 2λ2·θ", "reg_runner/reg/penalty.py",
     "l2 = [2 * self.l2[k] if self.covers[k][j]", "l2 = [self.l2[k] if self.covers[k][j]",
     ["tests/test_engine.py::test_the_penalty_gradient_is_the_gradient_of_each_members_penalty"], False),
    ("penalty: members that stay take the L1 as their L2", "reg_runner/reg/penalty.py",
     "self.l1, self.l2 = [self.l1[i] for i in members], [self.l2[i] for i in members]",
     "self.l1, self.l2 = [self.l1[i] for i in members], [self.l1[i] for i in members]",
     ["tests/test_engine.py::test_the_penalty_gradient_is_the_gradient_of_each_members_penalty"], False),
    ("split: the validation set overlaps the training subset", "reg_runner/data/split.py",
     "val = np.setdiff1d(np.arange(n), train, assume_unique=True)", "val = np.arange(n)",
     ["tests/test_data.py::test_split_is_a_partition_drawn_by_split_seed"], False),
    ("sweep direction: a search on val/loss maximizes it", "reg_runner/sweep/objectives.py",
     'DIRECTIONS = {"val/acc": "maximize", "val/loss": "minimize",',
     'DIRECTIONS = {"val/acc": "maximize", "val/loss": "maximize",',
     ["tests/test_engine.py::test_a_search_maximizes_accuracy_and_minimizes_loss"], False),
    ("best epoch: a loss is better when higher", "reg_runner/trainer/member.py",
     'return new > old + min_delta if metric.endswith("acc") else new < old - min_delta',
     'return new > old + min_delta if metric.endswith("acc") else new > old - min_delta',
     ["tests/test_engine.py::test_better_follows_the_metric_and_min_delta"], False),
    ("resume: the random streams are not restored", "reg_runner/trainer/member.py",
     'g.set_state(checkpoint["rng"][name])', "pass",
     ["tests/test_engine.py::test_resumed_from_a_checkpoint_equals_uninterrupted"], False),
    ("resume: the loop state restarts", "reg_runner/trainer/member.py",
     'self.state = TrainState(**checkpoint["state"])', "self.state = TrainState()",
     ["tests/test_engine.py::test_resumed_from_a_checkpoint_equals_uninterrupted"], False),
    ("stacking: every member scales its dropout by member 0's p", "reg_runner/model/stack.py",
     "[1.0 / (1.0 - p) for p in self.p]", "[1.0 / (1.0 - self.p[0]) for p in self.p]",
     ["tests/test_engine.py::test_a_stacked_member_is_its_lone_run_to_the_bit"], False),
    # what keys do to the numbers (tests/test_numbers.py): each changes a run's numbers without a word
    ("optimizer: weight_decay silently dropped", "reg_runner/optimizer/build.py",
     "kwargs = dict(cfg.arguments, ", 'kwargs = dict({k: v for k, v in cfg.arguments.items() if k != "weight_decay"}, ',
     ["tests/test_numbers.py::test_weight_decay_shrinks_the_weights_as_its_optimizer_defines"], False),
    ("accumulation: the last, partial group scaled as a full one", "reg_runner/trainer/engine.py",
     "group_size = min(tc.accumulate, n_batches - group_start)", "group_size = tc.accumulate",
     ["tests/test_numbers.py::test_accumulating_k_batches_is_one_batch_k_times_larger"], False),
    ("accumulation: the optimizer steps after every micro-batch", "reg_runner/trainer/engine.py",
     "if i - group_start == group_size - 1:", "if True:",
     ["tests/test_numbers.py::test_accumulating_k_batches_is_one_batch_k_times_larger"], False),
    ("lr scaling: the effective batch leaves accumulation out", "reg_runner/trainer/member.py",
     "optimizer_lib.build(proxies, c.optimizer, t.batch_size * t.accumulate)",
     "optimizer_lib.build(proxies, c.optimizer, t.batch_size)",
     ["tests/test_numbers.py::test_accumulating_k_batches_is_one_batch_k_times_larger"], False),
    ("data: the test split built from the validation images", "reg_runner/data/tensors.py",
     "test = (np.array(images.test_images), images.test_labels)  # a writable copy",
     "test = (images.train_images[s.val_idx], images.train_labels[s.val_idx])",
     ["tests/test_numbers.py::test_the_test_split_is_the_datasets_test_files"], False),
    ("data: data.root's files trusted by name", "reg_runner/data/split.py",
     "    if root is not None and verify:", "    if False:",
     ["tests/test_data.py::test_a_data_folder_is_checked_against_the_published_md5s"], False),
    ("data: a remembered md5 outlives a change of the file's time", "reg_runner/data/store.py",
     "and entry[:2] == stamp and", "and entry[0] == stamp[0] and",
     ["tests/test_data.py::test_a_files_md5_is_computed_once_for_its_size_and_modification_time"], False),
    ("grid: the last key varies slowest", "reg_runner/sweep/grid.py",
     "jobs_ = [list(job) for job in itertools.product(*values.values())]",
     "jobs_ = [list(reversed(job)) for job in itertools.product(*reversed(values.values()))]",
     ["tests/test_private.py::test_the_grid_makes_the_basic_sweepers_jobs"], False),
    ("search space: tag(log, ...) is drawn uniformly", "reg_runner/sweep/overrides.py",
     'log = "log" in value.tags', "log = False",
     ["tests/test_private.py::test_a_search_space_is_the_optuna_sweepers"], False),
    ("orphans: a dead sweeper's trial is taken for a live one", "reg_runner/sweep/study.py",
     "and not (isinstance(attrs[PID], int) and alive(attrs[PID]))",
     "and (isinstance(attrs[PID], int) and alive(attrs[PID]))",
     ["tests/test_sweep.py::test_a_trial_half_tagged_by_a_live_sweeper_is_not_taken_for_an_orphan"], False),
    ("records: the run's record names the last epoch as its best", "reg_runner/trainer/member.py",
     'best_epoch=state.best["epoch"] if state.best else None,',
     'best_epoch=state.epoch if state.best else None,',
     ["tests/test_cli.py::test_eval_every_and_early_stopping"], True),
    ("pruning: the pruner is never asked", "reg_runner/trainer/trial.py",
     "if live and runs[0].trial.prunes and reporter.should_prune():",
     "if False and live and runs[0].trial.prunes and reporter.should_prune():",
     ["tests/test_prune.py::test_median_pruner_stops_trials_in_the_sweepers_own_process"], True),
    ("stacking: the launcher never splits a stack its kernels would change", "reg_runner/sweep/stacked.py",
     'why, exact_here = exactness.verdict(stack[0]["checked"], len(stack), only_if_faster)',
     "why, exact_here = None, True",
     ["tests/test_stacked.py::test_members_get_their_lone_numbers_whatever_the_shape"], True),
    ("threads: joblib's workers keep the environment's thread count", "reg_runner/cli.py",
     "torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))", "pass",
     ["tests/test_workers.py::test_a_joblib_multirun_always_returns"], True),
    ("report: no curve is drawn", "reg_runner/report/plots.py",
     "for ax, metric in zip(axes[:, col], metrics):\n            for g, colour, _ in shown:",
     "for ax, metric in zip(axes[:, col], ()):\n            for g, colour, _ in shown:",
     ["tests/test_report.py::test_a_32_group_factorial_draws_legible_figures"], True),
    ("bench: an epoch's time includes start-up", "benchmarks/bench.py",
     'return dict(r, epoch_s=m["timing"]["loop_s"] / m["epochs_run"],',
     'return dict(r, epoch_s=r["process_s"] / m["epochs_run"],',
     ["tests/test_benchmarks.py::test_bench_times_every_implementation_on_the_same_work"], True),
]


def copy_project(into: Path) -> None:
    for name in COPIED:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, into / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(source, into / name)


def apply(into: Path, path: str, old: str, new: str) -> None:
    file = into / path
    text = file.read_text()
    if text.count(old) != 1:
        raise SystemExit(f"error: {path}: the line to mutate is found {text.count(old)} times, not once: {old!r}")
    file.write_text(text.replace(old, new))


def run_tests(into: Path, tests: list[str], timeout: int) -> tuple[bool, str]:
    env = {**os.environ, "PYTHONPATH": str(into), "OMP_NUM_THREADS": "1"}
    env.pop("PYTEST_XDIST_WORKER", None)
    try:
        proc = subprocess.run([sys.executable, "-m", "pytest", "-n0", "-x", "-q", "-p", "no:cacheprovider", *tests],
                              cwd=into, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return True, "timed out"
    failed = [line for line in proc.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))]
    if proc.returncode == 0:
        return False, "passed"
    return True, (failed[0] if failed else proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else
                  f"exit {proc.returncode}")


def main() -> int:
    parser = Parser(prog="python benchmarks/mutations.py", description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=None, help="the mutations whose name contains this")
    parser.add_argument("--fast", action="store_true", help="leave out the mutations whose tests run for minutes")
    parser.add_argument("--list", action="store_true", help="list the mutations and their tests, run nothing")
    parser.add_argument("--timeout", type=integer_arg(1), default=900, help="seconds per mutation's tests")
    args = parser.parse_args()
    chosen = [m for m in MUTATIONS if (args.only is None or args.only in m[0]) and not (args.fast and m[5])]
    if args.list:
        for name, path, _, _, tests, heavy in chosen:
            print(f"{name} ({path}){' [heavy]' if heavy else ''}: {' '.join(tests)}")
        return 0
    rows = []
    for name, path, old, new, tests, _ in chosen:
        with tempfile.TemporaryDirectory(prefix="reg_runner_mutant_") as tmp:
            into = Path(tmp)
            copy_project(into)
            apply(into, path, old, new)
            t0 = time.perf_counter()
            caught, how = run_tests(into, tests, args.timeout)
        rows.append((name, caught, how, time.perf_counter() - t0))
        print(f"{'caught ' if caught else 'SURVIVED'} {name}: {how} ({rows[-1][3]:.0f} s)", flush=True)
    print(f"\n{sum(r[1] for r in rows)} of {len(rows)} mutations caught")
    return 0 if all(r[1] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
