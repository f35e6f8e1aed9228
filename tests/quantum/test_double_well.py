"""hhld.quantum.double_well: splitting, localised states, well populations (the oscillation itself is
tested in test_schrodinger.py)."""
import numpy as np
import pytest

from hhld.landscapes import double_well_1d
from hhld.quantum import double_well, make_grid, potential_on_grid


def test_splitting_is_small_positive_and_shrinks_with_hbar():
    g = make_grid(256, [(-2.5, 2.5)])
    V = potential_on_grid(g, double_well_1d())
    d_small, E, psi = double_well.ground_state_splitting(g, V, hbar=0.3)
    d_large, _, _ = double_well.ground_state_splitting(g, V, hbar=0.5)
    assert 0 < d_small < d_large < 1.0 and E[0] < E[1]
    assert double_well.tunneling_period(d_small, 0.3) == pytest.approx(2 * np.pi * 0.3 / d_small)
    with pytest.raises(ValueError, match="splitting must be > 0"):
        double_well.tunneling_period(0.0)


def test_localised_states_sit_in_one_well():
    g = make_grid(256, [(-2.5, 2.5)])
    _, _, psi = double_well.ground_state_splitting(g, potential_on_grid(g, double_well_1d()), hbar=0.3)
    x = g.axes[0]
    left = g.normalize_wave(double_well.localized_state(psi[0], psi[1], "left", x))
    right = g.normalize_wave(double_well.localized_state(psi[0], psi[1], "right", x))
    assert double_well.well_population(g, left) < 0.05 and double_well.well_population(g, right) > 0.95
    assert double_well.well_population(g, np.abs(psi[0]) ** 2, density=True) == pytest.approx(0.5, abs=1e-6)
    with pytest.raises(ValueError, match="side must be"):
        double_well.localized_state(psi[0], psi[1], "up", x)
