"""TensorBoard: everything a run records, in the run's own folder (docs/tensorboard.md); its HParams entry in the
same event file (``SummaryWriter.add_hparams`` would make a separate run folder)."""

import contextlib
import logging
import math
import time
from pathlib import Path

import torch

from reg_runner import dotted, keys
from reg_runner.config import KEYS
from reg_runner.logging import probe
from reg_runner.model.stack import weight_layers

log = logging.getLogger(__name__)

HPARAM_METRICS = {
    "hparams/best_val_acc": lambda m: m["best"]["val/acc"],
    "hparams/best_val_loss": lambda m: m["best"]["val/loss"],
    "hparams/test_acc_at_best": lambda m: m["best"]["test/acc"],
    "hparams/best_epoch": lambda m: m["best"]["epoch"],
    "hparams/final_train_loss": lambda m: m["final"]["train/loss"],
    "hparams/final_val_loss": lambda m: m["final"]["val/loss"],
    "hparams/final_test_acc": lambda m: m["final"]["test/acc"],
}


def tag(metric: str) -> str:
    """A history row's ``train/loss`` becomes TensorBoard's ``loss/train``."""
    split, _, kind = metric.partition("/")
    return f"{kind}/{split}" if kind and split in ("train", "val", "test") else metric


def flat_hparams(config: dict) -> dict:
    """What the HParams table shows: the keys that define an experiment (``reg_runner.keys``: not the settings, paths
    or details), then the labels, as text (the dashboard filters on it)."""
    fields = [key for key, _, _ in keys.fields_of(KEYS.schema)]
    labels = [key for key in fields if KEYS.role_of(key) is keys.LABEL]
    out = {}
    for key, value in dotted.flat({key: config.get(key) for key in fields if key not in labels}).items():
        if keys.HPARAMS in KEYS.role_of(key).left_out_of:
            continue
        if key.endswith("._target_"):  # the optimizer's, the model's and the data's class, by its name
            key, value = key.removesuffix("._target_"), str(value).rsplit(".", 1)[-1]
        out[key] = value if isinstance(value, (bool, int, float, str)) else str(value)
    for key in labels:
        value = config.get(key)
        out[key] = ", ".join(str(t) for t in value) if isinstance(value, (list, tuple)) else str(value or "")
    return out


def after_earlier_files(log_dir: Path) -> None:
    """Wait, if needed, until a new event file's name sorts after the folder's earlier ones: TensorBoard reads them in
    name order, a name starts with the second the file was made, and a resumed run's file of that same second (from a
    lower process id) would be read first, its purge step dropping nothing. At most a second, on resume."""
    seconds = []
    for path in log_dir.glob("events.out.tfevents.*"):
        with contextlib.suppress(ValueError, IndexError):
            seconds.append(int(path.name.split(".")[3]))
    while seconds and time.time() < max(seconds) + 1:
        time.sleep(0.02)


