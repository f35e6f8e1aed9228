"""hhld.quantum.eigen: low eigenstates of the grid Hamiltonian against the oscillator's exact levels."""
import numpy as np
import pytest

from hhld.quantum import harmonic
from hhld.quantum.eigen import eigenstates, second_derivative_1d
from hhld.quantum.grid import make_grid


def test_ho_levels_1d():
    hbar, m, omega = 0.7, 1.3, 2.0
    g = make_grid(800, [(-6, 6)])
    V = harmonic.ho_potential(g, m, omega)
    E, psi = eigenstates(g, V, hbar, m, k=6, order=4)
    exact = harmonic.ho_levels(6, hbar, omega)
    assert np.max(np.abs(E / exact - 1)) < 1e-4
    assert np.allclose([g.norm(p) for p in psi], 1.0, atol=1e-12)


def test_ho_levels_2d_anisotropic():
    g = make_grid(96, [(-7, 7)] * 2)
    V = harmonic.ho_potential(g, 1.0, [1.0, 1.5])
    E, _ = eigenstates(g, V, 1.0, 1.0, k=4, order=4)
    exact = np.sort([0.5 + 0.75 + a + 1.5 * b for a in range(4) for b in range(3)])[:4]
    assert np.max(np.abs(E / exact - 1)) < 1e-4


def test_sparse_eigenstates_are_deterministic():
    # above 600 points ARPACK is used; it starts from a fixed vector, so two calls agree exactly
    from hhld.landscapes import double_well_1d
    from hhld.quantum import eigenstates
    from hhld.quantum.grid import make_grid

    g = make_grid(800, [(-3.0, 3.0)])
    (E1, p1), (E2, p2) = (eigenstates(g, double_well_1d(), k=3) for _ in range(2))
    assert np.array_equal(E1, E2) and np.array_equal(p1, p2)


@pytest.mark.parametrize("order, rate", [(2, 2), (4, 4)])
def test_periodic_stencil_is_exact_on_plane_waves_to_its_order(order, rate):
    """On a periodic grid sin(k x) is an eigenvector of the stencil with the known symbol
    (order 2: -(4/dx^2) sin^2(k dx/2)); the error against -k^2 falls as dx^order."""
    errs = []
    for n in (32, 64):
        dx = 2 * np.pi / n
        x = np.arange(n) * dx
        f = np.sin(3 * x)
        d2 = second_derivative_1d(n, dx, "periodic", order) @ f
        if order == 2:
            np.testing.assert_allclose(d2, -(4 / dx ** 2) * np.sin(3 * dx / 2) ** 2 * f, atol=1e-10)
        errs.append(np.abs(d2 + 9 * f).max())
    assert abs(np.log2(errs[0] / errs[1]) - rate) < 0.1
    with pytest.raises(ValueError, match="order"):
        second_derivative_1d(8, 0.1, order=3)


def test_eigenstates_rejects_k_too_large_naming_the_limit():
    g = make_grid(6, [(-1.0, 1.0)])
    with pytest.raises(ValueError, match=r"k=5 must be smaller than the number of grid points - 1 \(5\)"):
        eigenstates(g, np.zeros(6), k=5)
