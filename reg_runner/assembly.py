"""The assembly seam: checked run configs in; data on the device, a model (stacked and plain) and its members out.
Runs, resume, the range test, the landscapes and the exactness probe all build through here, one way: docs/families.md.
"""

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from reg_runner.checks import Checked
from reg_runner.config import RunConfig
from reg_runner.data import tensors
from reg_runner.device import resolve as resolve_device
from reg_runner.errors import UserError
from reg_runner.model.stack import stack
from reg_runner.records import RunFolder
from reg_runner.trainer.member import Member
from reg_runner.trainer.trial import TrialLink

log = logging.getLogger(__name__)


@dataclass
class Job:
    """One run, from the command to its member in a stack: what the command gives it (its config as Hydra composed
    it, its folder, overrides and Optuna trial), then what the run makes of these before it trains, in this order."""

    composed: object  # Hydra's DictConfig, or a plain mapping of the same keys
    run_dir: Path
    overrides: tuple = ()
    trial: TrialLink | None = None
    checked: Checked | None = None  # its config's check so far, if made (the CLI's callback's, a sweeper's)
    folder: RunFolder | None = None  # its folder, once locked (the CLI's callback locks a single run's)
    recorded: dict | None = None  # resolved_config.yaml's content: plain data, the seed actually used
    checkpoint: dict | None = None  # checkpoints/last.pt, when it resumes

    @property
    def settings(self) -> RunConfig:
        """The checked, typed config."""
        return self.checked.cfg


def stacked(model_cfgs: list, shape: tuple[int, ...], n_classes: int, device: torch.device,
            dropout_generators: list | None = None):
    """K networks as one (member k configured by ``model_cfgs[k]``), on ``device``, not yet initialized."""
    with torch.device(device):
        return stack(list(model_cfgs), tuple(shape), n_classes, dropout_generators or [None] * len(model_cfgs))


def plain(model_cfg, shape: tuple[int, ...], n_classes: int, device: torch.device):
    """One network of the family as ``torch.nn`` modules (what a checkpoint loads into)."""
    with torch.device(device):
        return model_cfg.plain(tuple(shape), n_classes)


def holds_network(model_cfg, shape: tuple[int, ...], n_classes: int, state) -> bool:
    """Whether ``state`` (a checkpoint's model) holds the network of ``model_cfg``: its names and shapes."""
    expected = plain(model_cfg, shape, n_classes, torch.device("meta")).state_dict()
    shapes = ({n: tuple(t.shape) for n, t in state.items() if isinstance(t, torch.Tensor)}
              if isinstance(state, dict) else {})
    return shapes == {n: tuple(t.shape) for n, t in expected.items()}


@dataclass
class Assembly:
    device: torch.device
    data: tensors.Data
    model: torch.nn.Module  # the stacked form: every member's slice
    plain: torch.nn.Module  # one plain network of the architecture: TensorBoard's probes see a member through it
    members: list[Member]
    resumed: set  # the members restored from a checkpoint

    @property
    def n_parameters(self) -> int:
        """One member's parameter count."""
        return sum(p[0].numel() for p in self.model.parameters())


def assemble(jobs: list[Job]) -> Assembly:
    """The runs ``jobs`` (checked, of one structure, recorded) as one stack, each member initialized from its seed or
    restored from its checkpoint."""
    first = jobs[0].settings
    device = resolve_device(first.trainer.device)
    torch.manual_seed(jobs[0].recorded["seed"])  # torch's global generator, for code outside reg_runner
    data = tensors.load(first.data, device)
    members = [Member(job.settings, job.recorded, job.run_dir, job.recorded["seed"], data, device, job.trial)
               for job in jobs]
    model = stacked([m.cfg.model for m in members], data.shape, data.n_classes, device,
                    [m.gens["dropout"] for m in members])
    params = list(model.parameters())
    resumed = set()
    for k, (m, job) in enumerate(zip(members, jobs)):
        checkpoint = job.checkpoint
        if checkpoint is None:
            m.cfg.model.initialize(model, k, m.gens["init"])
        elif not holds_network(m.cfg.model, data.shape, data.n_classes, checkpoint["model"]):
            raise UserError(f"{m.run_dir}/checkpoints/last.pt does not hold this run's network (its weights' names or "
                            "shapes differ from the config's): it is damaged or another run's; start the run again")
        else:
            model.load_member_state(k, checkpoint["model"])
        m.attach(params, k)
        m.extra["stack_size"] = len(members)
        if checkpoint is not None:
            try:
                m.restore(checkpoint)
            except (KeyError, ValueError, TypeError, RuntimeError, IndexError) as e:
                raise UserError(f"{m.run_dir}/checkpoints/last.pt is damaged ({type(e).__name__} restoring its "
                                "optimizer, schedule or loop state); start the run again") from None
            resumed.add(m)
            m.extra.update(resumed=True, timing_before=checkpoint["timing"], first_epoch=m.state.epoch)
            log.info("resuming %s at epoch %d of %d", m.run_dir, m.state.epoch, m.cfg.trainer.epochs)
    return Assembly(device, data, model, plain(first.model, data.shape, data.n_classes, device), members, resumed)
