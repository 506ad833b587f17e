"""Whether ``torch.func``'s vectorized form of a user's own network (``stack_module_state`` + ``functional_call``
under ``torch.vmap``) gives each member bitwise its lone outputs, gradients and BatchNorm statistics here: the
condition for it to replace the member-by-member form (``reg_runner.model.stack.Looped``) that users' families and
plain ``nn.Module``s stack with.

    python benchmarks/vmap_form.py                    # on the CPU, K = 2, 4 and 8 at batches of 25 and 300
    python benchmarks/vmap_form.py --device cuda      # on a GPU
    python benchmarks/vmap_form.py --quick            # one small case per network: a check that it runs (tests)

One row per network, K and batch: ``exact``, or the first thing that differs and by how much. Dropout is left out:
under vmap the members' masks come from one generator, not from each member's own, so a network with dropout
could never match its lone runs.
"""

import argparse
import copy
import sys
from pathlib import Path

import torch
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from stacking import TwoConvs  # noqa: E402


class ThreeLinear(nn.Module):
    """The reference MLP's shape as a plain module: 3 hidden layers of 100."""

    def __init__(self, in_channels: int, num_classes: int, side: int = 28):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(in_channels * side * side, 100), nn.ReLU(),
                                 nn.Linear(100, 100), nn.ReLU(), nn.Linear(100, 100), nn.ReLU(),
                                 nn.Linear(100, num_classes))

    def forward(self, x):
        return self.net(x)


NETWORKS = {"three linear": ThreeLinear, "two convs + BatchNorm": TwoConvs}


def compare(make, k: int, batch: int, side: int, device: torch.device) -> str:
    """``exact``, or where the vectorized stack of ``k`` first differs from the members alone."""
    from torch.func import functional_call, stack_module_state, vmap

    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    nets = [make().to(device) for _ in range(k)]
    params, buffers = stack_module_state(nets)
    params = {n: p.detach().clone().requires_grad_() for n, p in params.items()}
    base = copy.deepcopy(nets[0]).to("meta")
    x = torch.randn(k, batch, 1, side, side, generator=g).to(device)
    grad = torch.randn(k, batch, 10, generator=g).to(device)

    def call(p, b, xk):
        return functional_call(base, (p, b), (xk,))

    out = vmap(call, randomness="error")(params, buffers, x)
    out.backward(grad)
    for i, net in enumerate(nets):
        own = net(x[i])
        own.backward(grad[i])
        if not torch.equal(own, out[i]):
            return f"outputs of member {i}, by {(own - out[i]).abs().max().item():.1e}"
        for name, p in net.named_parameters():
            if not torch.equal(p.grad, params[name].grad[i]):
                return f"the gradient of {name}, member {i}, by {(p.grad - params[name].grad[i]).abs().max().item():.1e}"
        for name, b in net.named_buffers():
            if not torch.equal(b, buffers[name][i]):
                return f"the buffer {name}, member {i}"
    return "exact"


def arguments(argv=None) -> argparse.Namespace:
    sys.path.insert(0, str(HERE.parent))
    from reg_runner.errors import Parser

    p = Parser(prog="python benchmarks/vmap_form.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, or any device torch names")
    p.add_argument("--quick", action="store_true", help="K = 2, batches of 25, 8x8 images: a check that it runs")
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = arguments(argv)
    device = torch.device(args.device)
    cases = [(2, 25, 8)] if args.quick else [(k, b, 28) for k in (2, 4, 8) for b in (25, 300)]
    print(f"{'network':24}{'K':>3}{'batch':>7}  vectorized form against the members alone, on {device}")
    for name, cls in NETWORKS.items():
        for k, batch, side in cases:
            make = (lambda: cls(1, 10, side)) if cls is ThreeLinear else (lambda: cls(1, 10))
            print(f"{name:24}{k:>3}{batch:>7}  {compare(make, k, batch, side, device)}", flush=True)


if __name__ == "__main__":
    main()