class TBLogger:
    """One run's event file. ``model``: a plain network of the run's family, which ``TensorBoard`` loads with the
    run's weights before each histogram."""

    def __init__(self, log_dir: Path, cfg, model, data, epochs: int, eval_batch_size: int, purge_step=None):
        from torch.utils.tensorboard import SummaryWriter

        self.hist_epochs = probe.histogram_epochs(epochs, cfg.histograms)
        if purge_step is not None:
            after_earlier_files(Path(log_dir))
        # purge_step: TensorBoard drops earlier events at or after this step (a resumed run's overlap)
        self.writer = SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)
        self.model, self.eval_batch_size = model, eval_batch_size
        # "up to": said in the log, not capped in silence
        if cfg.histograms > epochs:
            log.warning("logging.histograms=%d is more than trainer.epochs=%d: histograms at every epoch",
                        cfg.histograms, epochs)
        if cfg.histograms and cfg.probe_size > len(data.train):
            log.warning("logging.probe_size=%d is more than the %d training images: the probe batch is all of them",
                        cfg.probe_size, len(data.train))
        self.probe_x, self.probe_y = data.train.x[:cfg.probe_size], data.train.y[:cfg.probe_size]  # the same each time
        self.n_classes = data.n_classes
        self.val_x = data.val.x

    @property
    def wants_entropy(self) -> bool:
        return bool(self.hist_epochs) and len(self.val_x) > 0

    def start(self, config: dict, val_entropy=None) -> None:
        """The HParams entry, and the entropy of the untrained model at step 0 (``val_entropy``: its
        entropies on the validation images, from the stack's evaluation; given when ``wants_entropy``)."""
        from torch.utils.tensorboard.summary import hparams

        for summary in hparams(flat_hparams(config), {k: 0.0 for k in HPARAM_METRICS}):
            self.writer.file_writer.add_summary(summary)
        self.writer.add_scalar("entropy/max", math.log(self.n_classes), 0)
        if self.wants_entropy:
            self._entropy(val_entropy, 0)

    def augmentation_examples(self, augment, generator: torch.Generator) -> None:
        """16 training images before and after augmentation, once, drawn from the run's ``examples`` stream, so
        that logging them changes no training number."""
        if augment is None:
            return
        x = self.probe_x[:16]
        mean, std = (torch.tensor(v, device=x.device).view(1, -1, 1, 1) for v in (augment.mean, augment.std))
        for tag, images in (("augmentation/original", x), ("augmentation/augmented", augment(x, generator))):
            pixels = (images.reshape(len(x), *augment.shape) * std + mean).clamp(0, 1)
            self.writer.add_images(tag, pixels.cpu(), 0)

    def scalars(self, row: dict) -> None:
        step = row["epoch"]
        for metric, value in row.items():
            if metric != "epoch":
                self.writer.add_scalar(tag(metric), value, step)
        self.writer.add_scalar("gap/loss", row["val/loss"] - row["train/loss"], step)
        self.writer.add_scalar("gap/acc", row["train/acc"] - row["val/acc"], step)

    def histograms(self, epoch: int, step_stats: dict, val_entropy=None) -> None:
        """``val_entropy``: the entropies the epoch's evaluation computed, if it had one."""
        hist = self._histogram
        for name, layer in weight_layers(self.model).items():
            hist(f"hist/weight/{name}", layer.weight, epoch)
        for name, bn in probe.batchnorm_layers(self.model).items():
            hist(f"hist/bn_running_mean/{name}", bn.running_mean, epoch)
            hist(f"hist/bn_running_var/{name}", bn.running_var, epoch)
        for name, values in probe.layer_probe(self.model, self.probe_x, self.probe_y).items():
            hist(f"hist/{name}", values, epoch)
        if val_entropy is None and len(self.val_x):
            with torch.inference_mode():
                val_entropy = torch.cat([probe.entropy(self.model(x)) for x in self.val_x.split(self.eval_batch_size)])
        if val_entropy is not None:
            self._entropy(val_entropy, epoch)
        for name, value in step_stats.items():
            self.writer.add_scalar(name, value, epoch)

    def _histogram(self, tag: str, values, step: int) -> None:
        self.writer.add_histogram_raw(tag, global_step=step, **probe.histogram(values))

    def _entropy(self, values, step: int) -> None:
        self._histogram("hist/entropy/val", values, step)
        self.writer.add_scalar("entropy/val_mean", values.mean().item(), step)

    def finish(self, metrics: dict) -> None:
        """The HParams metrics of the run (its best and final numbers)."""
        if metrics["best"] is None:
            return
        step = metrics["epochs_run"]
        for name, get in HPARAM_METRICS.items():
            self.writer.add_scalar(name, get(metrics), step)


class TensorBoard:
    """The engine's listener: a ``TBLogger`` per member (with ``logging.tensorboard``), in the member's folder."""

    def __init__(self, data, plain, resumed: set):
        # the probes' network, in eval mode: no dropout draw, no update of BatchNorm's running statistics
        self.data, self.plain, self.resumed = data, plain.eval(), resumed

    def wants_histograms(self, member, epoch: int) -> bool:
        tb = member.extra.get("tb")
        return tb is not None and epoch in tb.hist_epochs

    def start(self, engine) -> None:
        for m in engine.members:
            # a resumed run drops what an earlier process logged after its checkpoint
            purge, t = m.state.epoch + 1 if m in self.resumed else None, m.cfg.trainer
            m.extra["tb"] = (TBLogger(m.run_dir, m.cfg.logging, self.plain, self.data, t.epochs, t.eval_batch_size,
                                      purge) if m.cfg.logging.tensorboard else None)
        fresh = {k: m.extra["tb"] for k, m in enumerate(engine.members)
                 if m not in self.resumed and m.extra["tb"] is not None}
        # the untrained models' entropies: one evaluation of the stack, as at every histogram epoch
        wanted = any(tb.wants_entropy for tb in fresh.values())
        entropies = engine.evaluate(self.data.val, entropy=True)["entropy"] if wanted else None
        for k, tb in fresh.items():
            m = engine.members[k]
            self.plain.load_state_dict(engine.model.member_state(k))
            tb.start(m.config, entropies[k] if tb.wants_entropy else None)
            tb.augmentation_examples(m.augment, m.gens["examples"])
            tb.writer.flush()  # on disk before the epoch-0 checkpoint: a resume starts after it

    def epoch(self, engine, result) -> None:
        for k, m in enumerate(engine.members):
            tb, row = m.extra["tb"], result.rows.get(m)
            if tb is None:
                continue
            if row is not None:
                tb.scalars(row)
            if m in result.steps and m.state.status != "diverged":
                self.plain.load_state_dict(engine.model.member_state(k))
                tb.histograms(m.state.epoch, result.steps[m], result.entropies.get(m))
            if m.state.epoch % m.cfg.trainer.checkpoint_every == 0:
                # on disk before the checkpoint: a run killed after it resumes after this epoch, which would be lost
                tb.writer.flush()

    def member_end(self, engine, member, k: int) -> None:
        tb = member.extra.pop("tb", None)
        if tb is None:
            return
        if member.state.status != "interrupted":
            tb.finish(member.metrics(None, None, {}))
        tb.writer.close()

    def close(self, engine) -> None:
        for m in engine.members:  # after an error: whatever is still open
            tb = m.extra.pop("tb", None)
            if tb is not None:
                tb.writer.close()
