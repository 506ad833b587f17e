"""TensorBoard logging of a run, into the run's own folder.

Tags are grouped by kind so that TensorBoard's layout reads well: ``loss/train``, ``loss/val``,
``acc/test``, ``lr``... (a history row's ``train/loss`` becomes ``loss/train``).
"""

from pathlib import Path


def tag(metric: str) -> str:
    split, _, kind = metric.partition("/")
    return f"{kind}/{split}" if kind else metric


class TBLogger:
    def __init__(self, log_dir: Path, enabled: bool = True):
        self.writer = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(log_dir))

    def scalars(self, row: dict) -> None:
        if self.writer is None:
            return
        step = row["epoch"]
        for metric, value in row.items():
            if metric != "epoch":
                self.writer.add_scalar(tag(metric), value, step)
        if "train/loss" in row and "val/loss" in row:
            self.writer.add_scalar("gap/loss_val_minus_train", row["val/loss"] - row["train/loss"], step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
