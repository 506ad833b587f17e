"""The numbers of a report (what each is: docs/study.md, "Groups", "Main effects"). A factorial design's effects are
contrasts of the cell means (Box, Hunter & Hunter, *Statistics for Experimenters*, ch. 5): Student's t intervals
and two-sided p-values, the seeds' spread within the cells pooled (N - cells degrees of freedom)."""

import math
import statistics
import warnings
from collections import namedtuple
from dataclasses import dataclass

from reg_runner.errors import UserError
from reg_runner.report.groups import Design, values
from reg_runner.report.runs import Run


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjustment (Holm-Bonferroni) of m p-values tested together, in their order: the
    i-th smallest is multiplied by m - i + 1, kept at least its predecessor's, at most 1."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def welch_p(a: list[float], b: list[float]) -> float | None:
    if len(a) < 2 or len(b) < 2:
        return None
    if statistics.pstdev(a) == 0 and statistics.pstdev(b) == 0:
        return 1.0 if statistics.mean(a) == statistics.mean(b) else 0.0
    from scipy.stats import ttest_ind

    with warnings.catch_warnings():  # seeds that agree to many digits: scipy's note on precision, nothing to act on
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(ttest_ind(a, b, equal_var=False).pvalue)


def half_width(se: float, df: int) -> float:
    """Half the width of the 95% interval of an estimate with standard error ``se`` on ``df`` degrees of freedom."""
    from scipy.stats import t

    return float(t.ppf(0.975, df)) * se


def _mean(xs):
    return statistics.mean(xs) if xs else None


def _std(xs):
    return statistics.stdev(xs) if len(xs) > 1 else (0.0 if xs else None)


def group_rows(groups: dict[str, list[Run]], design: Design, baseline: str | None) -> tuple[list[dict], str | None]:
    """One row per group: n, mean ± std of best val acc and test acc at best, the 95% interval of the test mean,
    and the difference to the baseline group with Welch's p (Holm-adjusted when several groups are tested)."""
    labels, keys = list(groups), design.keys
    if baseline is None:
        baseline = next((g for g in labels if "experiment=baseline" in g), None)
    if baseline is None:
        baseline = next((g for g in labels if all(v == "-" for v in values(groups[g][0], keys))), labels[0])
    else:
        matches = [g for g in labels if baseline == g
                   or baseline in (f"{k}={v}" for k, v in zip(keys, values(groups[g][0], keys)))]
        if len(matches) != 1:
            which = "no group" if not matches else f"{len(matches)} groups"
            levels = "; ".join(f"{k}: {', '.join(design.levels[k])}" for k in keys)
            raise UserError(f"--baseline {baseline!r} matches {which}: give one group's whole label, or a key=value "
                            f"that names one group; the keys and their values: {levels or 'none vary'}")
        baseline = matches[0]

    def accs(group, key):
        return [r.number(*key) for r in groups[group] if r.trained and r.number(*key) is not None]

    base_val, base_test = accs(baseline, ("best", "val/acc")), accs(baseline, ("test_at_best", "acc"))
    rows = []
    for g in labels:
        val, test = accs(g, ("best", "val/acc")), accs(g, ("test_at_best", "acc"))
        left_out = [r for r in groups[g] if r.test_acc is None]
        row = {"group": g, "values": values(groups[g][0], keys), "n": len(test), "of": len(groups[g]), "tests": test,
               "left_out": [f"seed {'?' if r.seed is None else r.seed} {r.status.split(' (')[0]}" for r in left_out],
               "val_mean": _mean(val), "val_std": _std(val), "test_mean": _mean(test), "test_std": _std(test),
               "test_ci": half_width(_std(test) / math.sqrt(len(test)), len(test) - 1) if len(test) > 1 else None}
        if g != baseline and test and base_test:
            row.update(d_val=_mean(val) - _mean(base_val), p_val=welch_p(val, base_val),
                       d_test=_mean(test) - _mean(base_test), p_test=welch_p(test, base_test))
        rows.append(row)
    for key in ("p_val", "p_test"):  # several groups against one baseline: each family of tests adjusted
        tested = [r for r in rows if r.get(key) is not None]
        if len(tested) > 1:
            for r, p in zip(tested, holm([r[key] for r in tested])):
                r[f"{key}_raw"], r[key], r["holm"] = r[key], p, len(tested)
    return rows, baseline


