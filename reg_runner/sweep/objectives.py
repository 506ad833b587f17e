"""What a search optimizes: the runs' ``objective`` (a trial's value is its runs' best validation value, the mean
over its seeds), or with ``hydra.sweeper.objectives`` two or more metrics every run records (``flops`` and
``near_zero``: ``reg_runner.model.measures``), a multi-objective study whose result is the Pareto front. The metrics,
their directions and where ``metrics.json`` holds each: docs/search.md, "Two goals".
"""

from reg_runner.errors import ConfigError
from reg_runner.schema import is_number, reject

# what hydra.sweeper.sampler._target_ may name: Optuna's samplers, and the plugin's makers of NSGA-II and NSGA-III
SAMPLERS = ("optuna.samplers.*", "hydra_plugins.hydra_optuna_sweeper.*")
DIRECTIONS = {"val/acc": "maximize", "val/loss": "minimize", "params": "minimize", "flops": "minimize",
              "near_zero": "maximize", "train_s": "minimize"}
# where each is in a run's metrics.json (None: the run's own objective, at its best); the others: ("best", name)
PATHS = {"params": ("n_parameters",), "flops": ("size", "flops_per_image"), "near_zero": ("size", "near_zero"),
         "train_s": ("timing", "train_s"), None: ("best_val",)}


def direction_of(objective: str) -> str:
    """The direction a search optimizes ``objective`` in."""
    return DIRECTIONS.get(objective, "maximize")


def parse(v):
    """``hydra.sweeper.objectives``: null, or two or more distinct metrics that every run records."""
    if v is None:
        return None
    known = ", ".join(DIRECTIONS)
    if not isinstance(v, (list, tuple)) or len(v) < 2 or not all(isinstance(o, str) for o in v):
        raise reject(f"null (the runs' objective alone) or a list of two or more of {known}, e.g. [val/acc,params]")
    for o in v:
        if o.startswith("test/"):
            raise reject(f"validation metrics and sizes only: {o} is measured on the test set, which never steers "
                         f"a search ({known})")
        if o not in DIRECTIONS:
            raise reject(f"metrics every run records: {o} is none ({known})")
    if (twice := next((o for i, o in enumerate(v) if o in v[:i]), None)) is not None:
        raise reject(f"each metric once: {twice} is given twice")
    return list(v)


def value(record: dict, objective: str | None) -> float | None:
    """A run's value of ``objective`` (None: its own ``objective``'s best) from its metrics.json; None if it recorded
    none (or not a finite number)."""
    node = record
    for key in PATHS.get(objective, ("best", objective)):
        node = node.get(key) if isinstance(node, dict) else None
    return float(node) if is_number(node) else None


def check_sampler(target: str, arguments: dict, objectives: list[str]) -> None:
    """A sampler that handles several objectives, tried on an empty study of these directions (Optuna's CMA-ES,
    for one, handles one objective only)."""
    import warnings

    import optuna
    from hydra.utils import instantiate

    def tried(directions) -> Exception | None:
        try:
            sampler = instantiate({"_target_": target, **arguments}, _execution_whitelist_=SAMPLERS)
            optuna.create_study(sampler=sampler, directions=directions).ask().suggest_float("x", 0.0, 1.0)
        except Exception as e:
            return e
        return None

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        failed = tried([direction_of(o) for o in objectives])
        if failed is not None and tried(["maximize"]) is None:  # what fails is the several objectives
            raise ConfigError("hydra.sweeper.sampler._target_", target, "a sampler for several objectives "
                              "(hydra/sweeper/sampler=tpe, nsgaii, nsgaiii, random, gp or qmc): "
                              f"{target.rpartition('.')[2]} handles one ({type(failed).__name__})")
