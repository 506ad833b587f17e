"""The one module of reg_runner that relies on what Hydra and Optuna do not promise in their public API.

Everything else uses their public API (tests/test_private.py walks the package and fails on a private
name anywhere but here). Each function below has a test in tests/test_private.py that pins exactly the
behaviour it relies on, so an upgrade that changes it fails that test, not a user's sweep.
"""

import contextlib

from hydra._internal.utils import get_args_parser
from hydra.core.hydra_config import HydraConfig


@contextlib.contextmanager
def hydra_config_of(job):
    """While inside, ``${hydra:...}`` interpolations resolve against ``job``'s ``hydra`` node.

    Hydra's ``hydra`` resolver reads the ``HydraConfig`` singleton, which its ``run_job`` sets for the job it
    runs; a sweeper that names a job's folder before the job runs (``hydra.sweep.subdir`` interpolates
    ``${hydra:job.num}`` and ``${hydra:job.override_dirname}``) sets it the same way, then puts back what it
    held. Hydra has no public way to put it back: its ``cfg`` attribute is assigned directly.
    """
    instance = HydraConfig.instance()
    before = instance.cfg
    instance.set_config(job)
    try:
        yield
    finally:
        instance.cfg = before


def hydra_arguments_refused(argv: list[str]) -> str | None:
    """What Hydra's command-line parser refuses in ``argv`` (``unrecognized arguments: --nope``), or None.

    ``hydra.main`` parses the command line with the parser of ``hydra._internal.utils.get_args_parser``
    (``parse_intermixed_args``), whose mistakes argparse prints as the usage, then the message, on several lines.
    The same parser, asked first, gives the message alone. ``--version`` and ``--help`` act as under Hydra.
    """

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