# half: of the 95% interval, None without a seed-to-seed spread to take it from; p: two-sided, against 0
Estimate = namedtuple("Estimate", "value half p", defaults=[None])


@dataclass
class Effects:
    """The cells of a factorial design (each combination's test accuracies) and what is estimated from them."""

    design: Design
    reference: dict  # each key's reference level: the baseline group's
    cells: dict[tuple, list[float]]
    s2: float | None  # the pooled within-cell variance
    df: int

    def contrast(self, weights: dict[tuple, float]) -> Estimate:
        value = sum(w * statistics.mean(self.cells[c]) for c, w in weights.items())
        if self.s2 is None:
            return Estimate(value, None)
        se = math.sqrt(self.s2 * sum(w * w / len(self.cells[c]) for c, w in weights.items()))
        if se == 0:
            return Estimate(value, 0.0, 1.0 if value == 0 else 0.0)
        from scipy.stats import t

        return Estimate(value, half_width(se, self.df), float(2 * t.sf(abs(value) / se, self.df)))

    def _weights(self, *terms: tuple[int, dict]) -> dict[tuple, float]:
        """The sum over ``(sign, fixed)`` terms of ``sign`` times equal weights, summing to 1, on the cells that hold
        ``fixed`` (key: level)."""
        index = {k: i for i, k in enumerate(self.design.keys)}
        weights: dict[tuple, float] = {}
        for sign, fixed in terms:
            chosen = [c for c in self.cells if all(c[index[k]] == v for k, v in fixed.items())]
            for c in chosen:
                weights[c] = weights.get(c, 0) + sign * (1 / len(chosen))
        return weights

    def mean(self, fixed: dict | None = None) -> Estimate:
        """The mean test accuracy at these levels (key: level), over the other keys' levels (alike) and the seeds."""
        return self.contrast(self._weights((1, fixed or {})))

    def main_effects(self) -> list[dict]:
        """Each key's other levels against its reference level, p-values Holm-adjusted across all of them."""
        rows = []
        for k in self.design.keys:
            ref = self.reference[k]
            for level in self.design.levels[k]:
                if level != ref:
                    effect = self.contrast(self._weights((1, {k: level}), (-1, {k: ref})))
                    rows.append({"key": k, "level": level, "reference": ref, "effect": effect})
        tested = [r for r in rows if r["effect"].p is not None]
        for r, p in zip(tested, holm([r["effect"].p for r in tested])):
            r["p"] = p
        return rows

    def interaction(self, a: str, b: str) -> Estimate | None:
        """For two keys of two levels each: how much the effect of ``b`` changes with ``a``'s level,
        (m[a2,b2] - m[a2,b1]) - (m[a1,b2] - m[a1,b1]); 0 when their effects add up. None for more levels."""
        la, lb = self.design.levels[a], self.design.levels[b]
        if len(la) != 2 or len(lb) != 2:
            return None
        la, lb = sorted(la, key=lambda v: v != self.reference[a]), sorted(lb, key=lambda v: v != self.reference[b])
        return self.contrast(self._weights(*((sa * sb, {a: va, b: vb}) for sa, va in zip((-1, 1), la)
                                             for sb, vb in zip((-1, 1), lb))))


def effects(rows: list[dict], design: Design, baseline: str) -> Effects:
    """The design's cells from ``group_rows``'s rows: each group's values and its test accuracies."""
    cells = {r["values"]: r["tests"] for r in rows if r["tests"]}
    n = sum(len(accs) for accs in cells.values())
    df = n - len(cells)
    residual = sum((y - statistics.mean(accs)) ** 2 for accs in cells.values() for y in accs)
    reference = dict(zip(design.keys, next(r["values"] for r in rows if r["group"] == baseline)))
    return Effects(design, reference, cells, residual / df if df > 0 else None, df)
