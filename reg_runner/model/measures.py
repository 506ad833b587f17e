"""What a network costs, as a run records it in ``metrics.json``'s ``size`` (and a search may optimize):

- ``flops_per_image``: the floating-point operations of one image's evaluation forward pass, as
  ``torch.utils.flop_counter`` counts them: matrix products and convolutions, 2 per multiply-add (biases,
  normalization and activations are not counted). Counted on the meta device: no memory, no arithmetic.
- ``near_zero``: the share of the weight layers' weights (Linear and convolution weights, what L1/L2 act
  on) whose magnitude is below ``NEAR_ZERO`` at the best epoch: the weights that L1 has all but removed.
  Gradient descent with an L1 penalty oscillates around zero rather than landing on it, so an exact zero
  count says nothing; 1e-3 is below a thousandth of the typical initial weight of these layers (about
  1/sqrt(fan_in), 0.036 to 0.1 in the reference MLP), and removing such weights changes a logit by at
  most fan_in x 1e-3 x |activation|.
"""

import torch
from torch.utils.flop_counter import FlopCounterMode

NEAR_ZERO = 1e-3


def flops_per_image(model_cfg, shape: tuple[int, ...], n_classes: int) -> int | None:
    """``model_cfg``'s network's FLOPs on one image in evaluation; None if it cannot run on the meta device (code
    that reads values)."""
    try:
        with torch.device("meta"):
            net = model_cfg.plain(tuple(shape), n_classes)
        x = torch.zeros((1, *shape), device="meta")
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            net.eval()(x)
    except Exception:
        return None
    return int(counter.get_total_flops())


def near_zero(state: dict, names) -> float | None:
    """The share of the weights ``names`` in ``state`` (a member's state_dict) below ``NEAR_ZERO`` in magnitude."""
    weights = [state[name] for name in names if name in state]
    total = sum(w.numel() for w in weights)
    if not total:
        return None
    return sum(int((w.abs() < NEAR_ZERO).sum()) for w in weights) / total
