"""Sweep overrides as an Optuna search space, read with Hydra's public override parser.

    optimizer.lr=tag(log,interval(1e-4,1e-1))   a float drawn on a log scale
    model.width=int(interval(32,512))           an integer
    model.norm=choice(none,batchnorm)           a choice
    seed=range(0,10,2)                          an integer of the range (its stop excluded)
    optimizer.lr=0.01                           fixed: every trial has it

The same space, for the same overrides, as hydra-optuna-sweeper's own sweeper makes
(tests/test_private.py compares the two), so a search preset means what its documentation says.
"""

from decimal import Decimal
from fractions import Fraction
from math import ceil, ulp


def distribution(override):
    """An Optuna distribution for a sweep override; for a plain one, its value as written."""
    from hydra.core.override_parser.types import Transformer
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if not override.is_sweep_override():
        return override.get_value_element_as_str()

    def listed():
        choices = list(override.sweep_iterator(transformer=Transformer.encode))
        if odd := [c for c in choices if not isinstance(c, (str, int, float, bool, type(None)))]:
            raise ValueError(f"{override.input_line}: a choice takes str, int, float, bool or null, not "
                             f"{type(odd[0]).__name__}")
        return CategoricalDistribution(choices)

    value = override.value()
    if override.is_choice_sweep():
        return listed()
    if override.is_range_sweep():
        if value.step == 0:
            raise ValueError(f"{override.input_line}: a range needs a step other than 0")
        if value.shuffle or value.transformers:
            return listed()
        values = value.range()
        if isinstance(values, range):
            if not values:
                raise ValueError(f"{override.input_line}: the range holds no value")
            low, high = sorted((values[0], values[-1]))
            return IntDistribution(low, high, step=abs(values.step))
        start, stop, step = Decimal(values.start), Decimal(values.stop), Decimal(values.step)
        count = ceil((Fraction(stop) - Fraction(start)) / Fraction(step))
        if count <= 0:
            raise ValueError(f"{override.input_line}: the range holds no value")
        last = start + (count - 1) * step  # Optuna's range includes its end; Hydra's stop is excluded
        low, high = sorted((float(start), float(last)))
        step_float = float(abs(step))
        exact = (Decimal(str(low)) == min(start, last) and Decimal(str(high)) == max(start, last)
                 and Decimal(str(step_float)) == abs(step) and not (step_float < max(ulp(low), ulp(high))
                                                                    and low != high))
        return FloatDistribution(low, high, step=step_float) if exact else listed()
    if override.is_interval_sweep():
        log = "log" in value.tags
        if isinstance(value.start, int) and isinstance(value.end, int):
            return IntDistribution(int(value.start), int(value.end), log=log)
        return FloatDistribution(value.start, value.end, log=log)
    raise ValueError(f"{override.input_line} cannot be searched by Optuna")


def search_space(arguments: list[str]) -> tuple[dict, dict, list[str]]:
    """The overrides as ``(space, fixed, fixed_overrides)``: the distributions of the swept keys, the
    values of the fixed keys (as written), and the deletions (``~key``), passed on as they are."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from optuna.distributions import BaseDistribution

    space, fixed, kept = {}, {}, []
    for override in OverridesParser.create().parse_overrides(arguments):
        if override.is_delete():
            kept.append(override.input_line)
            continue
        value = distribution(override)
        (space if isinstance(value, BaseDistribution) else fixed)[override.get_key_element()] = value
    return space, fixed, kept


def suggest(trial, name: str, distribution) -> object:
    """Draw ``name`` from ``distribution`` (one ``distribution`` made) through the trial's public ``suggest_*``."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    if isinstance(distribution, CategoricalDistribution):
        return trial.suggest_categorical(name, distribution.choices)
    draw = trial.suggest_float if isinstance(distribution, FloatDistribution) else trial.suggest_int
    return draw(name, distribution.low, distribution.high, step=distribution.step, log=distribution.log)
