import numpy as np

from hhld.quantum import harmonic
from hhld.quantum.eigen import eigenstates
from hhld.quantum.grid import make_grid
from hhld.quantum.schrodinger import SplitStepSolver, imaginary_time_ground_state


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


def test_imaginary_time_ground_state():
    g = make_grid(256, [(-8, 8)])
    psi, E = imaginary_time_ground_state(g, harmonic.ho_potential(g, 1.0, 1.0), dtau=1e-3)
    assert abs(E - 0.5) < 1e-6
    exact = harmonic.coherent_state(g, 0.0).real
    assert np.max(np.abs(np.abs(psi) - exact)) < 1e-5


def test_coherent_state_minimum_uncertainty_over_a_period():
    hbar, m, omega = 0.5, 2.0, 1.5
    g = make_grid(512, [(-8, 8)])
    V = harmonic.ho_potential(g, m, omega)
    psi0 = harmonic.coherent_state(g, 1.2, 0.8, hbar, m, omega)
    T = 2 * np.pi / omega
    res = SplitStepSolver(g, V, hbar, m, dt=T / 4000).evolve(psi0, T, n_snapshots=21)
    prods = np.array([harmonic.uncertainty(g, s, hbar)["product"][0] for s in res.snapshots])
    assert np.max(np.abs(prods - hbar / 2)) < 1e-6 * hbar
    # the centre follows the classical orbit and returns after one period
    u = harmonic.uncertainty(g, res.snapshots[5], hbar)  # t = T/4
    x_cl = 1.2 * np.cos(omega * T / 4) + 0.8 / (m * omega) * np.sin(omega * T / 4)
    assert abs(u["x_mean"][0] - x_cl) < 1e-6
    assert abs(g.inner(psi0, res.psi)) > 1 - 1e-6


def test_ladder_operators():
    hbar, m, omega = 1.0, 1.0, 1.0
    g = make_grid(1200, [(-9, 9)])
    a, ad = harmonic.ladder_operators(g, hbar, m, omega)
    E, psi = eigenstates(g, harmonic.ho_potential(g, m, omega), hbar, m, k=4, order=4)
    v = [p.ravel() for p in psi]
    # a|0> = 0, a^dagger|n> = sqrt(n+1)|n+1>, a|n> = sqrt(n)|n-1>
    assert np.linalg.norm(a @ v[0]) * np.sqrt(g.dV) < 1e-4
    for n in range(3):
        up = ad @ v[n]
        assert abs(abs(g.inner(v[n + 1], up.reshape(g.shape))) - np.sqrt(n + 1)) < 1e-4
    N = harmonic.number_operator(g, hbar, m, omega)
    assert abs(g.inner(psi[2], (N @ v[2]).reshape(g.shape)).real - 2.0) < 1e-4
    alpha = harmonic.coherent_alpha(1.0, 0.5)
    coh = harmonic.coherent_state(g, 1.0, 0.5).ravel()
    assert np.linalg.norm(a @ coh - alpha * coh) * np.sqrt(g.dV) < 1e-4


def test_sparse_eigenstates_are_deterministic():
    # above 600 points ARPACK is used; it starts from a fixed vector, so two calls agree exactly
    from hhld.landscapes import double_well_1d
    from hhld.quantum import eigenstates
    from hhld.quantum.grid import make_grid

    g = make_grid(800, [(-3.0, 3.0)])
    (E1, p1), (E2, p2) = (eigenstates(g, double_well_1d(), k=3) for _ in range(2))
    assert np.array_equal(E1, E2) and np.array_equal(p1, p2)
