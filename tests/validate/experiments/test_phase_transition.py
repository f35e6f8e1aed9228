"""phase_transition: the escape probability grows with D and with the horizon."""
from __future__ import annotations

import numpy as np


def test_phase_transition_escape_probability_grows_with_D_and_T(run_smallest):
    cfg, results, rep = run_smallest("phase_transition")
    P = np.asarray(rep.data["P"])
    assert np.all(np.diff(P, axis=0) >= -0.05)  # increases with D
    assert np.all(P[:, -1] >= P[:, 0])  # and with the horizon
    assert P[0, 0] < 0.2 and P[-1, -1] > 0.8
