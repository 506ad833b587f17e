"""What the engine hands each epoch to: every member's records, and the progress bar (TensorBoard's listener is
in ``reg_runner.logging.tensorboard``). A listener has any of ``start`` (before the first epoch), ``epoch`` (after
each), ``member_end`` (a member leaves the stack: its slice still exists) and ``close``.
"""

import time

from tqdm import tqdm

from reg_runner.model import measures
from reg_runner.records import RunFolder


class Records:
    """Each member's folder: ``last.pt`` (and ``best.pt`` when the best epoch moved), then history.csv, then
    metrics.json, at epoch 0, every ``trainer.checkpoint_every`` epochs and when the member ends; history.csv also
    at each evaluation in between (why in that order: docs/reliability.md, "Whole records")."""

    def __init__(self, data_info: dict, n_params: int, t0: float, resumed: set):
        self.data_info, self.n_params, self.resumed = data_info, n_params, resumed
        self.t0, self.t_train = t0, time.perf_counter()  # wall_s counts from t0, train_s from now
        self.t_loop = self.loop_started_at = None

    def start(self, engine) -> None:
        self.loop_started_at, self.t_loop = time.time(), time.perf_counter()
        self.flops = measures.flops_per_image(engine.members[0].cfg.model, engine.data.shape, engine.data.n_classes)
        self.weights = list(engine.model.weight_names.values())  # the weight layers' parameters, by state_dict name
        for k, m in enumerate(engine.members):
            # best.pt: rewritten only when the best epoch moved; a resumed run rewrites it once, as a kill
            # between last.pt and best.pt may have left it behind
            m.extra["saved_best"] = None
            if m not in self.resumed:
                folder = RunFolder(m.run_dir)  # the initial weights, kept for the landscape's linear path
                folder.save_checkpoint(folder.init, dict(model=engine.model.member_state(k), epoch=0, config=m.config))
                self.record(engine, m, k)  # epoch 0: every run can be resumed, and knows its starting config

    def epoch(self, engine, result) -> None:
        for k, m in enumerate(engine.members):
            if m.state.status == "running" and m.state.epoch % m.cfg.trainer.checkpoint_every == 0:
                self.record(engine, m, k)
            elif m.state.status == "running" and result.rows.get(m) is not None:  # the curves follow training
                RunFolder(m.run_dir).write_history(m.state.history, durable=False)

    def record(self, engine, m, k: int) -> None:
        folder, timing = RunFolder(m.run_dir), self.timing(m)
        folder.save_checkpoint(folder.last, m.checkpoint(engine.model.member_state(k), timing))
        state = m.state
        if state.best_snapshot is not None and state.best["epoch"] != m.extra["saved_best"]:
            folder.save_checkpoint(folder.best, dict(**state.best_snapshot, epoch=state.best["epoch"], config=m.config))
            m.extra["saved_best"] = state.best["epoch"]
        folder.write_history(state.history)
        best = state.best_snapshot["model"] if state.best_snapshot is not None else None
        size = dict(flops_per_image=self.flops, near_zero=measures.near_zero(best, self.weights) if best else None)
        folder.write_metrics(m.metrics(self.data_info, self.n_params, timing, size))

    member_end = record  # a member that leaves the stack is recorded as it ends

    def timing(self, member) -> dict:
        """The timing a member's metrics.json records."""
        now, before = time.perf_counter(), member.extra.get("timing_before", {})
        first = member.extra.get("first_epoch", 0)
        loop = now - self.t_loop if self.t_loop is not None else 0.0
        return dict(
            wall_s=before.get("wall_s", 0.0) + now - self.t0,
            train_s=before.get("train_s", 0.0) + now - self.t_train,  # the loop, with what is written before and after
            loop_s=before.get("loop_s", 0.0) + loop,  # the epochs alone, with their logging and checkpoints
            epochs_per_s=(member.state.epoch - first) / loop if loop and member.state.epoch > first else None,
            resumed_at=before.get("resumed_at", []) + ([first] if member.extra.get("resumed") else []),
            # unix time this process began its first epoch: with the launch time, the start-up cost
            loop_started_at=self.loop_started_at,
            stack_size=member.extra.get("stack_size", 1),  # the runs trained together in this process
        )


class Progress:
    """One bar for the stack: epochs done, and the best validation value so far."""

    def __init__(self, show: bool, epochs: int, first_epoch: int):
        self.bar = tqdm(total=epochs, initial=first_epoch, disable=not show, unit="epoch", dynamic_ncols=True,
                        leave=False)

    def epoch(self, engine, result) -> None:
        rows = [r for r in result.rows.values() if r is not None]
        if len(rows) == 1:
            self.bar.set_postfix_str(f"train/loss {rows[0]['train/loss']:.4f}  val/acc {rows[0]['val/acc']:.4f}",
                                     refresh=False)
        elif rows:
            self.bar.set_postfix_str(f"{len(rows)} runs  best val/acc {max(r['val/acc'] for r in rows):.4f}",
                                     refresh=False)
        self.bar.update(1)  # after the postfix: the bar is drawn with this epoch's numbers, not the last one's

    def close(self, engine) -> None:
        self.bar.close()
