"""trainer.eval_precision=bf16: evaluation in bfloat16 moves the reported numbers a little and
leaves training exactly as it was."""

import csv

import pytest
import torch
import yaml

from reg_runner.trainer.engine import EvalPrecision

NORMS = "none,batchnorm,layernorm"


def history(run):
    return list(csv.DictReader((run / "history.csv").open()))


def test_bf16_evaluation_changes_no_training_number(cli):
    fp32 = cli("--multirun", f"model.norm={NORMS}", "trainer.epochs=3").run_dir
    bf16 = cli("--multirun", f"model.norm={NORMS}", "trainer.epochs=3", "trainer.eval_precision=bf16").run_dir
    runs = list(zip(sorted(p for p in fp32.iterdir() if p.is_dir()), sorted(p for p in bf16.iterdir() if p.is_dir())))
    assert len(runs) == 3
    for a, b in runs:
        assert yaml.safe_load((b / "resolved_config.yaml").read_text())["trainer"]["eval_precision"] == "bf16"
        ha, hb = history(a), history(b)
        assert len(ha) == len(hb) == 3
        for ra, rb in zip(ha, hb):
            # the same training, to the last digit: evaluation never feeds back
            assert (ra["train/loss"], ra["train/acc"]) == (rb["train/loss"], rb["train/acc"])
            for split in ("val", "test"):
                assert float(rb[f"{split}/loss"]) == pytest.approx(float(ra[f"{split}/loss"]), rel=0.03)
                assert abs(float(rb[f"{split}/acc"]) - float(ra[f"{split}/acc"])) <= 0.03
        # and evaluation did run in bf16: its losses are not the float32 ones
        assert any(ra["val/loss"] != rb["val/loss"] for ra, rb in zip(ha, hb)), a.name


def test_bf16_inputs_are_converted_once_per_tensor():
    x = torch.randn(5, 3)
    precision = EvalPrecision("bf16")
    low = precision.inputs(x)
    assert low.dtype == torch.bfloat16 and precision.inputs(x) is low
    assert torch.allclose(low.float(), x, rtol=1e-2)
    assert EvalPrecision("fp32").inputs(x) is x
