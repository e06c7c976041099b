"""Mean ± standard deviation over seeds: the one way every table of repeated runs reports a figure.

The sample standard deviation (n − 1, as numpy's ddof=1 and Python's statistics.stdev), 0 for a single
run: what "94.84 ± 0.09 % over 3 seeds" means in the ladder, the benchmark and the recorded results.
"""

from __future__ import annotations

import statistics
from typing import Iterable


def mean_std(values: Iterable[float]) -> tuple[float, float]:
    """(mean, sample standard deviation) of the values; the deviation is 0 for one value."""
    v = [float(x) for x in values]
    if not v:
        raise ValueError("mean_std of no values")
    return statistics.fmean(v), statistics.stdev(v) if len(v) > 1 else 0.0


def percent_mean_std(fractions: Iterable[float], digits: int = 2) -> list[float]:
    """Accuracies given as fractions -> [mean %, std %] rounded, as the recorded results files keep them."""
    mean, std = mean_std(100 * f for f in fractions)
    return [round(mean, digits), round(std, digits)]
