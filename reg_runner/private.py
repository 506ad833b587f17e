"""The one module of reg_runner that relies on what Hydra, Optuna and torch do not promise in their public API. Each
function has a test in tests/test_private.py that pins the behaviour it relies on (and fails on a private name used
anywhere else), so an upgrade that changes it fails that test, not a user's sweep."""

import contextlib


@contextlib.contextmanager
def hydra_config_of(job):
    """While inside, ``${hydra:...}`` interpolations resolve against ``job``'s ``hydra`` node, as Hydra's
    ``run_job`` sets the ``HydraConfig`` singleton for the job it runs (a sweeper names a job's folder before it
    runs). Hydra has no public way to put the previous one back: its ``cfg`` attribute is assigned directly."""
    from hydra.core.hydra_config import HydraConfig  # here: the training engine imports this module too

    instance = HydraConfig.instance()
    before = instance.cfg
    instance.set_config(job)
    try:
        yield
    finally:
        instance.cfg = before


def hydra_arguments_refused(argv: list[str]) -> str | None:
    """What Hydra's command-line parser (``get_args_parser``) refuses in ``argv`` (``unrecognized arguments:
    --nope``), or None: the message alone, without the usage. ``--version`` and ``--help`` act as under Hydra."""
    from hydra._internal.utils import get_args_parser

    class Refused(Exception):
        pass

    def error(message: str):
        raise Refused(message)

    parser = get_args_parser()
    parser.error = error
    try:
        parser.parse_intermixed_args(argv)
    except Refused as e:
        return str(e)
    return None


def cpu_has_bf16_units() -> bool | None:
    """Whether this CPU computes bfloat16 in hardware (AVX512-BF16 or AMX), or None where this torch cannot tell:
    ``torch.cpu``'s ``_is_avx512_bf16_supported`` and ``_is_amx_tile_supported`` are its only way to ask."""
    import torch

    checks = [check for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
              if (check := getattr(torch.cpu, name, None)) is not None]
    return any(check() for check in checks) if checks else None


def memory_owner(t):
    """The tensor whose memory ``t`` is (``t`` itself, or the tensor it is a view of: ``Tensor._base``)."""
    return t if t._base is None else t._base
