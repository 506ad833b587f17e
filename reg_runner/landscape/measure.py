"""The landscapes of the runs ``reg_runner.landscape``'s arguments name: each run's config and checkpoint read and
checked, its curve, surface, path and sharpness measured (``surface``), written into its folder or ``--out``."""

import json
import math
import os
import time
import warnings
from datetime import datetime
from pathlib import Path

import torch

from reg_runner import atomic, checks, kinds, signals
from reg_runner import config as config_lib
from reg_runner.assembly import holds_network, stacked
from reg_runner.data import tensors as data_lib
from reg_runner.data.tensors import Part
from reg_runner.device import resolve as resolve_device
from reg_runner.errors import UserError
from reg_runner.landscape import plots, surface
from reg_runner.records import RunFolder, folder_to_make, make_folder
from reg_runner.resume import load_config
from reg_runner.seeding import generators

DEFAULT_VAL_SIZE = 10_000
SHARPNESS_RADIUS = 0.25  # a quarter of the plots' axis: the quadratic rise is well above float noise


def load_run(run_dir: Path, which: str) -> dict:
    """A finished run's config and checkpoint, or one line saying why not."""
    kinds.refuse_other_than(run_dir, (kinds.RUN,), "give the folder of a run",
                            {kinds.SWEEP: f"give the folders of its runs ({run_dir}/*/)"})
    folder = RunFolder(run_dir)
    if folder.in_use():  # its checkpoints are being rewritten, and its folder is that process's
        raise UserError(f"{run_dir} is being trained right now ({folder.owner()}): its landscape would read "
                        "checkpoints that are still changing; wait for the run to end, or stop it first")
    cfg = load_config(run_dir)
    try:
        checked = checks.check(cfg, through=3)
    except UserError as e:
        raise UserError(f"{run_dir}: {e}") from None
    path = run_dir / "checkpoints" / f"{which}.pt"
    if not path.is_file():
        raise UserError(f"{run_dir} has no checkpoints/{which}.pt (a run writes best.pt at its first evaluation); "
                        f"choose --checkpoint {'last' if which == 'best' else 'best'} or a run that trained")
    run = dict(dir=run_dir, cfg=checked.cfg, config=config_lib.as_data(cfg),
               network=(checked.cfg.model, checked.split.shape, checked.split.n_classes))
    run["state"], run["epoch"] = weights(run, path)
    return run


def weights(run: dict, path: Path) -> tuple[dict, int | None]:
    """A checkpoint's weights and epoch, if they are the run config's network (names and shapes); else one line."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        state, epoch = checkpoint["model"], checkpoint.get("epoch")
    except Exception as e:  # truncated, not a checkpoint, another format
        raise UserError(f"{path} cannot be read as a checkpoint ({type(e).__name__}); it is damaged") from None
    if not holds_network(*run["network"], state):
        raise UserError(f"{path} does not hold the network of {run['dir']}/resolved_config.yaml (its weights' names "
                        "or shapes differ): it is another run's, or the config was edited")
    return state, epoch


def initial_state(run: dict) -> tuple[dict, str]:
    """The run's weights before its first step: init.pt, or drawn again from its seed."""
    path = run["dir"] / "checkpoints" / "init.pt"
    if path.is_file():
        return weights(run, path)[0], "checkpoints/init.pt"
    try:
        trained_on = str(json.loads((run["dir"] / "environment.json").read_text())["device"]).split(":")[0]
    except (OSError, ValueError, KeyError, TypeError):
        trained_on = "an unrecorded device"
    if trained_on != "cpu":  # CUDA's and MPS's generators draw other numbers than the CPU's from one seed
        raise UserError(f"{run['dir']} has no checkpoints/init.pt and trained on {trained_on}: its initial weights "
                        "can be drawn again only where they were drawn; run the landscape there")
    model_cfg, shape, n_classes = run["network"]
    model = stacked([model_cfg], shape, n_classes, torch.device("cpu"))
    model_cfg.initialize(model, 0, generators(run["config"]["seed"], torch.device("cpu"))["init"])
    return model.member_state(0), "drawn again from the run's seed (no init.pt)"


