"""Continue killed, interrupted or failed runs where their last checkpoints left them.

Each in its own folder, with the config and torch threads it started with; several folders as stacks; a finished
run is left as it is (docs/reliability.md, with the commands).
"""

import logging
import os
import sys
from pathlib import Path

from reg_runner import exactness, keys, kinds, signals
from reg_runner.console import RUN_FORMAT
from reg_runner.errors import Parser, UserError, exit_on_user_error, first_line
from reg_runner.signals import hand_back, stop_if_signalled

log = logging.getLogger(__name__)


def load_config(run_dir: Path):
    """The run's resolved_config.yaml, read and checked as a config."""
    from omegaconf import OmegaConf

    path = run_dir / "resolved_config.yaml"
    if not run_dir.is_dir():
        raise UserError(f"{run_dir} is not a folder; give the folder of a run, e.g. outputs/<date>/<time>")
    if not path.is_file():
        raise UserError(f"{run_dir} is not a reg_runner run folder (no resolved_config.yaml); "
                        "give the folder of a run, e.g. outputs/<date>/<time>")
    try:
        cfg = OmegaConf.load(path)
    except Exception as e:  # YAML syntax, or not text at all
        raise UserError(f"{path} cannot be read as YAML ({first_line(e)}); restore the file") from None
    if not OmegaConf.is_dict(cfg):
        raise UserError(f"{path} holds a {type(cfg).__name__}, not a config of keys; restore the file")
    from reg_runner.schema import upgrade

    try:
        return OmegaConf.create(upgrade(OmegaConf.to_container(cfg, resolve=False)))
    except Exception as e:  # keys OmegaConf cannot hold
        raise UserError(f"{path} cannot be read as a config ({first_line(e)}); restore the file") from None


def main(argv=None) -> None:
    parser = Parser(prog="python -m reg_runner.resume", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dirs", type=Path, nargs="+", metavar="run_dir", help="the folders of the runs to continue")
    args = parser.parse_args(argv)
    with exit_on_user_error():
        from reg_runner import checks
        from reg_runner.records import FINISHED, RunFolder, ThreadsUnknown

        # each folder once, however written (realpath: a loop of links is then not a folder, not a traceback)
        run_dirs = list(dict.fromkeys(Path(os.path.realpath(p)) for p in args.run_dirs))
        stacks: dict[tuple, list] = {}
        finished = []
        for run_dir in run_dirs:
            if run_dir.is_dir():
                kinds.refuse_other_than(run_dir, (kinds.RUN,), "give the folder of a run, e.g. outputs/<date>/<time>",
                                        {kinds.SWEEP: f"give the folders of its runs ({run_dir}/*/); a search "
                                                      "continues when its command is run again"})
            cfg = load_config(run_dir)
            try:
                checked = checks.check(cfg, through=3)  # a damaged config gets one line before torch loads
            except UserError as e:
                raise UserError(f"{run_dir}: {e}") from None
            folder = RunFolder(run_dir)
            status = folder.status()
            if status in FINISHED and len(run_dirs) > 1:  # the members of a killed stack that had already ended
                finished.append((run_dir, status))
                continue
            if status in FINISHED or status == "running":  # before any log file is touched
                folder.load_last()  # says why, in one line
            try:
                threads = folder.recorded_threads()  # its numbers depend on them: resumed with the same
            except ThreadsUnknown as e:
                threads = None
                log.warning("%s: the torch threads the run trained with are unknown (%s): it resumes with this "
                            "process's; on a CPU its last digits may differ from an uninterrupted run's", run_dir, e)
            stacks.setdefault((keys.structural_values(checked.cfg), threads), []).append((cfg, run_dir, checked))
        if not stacks:
            raise UserError(f"all {len(run_dirs)} runs are finished ({', '.join(sorted({s for _, s in finished}))}): "
                            "there is nothing to resume")
        for run_dir, status in finished:
            print(f"{run_dir}: finished ({status}), left as it is", flush=True)
        handlers = [logging.StreamHandler(sys.stdout)]
        for run_dir in (d for d in run_dirs if d not in dict(finished)):
            try:
                handlers.append(logging.FileHandler(run_dir / "reg_runner.log"))
            except OSError as e:
                raise UserError(f"cannot write the run folder {run_dir}: {e.strerror}; resume needs to write "
                                "into it") from None
        logging.basicConfig(level=logging.INFO, format=RUN_FORMAT, handlers=handlers)
        import torch  # here, after the arguments are checked

        from reg_runner.run import Job, check_resumable, run_stack

        for stack in stacks.values():  # every checkpoint and config before any run trains
            for cfg, run_dir, _ in stack:
                check_resumable(cfg, RunFolder(run_dir))
        for (_, threads), stack in stacks.items():
            if threads is not None and threads != torch.get_num_threads():  # a CPU run's numbers depend on them
                log.info("torch threads: %d, as the run trained with (this process had %d)", threads,
                         torch.get_num_threads())
                torch.set_num_threads(threads)
            try:
                why = exactness.verdict(stack[0][2], len(stack), only_if_faster=False)[0]
            except exactness.Interrupted:  # a signal after an earlier stack trained: the others are left as they are
                stop_if_signalled("checking a stack of runs to resume", "the runs not yet resumed are left as they were")
            if why is not None:  # as the stacked launcher does: each run's numbers are its lone run's
                log.warning("%d runs resume one at a time, not as a stack: %s", len(stack), why)
            for part in [stack] if why is None else [[run] for run in stack]:
                run_stack([Job(cfg, run_dir, checked=checked) for cfg, run_dir, checked in part], resume=True)
    hand_back("the command ended", "every run had recorded its end")


if __name__ == "__main__":
    signals.main(main)
