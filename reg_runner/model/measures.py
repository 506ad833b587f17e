"""What a network costs, as a run records it in ``metrics.json``'s ``size`` (and a search may optimize): FLOPs
per image and the share of near-zero weights (docs/search.md, "Two goals").
"""

import torch
from torch.utils.flop_counter import FlopCounterMode

# L1 leaves weights oscillating around zero, not on it; 1e-3 is a 36th to a 100th of the reference MLP's typical
# initial weight (about 1/sqrt(fan_in)): removing such a weight changes a logit by at most fan_in x 1e-3 x |activation|
NEAR_ZERO = 1e-3


def flops_per_image(model_cfg, shape: tuple[int, ...], n_classes: int) -> int | None:
    """``model_cfg``'s network's FLOPs on one image in evaluation, as ``torch.utils.flop_counter`` counts them (2 per
    multiply-add of matrix products and convolutions), on the meta device; None if it cannot run there."""
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