@torch.no_grad()
def landscape(run: dict, args, data, device) -> dict:
    """The curve, surface, path and sharpness of one run (no gradient is taken)."""
    t0 = time.perf_counter()
    theta = run["state"]
    gen = torch.Generator().manual_seed(args.seed)
    weights = surface.weight_names(*run["network"])
    d1, d2 = surface.direction(theta, weights, gen), surface.direction(theta, weights, gen)
    axis = [args.span * (2 * i / (args.grid - 1) - 1) for i in range(args.grid)]
    r = SHARPNESS_RADIUS
    dirs = [[1.0, 0.0, 0.0], [1.0, r, 0.0], [1.0, -r, 0.0], [1.0, 0.0, r], [1.0, 0.0, -r]]
    grid = [[1.0, a, 0.0] for a in axis] if args.dims == 1 else [[1.0, a, b] for b in axis for a in axis]
    loss, acc = surface.points(run["network"], [theta, d1, d2], dirs + grid, data, device)
    init, init_source = initial_state(run)
    h = max(2, 2 * ((args.grid - 1) // 4))  # points per unit of t, even: t = 0, 1/2 and 1 are on the path
    ts = [k / h for k in range(-h // 2, 3 * h // 2 + 1)]  # [-0.5, 1.5]
    inside = [min(max(t, 0.0), 1.0) for t in ts]  # BatchNorm's statistics: the nearest end's beyond the ends
    path_loss, path_acc = surface.points(run["network"], [theta, init], [[t, 1 - t] for t in ts], data, device,
                                         buffer_coefs=[[t, 1 - t] for t in inside])
    center, rises = loss[0], [v - loss[0] for v in loss[1:5]]
    if not math.isfinite(center):
        raise UserError(f"{run['dir']}/checkpoints/{args.checkpoint}.pt has a {args.split} loss of {center} (the run "
                        "diverged): its landscape has no floor to measure from; choose another checkpoint or run")
    g_loss, g_acc = loss[5:], acc[5:]
    n = args.grid
    curve = slice(0, n) if args.dims == 1 else slice((n // 2) * n, (n // 2 + 1) * n)  # along d1, through the centre
    return dict(
        run=str(run["dir"]), checkpoint=args.checkpoint, epoch=run["epoch"], split=args.split, n_images=len(data),
        seed=args.seed, span=args.span, grid=n, dims=args.dims, axis=axis,
        center=dict(loss=center, acc=acc[0]),
        sharpness=dict(value=surface.nan_to_none([sum(rises) / 4])[0], radius=r, rises=surface.nan_to_none(rises),
                       what="mean rise of the loss at filter-normalized distance radius along +-d1, +-d2"),
        curve=dict(loss=surface.nan_to_none(g_loss[curve]), acc=g_acc[curve]),
        surface=None if args.dims == 1 else dict(loss=[surface.nan_to_none(g_loss[i * n : (i + 1) * n]) for i in range(n)],
                                                 acc=[g_acc[i * n : (i + 1) * n] for i in range(n)]),
        path=dict(t=ts, loss=surface.nan_to_none(path_loss), acc=path_acc, init=init_source),
        seconds=time.perf_counter() - t0,
        networks_evaluated=len(loss) + len(path_loss),
    )


def evaluation_split(data, args):
    """The training images, or a seeded sample of the validation set (never the test set)."""
    if args.split == "train":
        return data.train
    val, size = data.val, args.val_size or DEFAULT_VAL_SIZE
    if args.val_size is not None and args.val_size > len(val):
        raise UserError(f"--val-size={args.val_size} is not allowed: at most {len(val)}, the run's validation images")
    if len(val) <= size:
        return val
    index = torch.randperm(len(val), generator=torch.Generator().manual_seed(args.seed))[:size]
    return Part(val.x[index.to(val.x.device)], val.y[index.to(val.y.device)])


def landscapes(args, run_dirs: list[Path], made: list, state: dict) -> None:
    """Every run's landscape (``made``: gets the folders made; ``state["written"]``: what was written)."""
    # a foreign checkpoint's pickle protocol: the one line that refuses the file says it all
    warnings.filterwarnings("ignore", module="torch._weights_only_unpickler")
    out = args.out
    out_all = out  # where several runs' common figure goes: --out, else a new folder of its own
    if out is None and len(run_dirs) > 1:
        out_all = Path("outputs/landscape") / datetime.now().strftime("%Y-%m-%d/%H-%M-%S")
    if out_all is not None:
        folder_to_make("--out", out_all)
    runs = [load_run(d, args.checkpoint) for d in run_dirs]  # every folder checked before any work
    if out is None:
        for run in runs:
            if not os.access(run["dir"], os.W_OK | os.X_OK):
                raise UserError(f"{run['dir']} is not writable; give --out DIR to write the landscape elsewhere")
    # it writes into the runs' folders: no run may start in them meanwhile (resume)
    locked = [RunFolder(run["dir"]) for run in runs] if out is None else []
    try:
        for folder in locked:
            folder.lock()
        device = resolve_device(args.device)
        if out_all is not None:
            make_folder("--out", out_all, into=made)  # before the work: a folder the file system refuses is one line now
            kinds.mark(out_all, kinds.LANDSCAPE)
        results, cache = [], {}
        try:
            for run in runs:
                key = json.dumps(run["config"]["data"], sort_keys=True)
                if key not in cache:
                    cache[key] = data_lib.load(run["cfg"].data, device)
                result = landscape(run, args, evaluation_split(cache[key], args), device)
                results.append(result)
                sharp = result["sharpness"]["value"]
                print(f"{run['dir']}: {args.checkpoint}.pt (epoch {result['epoch']}), {args.split} loss "
                      f"{result['center']['loss']:.4g}, sharpness {'overflow' if sharp is None else f'{sharp:.4g}'} "
                      f"({result['networks_evaluated']} networks in {result['seconds']:.1f} s)", flush=True)
        except UserError:
            signals.remove_empty(made)  # nothing was written: no empty folder is left behind
            raise
        with signals.deferred(hold=True):  # each folder's files are written together: all of them, or none
            if out is None:
                for run, result in zip(runs, results):
                    _write(run["dir"], [result], tensorboard=run["cfg"].logging.tensorboard)
            if out_all is not None:
                _write(out_all, results, tensorboard=False)
        state["written"] = ", ".join(str(p) for p in ([r["dir"] for r in runs] if out is None else []) +
                                     ([out_all] if out_all else []))
        signals.stop_if_caught()  # a signal while the files were written: they are whole, and said so
        print(f"written: {state['written']}")
    finally:
        for folder in locked:
            folder.unlock()


def _write(folder: Path, results: list[dict], tensorboard: bool) -> None:
    atomic.write_json(folder / "landscape.json", results[0] if len(results) == 1 else dict(runs=results))
    images = plots.draw(results, folder)
    if tensorboard:
        plots.to_tensorboard(folder, images, results[0]["epoch"] or 0)
