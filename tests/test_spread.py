"""Mean ± std over seeds: one definition behind the ladder, the benchmark and the recorded GPU results."""

import numpy as np
import pytest

from convlens.spread import mean_std, percent_mean_std


def test_mean_std_is_the_sample_deviation():
    accs = [0.9475, 0.9493, 0.9484]     # the 20x check's second sitting, seeds 0-2
    mean, std = mean_std(accs)
    assert mean == pytest.approx(np.mean(accs))
    assert std == pytest.approx(np.std(accs, ddof=1))
    assert percent_mean_std(accs) == [94.84, 0.09]


def test_one_run_has_no_spread_and_none_is_an_error():
    assert mean_std([0.5]) == (0.5, 0.0)
    with pytest.raises(ValueError):
        mean_std([])
