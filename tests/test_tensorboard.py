"""TensorBoard records read back from the real event files a run writes."""

import math

import pytest
from conftest import read_metrics, without_timing
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.plugins.hparams import plugin_data_pb2

LAYERS = ("layer1", "layer2", "layer3", "output")
HIDDEN = ("layer1", "layer2", "layer3")


def events(run) -> EventAccumulator:
    return EventAccumulator(str(run), size_guidance={"histograms": 0, "scalars": 0, "tensors": 0}).Reload()


def hparams_sessions(run) -> list:
    """The HParams session-start entries in the run's event files, decoded."""
    sessions = []
    for path in run.glob("events.out.tfevents.*"):
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                if value.tag == "_hparams_/session_start_info":
                    data = plugin_data_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content)
                    sessions.append(data.session_start_info)
    return sessions


@pytest.fixture(scope="module")
def instrumented(tmp_path_factory, tiny_data):
    from conftest import CLI

    cli = CLI(tmp_path_factory.mktemp("tb"), tiny_data)
    return cli("model.norm=batchnorm", "reg.l1=1e-4", "augmentation=noise_affine", "trainer.epochs=12",
               "logging.histograms=5", "tags=[course,week1]", "notes='first look: l1 with batchnorm'").run_dir


def test_every_tag_for_every_layer(instrumented):
    tags = events(instrumented).Tags()
    scalars, hists = set(tags["scalars"]), set(tags["histograms"])
    for split in ("train", "val", "test"):
        assert {f"loss/{split}", f"acc/{split}"} <= scalars
    assert {"lr", "penalty/train", "gap/loss", "gap/acc", "entropy/val_mean", "entropy/max"} <= scalars
    for layer in LAYERS:
        assert {f"hist/weight/{layer}", f"hist/input_grad/{layer}"} <= hists
        assert {f"grad_norm/{layer}", f"update_ratio/{layer}"} <= scalars
    for layer in HIDDEN:
        assert {f"hist/activation/{layer}", f"hist/bn_running_mean/{layer}", f"hist/bn_running_var/{layer}"} <= hists
    assert "hist/entropy/val" in hists
    assert {"augmentation/original", "augmentation/augmented"} <= set(tags["images"])


def test_histograms_at_the_configured_number_of_epochs(instrumented):
    ea = events(instrumented)
    steps = [e.step for e in ea.Histograms("hist/weight/layer1")]
    assert len(steps) == 5 and steps[0] == 1 and steps[-1] == 12 and steps == sorted(set(steps))
    for tag in ea.Tags()["histograms"]:
        expected = [0, *steps] if tag == "hist/entropy/val" else steps  # entropy: the untrained model at 0
        assert [e.step for e in ea.Histograms(tag)] == expected, tag
    assert [e.step for e in ea.Scalars("loss/val")] == list(range(1, 13))  # scalars every evaluation


def test_untrained_entropy_is_near_the_maximum(instrumented):
    ea = events(instrumented)
    assert ea.Scalars("entropy/max")[0].value == pytest.approx(math.log(10))
    at_start = ea.Scalars("entropy/val_mean")[0]
    assert at_start.step == 0 and at_start.value == pytest.approx(math.log(10), abs=0.05)
    assert ea.Scalars("entropy/val_mean")[-1].value < at_start.value - 0.1  # a trained model is surer
    hist = ea.Histograms("hist/entropy/val")[0].histogram_value
    assert hist.max <= math.log(10) + 1e-4 and hist.min > 1.5


def test_scalars_match_the_history(instrumented):
    m = read_metrics(instrumented)
    ea = events(instrumented)
    assert ea.Scalars("acc/val")[-1].value == pytest.approx(m["final"]["val/acc"], rel=1e-6)
    gap = ea.Scalars("gap/loss")[-1].value
    assert gap == pytest.approx(m["final"]["val/loss"] - m["final"]["train/loss"], rel=1e-5, abs=1e-6)


def test_hparams_entry_once_per_run_with_metrics(instrumented):
    sessions = hparams_sessions(instrumented)
    assert len(sessions) == 1
    hp = sessions[0].hparams
    assert hp["model.norm"].string_value == "batchnorm" and hp["reg.l1"].number_value == pytest.approx(1e-4)
    assert hp["optimizer"].string_value == "Adam" and "data.root" not in hp and "trainer.device" not in hp
    # the labels, as text (the dashboard's filter reads them)
    assert hp["tags"].string_value == "course, week1" and hp["notes"].string_value == "first look: l1 with batchnorm"
    m = read_metrics(instrumented)
    assert m["tags"] == ["course", "week1"] and m["notes"] == "first look: l1 with batchnorm"
    resolved = (instrumented / "resolved_config.yaml").read_text()
    assert "- course\n" in resolved and "notes: 'first look: l1 with batchnorm'" in resolved
    ea = events(instrumented)
    assert ea.Scalars("hparams/best_val_acc")[-1].value == pytest.approx(m["best_val"], rel=1e-6)
    assert ea.Scalars("hparams/test_acc_at_best")[-1].value == pytest.approx(m["test_at_best"]["acc"], rel=1e-6)
    assert list(instrumented.parent.glob(f"{instrumented.name}/*/events.out.tfevents.*")) == []  # no extra run dir


def test_recording_does_not_change_the_numbers(cli):
    common = ("model.dropout=0.2", "model.norm=batchnorm", "augmentation=noise_affine", "trainer.epochs=4")
    a = read_metrics(cli(*common, "logging.histograms=4").run_dir)
    b = read_metrics(cli(*common, "logging.histograms=0").run_dir)
    c = read_metrics(cli(*common, "logging.tensorboard=false").run_dir)
    assert without_timing(a) == without_timing(b) == without_timing(c)


def test_histograms_off(cli):
    run = cli("logging.histograms=0", "trainer.epochs=2").run_dir
    tags = events(run).Tags()
    assert tags["histograms"] == [] and "loss/val" in tags["scalars"] and len(hparams_sessions(run)) == 1


def test_multirun_runs_are_named_by_their_overrides(cli):
    proc = cli("--multirun", "model.norm=none,batchnorm", "objective=val/loss", "trainer.epochs=1", "tags=[nightly]")
    names = sorted(p.name for p in proc.run_dir.iterdir() if p.is_dir())
    assert len(names) == 2
    assert "model.norm=none" in names[0] and "model.norm=batchnorm" in names[1]
    assert not any("tags" in n for n in names)  # a label names no folder
    assert all("objective=val-loss" in n and "data.root" not in n for n in names)  # no slash, no path
    for name in names:
        assert len(hparams_sessions(proc.run_dir / name)) == 1


def test_a_resumed_runs_event_file_sorts_after_the_interrupted_ones(tmp_path):
    """TensorBoard reads a folder's event files in name order; a name starts with the second it was made. A resume
    within that second, by a process of a lower id, must still come after (else its purge step drops nothing)."""
    import socket
    import time

    from torch.utils.tensorboard import SummaryWriter

    from reg_runner.logging.tensorboard import after_earlier_files

    # made this second by a process whose id sorts after this one's
    earlier = tmp_path / f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.99999999.0"
    earlier.write_bytes(b"")
    after_earlier_files(tmp_path)
    writer = SummaryWriter(log_dir=str(tmp_path))
    writer.close()
    names = sorted(p.name for p in tmp_path.glob("events.out.tfevents.*"))
    assert len(names) == 2 and names[0] == earlier.name  # the new file is read after the earlier one
