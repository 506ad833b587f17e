"""Evaluation precision: float32 (the default), or ``trainer.eval_precision=bf16``: evaluation under autocast on a
bfloat16 copy of the validation and test inputs, made once. Training stays float32, so only the reported val and
test numbers move (docs/speed.md, "bf16 evaluation").
"""

import contextlib
import logging

import torch

log = logging.getLogger(__name__)

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}


def bf16_unsupported(device: torch.device) -> str | None:
    """Why bfloat16 matmuls would not be fast on ``device``, or None when they are."""
    if device.type == "cuda":
        return None if torch.cuda.is_bf16_supported(including_emulation=False) else "this GPU has no bf16 units"
    if device.type == "cpu":
        checks = [check for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
                  if (check := getattr(torch.cpu, name, None)) is not None]
        if not checks or any(check() for check in checks):
            return None  # fast, or this torch cannot tell (let the user judge)
        return "this CPU has neither AVX512-BF16 nor AMX: bf16 matmuls are emulated, slower than float32"
    return f"bf16 evaluation is not measured on {device.type}"


def warn_if_slow(precision: str, device: torch.device) -> None:
    if PRECISIONS[precision] is not None and (reason := bf16_unsupported(device)):
        log.warning("trainer.eval_precision=%s: %s", precision, reason)


class EvalPrecision:
    """The autocast context and the low-precision input copies for evaluation at ``precision``."""

    def __init__(self, precision: str):
        self.dtype = PRECISIONS[precision]
        self._inputs: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` in the evaluation dtype, converted once per tensor (the val and test sets)."""
        if self.dtype is not None and id(x) not in self._inputs:
            self._inputs[id(x)] = (x, x.to(self.dtype))  # keeps x alive, so its id stays its own
        return x if self.dtype is None else self._inputs[id(x)][1]

    def autocast(self, device: torch.device):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=self.dtype)
