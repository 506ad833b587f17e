"""The loops the runner is measured against, each run alone in a fresh process by bench.py.

    python benchmarks/loops.py lean|typical|lightning --epochs 30 [--data-root DIR] [--device auto]

All three train the reference study's workload: the same MLP (3 hidden ReLU layers of 100 units
and a linear classifier, PyTorch's default init), Adam at lr 1e-3, batches of 300 from the same
3,000 training images, and every epoch an evaluation of loss and accuracy on the whole validation
(57,000) and test (10,000) sets. The data is what the runner itself loads (``reg_runner.data``:
same split, same normalization), already in memory as float tensors before any clock starts.

- ``lean``: what an expert writes, and what the runner should cost: tensors on the device, a
  per-epoch ``randperm`` sliced into batches, evaluation in large batches under ``inference_mode``,
  metrics kept on the device and read once per epoch.
- ``typical``: what the course writes: ``TensorDataset`` + ``DataLoader(shuffle=True)`` for
  training, ``DataLoader`` at the same batch size for evaluation, ``.to(device)`` and ``.item()``
  per batch.
- ``lightning``: a ``LightningModule`` fitted by Lightning's ``Trainer`` on the typical loop's
  DataLoaders (validation and test as two validation loaders, metrics through ``self.log``),
  with its ``TensorBoardLogger`` and its defaults otherwise (its checkpoint callback included).

Each writes one JSON record: seconds per epoch (first epoch's start to the last evaluation's end,
over the number of epochs), the unix time of the first training step, and the final accuracies.
"""

import json
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

CONF = Path(__file__).resolve().parents[1] / "conf"
BATCH_SIZE = 300  # the reference study's
LR = 1e-3  # Adam's, as conf/optimizer/adam.yaml


def mlp(in_features: int = 784, width: int = 100, depth: int = 3, n_classes: int = 10) -> nn.Sequential:
    layers, n = [], in_features
    for _ in range(depth):
        layers += [nn.Linear(n, width), nn.ReLU()]
        n = width
    return nn.Sequential(*layers, nn.Linear(n, n_classes))


def load_data(data_root: str | None, val_size: int | None, device: torch.device, train_fraction: float | None = None,
              verify: bool = True):
    """The runner's own data: conf/data/mnist.yaml with the given root, validation cap and data.verify."""
    from reg_runner.data import parse_config
    from reg_runner.data import tensors as data_lib

    cfg = OmegaConf.load(CONF / "data" / "mnist.yaml")
    cfg.root, cfg.val_size, cfg.verify = data_root, val_size, verify
    if train_fraction is not None:
        cfg.train_fraction = train_fraction
    data = data_lib.load(parse_config(OmegaConf.to_container(cfg)), device)
    for split in (data.train, data.val, data.test):  # the loops below take flattened images, as a user's MLP does
        split.x = split.x.flatten(1)
    return data


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Clock:
    """First-step time and the span from the first epoch's start to the last evaluation's end."""

    def __init__(self, device: torch.device):
        self.device, self.first_step_at, self.start, self.end = device, None, None, None

    def epoch_start(self) -> None:
        if self.start is None:
            sync(self.device)
            self.start = time.perf_counter()

    def stepped(self) -> None:
        if self.first_step_at is None:
            self.first_step_at = time.time()

    def stop(self) -> None:
        sync(self.device)
        self.end = time.perf_counter()


def lean(data, epochs: int, device: torch.device, eval_batch_size: int, clock: Clock) -> dict:
    model = mlp(data.in_features).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    generator = torch.Generator(device).manual_seed(0)
    x, y, n = data.train.x, data.train.y, len(data.train)
    for _ in range(epochs):
        clock.epoch_start()
        model.train()
        perm = torch.randperm(n, device=device, generator=generator)
        loss_sum, correct = x.new_zeros(()), torch.zeros((), dtype=torch.long, device=device)
        for start in range(0, n, BATCH_SIZE):
            idx = perm[start : start + BATCH_SIZE]
            logits = model(x[idx])
            loss = F.cross_entropy(logits, y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            clock.stepped()
            loss_sum += loss.detach() * len(idx)
            correct += (logits.detach().argmax(1) == y[idx]).sum()
        model.eval()
        values = [loss_sum / n, correct.double() / n]
        with torch.inference_mode():
            for split in (data.val, data.test):
                split_loss = split.x.new_zeros((), dtype=torch.float64)
                split_correct = torch.zeros((), dtype=torch.long, device=device)
                for start in range(0, len(split), eval_batch_size):
                    logits = model(split.x[start : start + eval_batch_size])
                    target = split.y[start : start + eval_batch_size]
                    split_loss += F.cross_entropy(logits, target, reduction="sum").double()
                    split_correct += (logits.argmax(1) == target).sum()
                values += [split_loss / len(split), split_correct.double() / len(split)]
        metrics = torch.stack([v.double() for v in values]).tolist()  # one read per epoch
    clock.stop()
    return dict(val_acc=metrics[3], test_acc=metrics[5])


def loaders(data, eval_batch_size: int):
    from torch.utils.data import DataLoader, TensorDataset

    cpu = [(s.x.cpu(), s.y.cpu()) for s in (data.train, data.val, data.test)]
    train = DataLoader(TensorDataset(*cpu[0]), batch_size=BATCH_SIZE, shuffle=True)
    val = DataLoader(TensorDataset(*cpu[1]), batch_size=eval_batch_size)
    test = DataLoader(TensorDataset(*cpu[2]), batch_size=eval_batch_size)
    return train, val, test


def typical(data, epochs: int, device: torch.device, eval_batch_size: int, clock: Clock) -> dict:
    train_loader, val_loader, test_loader = loaders(data, eval_batch_size)
    model = mlp(data.in_features).to(device)
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)

    def evaluate(loader):
        total_loss, correct, count = 0.0, 0, 0
        with torch.no_grad():
            for x, y in loader:
                x, y = x.to(device), y.to(device)
                out = model(x)
                total_loss += criterion(out, y).item() * len(y)
                correct += (out.argmax(1) == y).sum().item()
                count += len(y)
        return total_loss / count, correct / count

    for _ in range(epochs):
        clock.epoch_start()
        model.train()
        total_loss, correct, count = 0.0, 0, 0
        for x, y in train_loader:
            x, y = x.to(device), y.to(device)
            optimizer.zero_grad()
            out = model(x)
            loss = criterion(out, y)
            loss.backward()
            optimizer.step()
            clock.stepped()
            total_loss += loss.item() * len(y)
            correct += (out.argmax(1) == y).sum().item()
            count += len(y)
        model.eval()
        _, val_acc = evaluate(val_loader)
        _, test_acc = evaluate(test_loader)
    clock.stop()
    return dict(val_acc=val_acc, test_acc=test_acc)


