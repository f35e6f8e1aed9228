"""hhld.grid: the one grid of the Fokker-Planck and quantum solvers."""
import numpy as np
import pytest

from hhld import fokker_planck, quantum
from hhld.grid import Grid, make_grid


def test_one_grid_class_for_both_packages():
    assert fokker_planck.Grid is Grid and quantum.Grid is Grid and quantum.grid.make_grid is make_grid
    a = Grid.from_box([(-2.0, 2.0), (0.0, 1.0)], (8, 4))
    b = make_grid([8, 4], [(-2.0, 2.0), (0.0, 1.0)])
    assert a == b and a.shape == a.cells == (8, 4)
    np.testing.assert_array_equal(a.h, [0.5, 0.25])
    assert a.dx is not None and np.array_equal(a.dx, a.h) and a.dV == a.cell_volume == 0.125
    # axes: a property, and callable as the quantum grid's former method
    assert np.array_equal(a.axes[0], a.axes()[0]) and a.axes[0][0] == -1.75
    assert a.points().shape == (32, 2) and a.edges[1].tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert a.boundary_mask().sum() == 32 - 6 * 2


def test_densities_and_wave_functions_normalise_differently():
    g = make_grid(64, [(-3.0, 3.0)])
    f = np.exp(-g.axes[0] ** 2)
    rho = g.normalize_density(f)
    psi = g.normalize_wave(f)
    assert g.integrate(rho) == pytest.approx(1.0, rel=1e-14)
    assert g.norm(psi) == pytest.approx(1.0, rel=1e-14)
    assert abs(g.integrate(psi) - 1.0) > 0.1  # they are not the same normalisation
    assert isinstance(g.integrate(psi * 1j), complex)


@pytest.mark.parametrize("args, match", [
    (((1,), [(0.0, 1.0)]), r"shape\[0\] must be >= 2"),
    (((8,), [(1.0, 0.0)]), "lo < hi"),
    (((8, 8), [(0.0, 1.0)]), "shape must have 1 entries"),
    (((8,) * 4, [(0.0, 1.0)] * 4), "1 to 3 dimensions"),
])
def test_bad_grids_are_named(args, match):
    with pytest.raises(ValueError, match=match):
        Grid(*args)
    with pytest.raises(ValueError, match="n must be >= 4"):
        make_grid(3, [(0.0, 1.0)])
    with pytest.raises(ValueError, match=r"cells\[0\] must be >= 2"):
        Grid.from_box([(0.0, 1.0)], 1)
