"""The search space checked before any trial runs, through trials that nothing records: a dry-run trial of the
space, and the ends of each range swept on the command line. ``sweeper``: the ``StudySweeper`` checked."""

import math

from reg_runner import checks
from reg_runner import config as config_lib
from reg_runner import dotted
from reg_runner.errors import ConfigError, UserError, show
from reg_runner.sweep import jobs


def precheck(sweeper) -> tuple[dict, dict]:
    """A trial drawn from a throwaway study must search something, and must not be refused for a value the search
    does not set, which every trial would share. Returns the config the trials share (what a resumed study must
    still have), and the trial's parameters."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    dry = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = dry.ask()
    overrides = sweeper.trial_overrides(trial)
    if not trial.params:
        raise UserError("the search has nothing to search: give hydra.sweeper.custom_search_space or sweep a key "
                        "(optimizer.lr=tag(log,interval(1e-4,1e-1)), model.norm=choice(none,batchnorm))")
    job = jobs.compose(sweeper.hydra_context.config_loader, sweeper.config, overrides, 0, "the search")
    if sweeper.seeds_per_trial > 1:
        if "seed" in trial.params:
            raise UserError(f"hydra.sweeper.seeds_per_trial={sweeper.seeds_per_trial} runs each trial over its own "
                            "seeds: seed cannot be searched as well")
        if not isinstance(job.get("seed"), int):
            raise ConfigError("seed", job.get("seed"), f"a number with hydra.sweeper.seeds_per_trial="
                              f"{sweeper.seeds_per_trial}: a trial runs seeds seed..seed+{sweeper.seeds_per_trial - 1}")
    try:
        checks.check(job, overrides)
    except ConfigError as e:
        if e.key not in trial.params:
            raise UserError(f"every trial would be refused: {e}") from None
    shared = config_lib.results_config(config_lib.as_data(job))
    for name in trial.params:  # what the trials search is theirs; the rest is the study's
        dotted.drop(shared, name)
    return shared, trial.params


def check_ranges(sweeper, drawn: dict, texts: dict) -> None:
    """Each range swept on the command line, at its ends (each choice of a ``choice``), must be a value its key
    allows: ``model.dropout=interval(0.5,1.5)`` would otherwise refuse the trials that fall outside one by one. A
    float range's upper end is checked just below it, which a draw never reaches: ``interval(0,1)`` suits a
    probability in [0, 1). ``drawn``: the other parameters' values (``precheck``'s); ``texts``: each sweep as
    written."""
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    for name, dist in sweeper.swept.items():
        if isinstance(dist, CategoricalDistribution):
            ends = [(f"its choice {show(c)}", c) for c in dist.choices]
        else:
            top = math.nextafter(dist.high, dist.low) if isinstance(dist, FloatDistribution) and not dist.step \
                else dist.high
            ends = [(f"its lower end {show(dist.low)}", dist.low), (f"its upper end {show(dist.high)}", top)]
        for which, value in ends:
            trial = optuna.trial.FixedTrial({**drawn, name: value})
            try:
                overrides = sweeper.trial_overrides(trial)
                job = jobs.compose(sweeper.hydra_context.config_loader, sweeper.config, overrides, 0, "the search")
                checks.check(job, overrides)
            except ConfigError as e:  # another key's: a rule between it and the others' drawn values
                if e.key == name:
                    raise UserError(f"{name}={texts.get(name, '...')} is not allowed: {which} is not "
                                    f"{e.allowed}") from None
            except UserError as e:  # the config cannot be composed with it (a group option that is not there)
                raise UserError(f"{name}={texts.get(name, '...')} is not allowed: {which}: {e}") from None
            except ValueError:  # a conditional space asks for a parameter this combination does not have
                continue