def lightning(data, epochs: int, device: torch.device, eval_batch_size: int, clock: Clock) -> dict:
    try:
        import lightning as L
        from lightning.pytorch.loggers import TensorBoardLogger
    except ImportError:
        sys.exit("lightning is not installed: pip install -c constraints.txt -e '.[bench]'")
    train_loader, val_loader, test_loader = loaders(data, eval_batch_size)

    class Classifier(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.model = mlp(data.in_features)

        def forward(self, x):
            return self.model(x)

        def training_step(self, batch, batch_idx):
            x, y = batch
            out = self(x)
            loss = F.cross_entropy(out, y)
            self.log("train/loss", loss, on_step=False, on_epoch=True)
            self.log("train/acc", (out.argmax(1) == y).float().mean(), on_step=False, on_epoch=True)
            return loss

        def validation_step(self, batch, batch_idx, dataloader_idx=0):
            x, y = batch
            out = self(x)
            name = ("val", "test")[dataloader_idx]
            self.log(f"{name}/loss", F.cross_entropy(out, y), add_dataloader_idx=False)
            self.log(f"{name}/acc", (out.argmax(1) == y).float().mean(), add_dataloader_idx=False)

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=LR)

    class Timing(L.Callback):
        def on_train_epoch_start(self, trainer, module):
            clock.epoch_start()

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            clock.stepped()

    with tempfile.TemporaryDirectory() as logs:
        trainer = L.Trainer(
            max_epochs=epochs,
            accelerator="gpu" if device.type == "cuda" else "cpu",
            devices=1,
            logger=TensorBoardLogger(logs),
            default_root_dir=logs,
            callbacks=[Timing()],
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        trainer.fit(Classifier(), train_loader, [val_loader, test_loader])
        clock.stop()
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    return dict(val_acc=metrics["val/acc"], test_acc=metrics["test/acc"])


LOOPS = {"lean": lean, "typical": typical, "lightning": lightning}


def main() -> None:
    from reg_runner.errors import Parser, UserError, refuse
    from reg_runner.device import resolve as resolve_device

    parser = Parser(prog="python benchmarks/loops.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("loop", choices=LOOPS)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--data-root", default=None, help="a folder with the four MNIST IDX files")
    parser.add_argument("--no-verify", action="store_true", help="--data-root's files as they are (data.verify=false)")
    parser.add_argument("--val-size", type=int, default=None)
    parser.add_argument("--train-fraction", type=float, default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--eval-batch-size", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    for flag, value in (("--epochs", args.epochs), ("--eval-batch-size", args.eval_batch_size)):
        if value < 1:  # 0 epochs would time nothing (and divide by zero)
            parser.error(f"argument {flag}: {value!r} is not allowed: an integer >= 1")
    try:
        device = resolve_device(args.device)
        torch.manual_seed(0)
        data = load_data(args.data_root, args.val_size, device, args.train_fraction, not args.no_verify)
    except UserError as e:  # a bad --device or --data-root: one line, as the runner gives
        refuse(str(e))
    clock = Clock(device)
    result = LOOPS[args.loop](data, args.epochs, device, args.eval_batch_size, clock)
    result.update(epoch_s=(clock.end - clock.start) / args.epochs, first_step_at=clock.first_step_at,
                  device=str(device), in_features=data.in_features, n_train=len(data.train), n_val=len(data.val),
                  n_test=len(data.test))
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
