"""hhld.quantum.harmonic: the oscillator's closed forms (levels, coherent states, ladder operators)."""
import numpy as np
import pytest

from hhld.quantum import harmonic
from hhld.quantum.eigen import eigenstates
from hhld.quantum.grid import make_grid
from hhld.quantum.schrodinger import SplitStepSolver


def test_levels_potential_and_alpha_closed_forms():
    np.testing.assert_allclose(harmonic.ho_levels(4, 0.5, 3.0), 1.5 * np.array([0.5, 1.5, 2.5, 3.5]), rtol=1e-15)
    g = make_grid(5, [(-1.0, 1.0)])
    x = g.axes[0]
    np.testing.assert_allclose(harmonic.ho_potential(g, 2.0, 3.0, center=[0.2]), 0.5 * 2.0 * 9.0 * (x - 0.2) ** 2,
                               rtol=1e-14)
    # alpha = sqrt(m omega / (2 hbar)) (x0 + i p0 / (m omega))
    assert harmonic.coherent_alpha(1.0, 0.5, 0.5, 2.0, 1.5) == pytest.approx(
        np.sqrt(2.0 * 1.5 / 1.0) * (1.0 + 0.5j / 3.0), rel=1e-14)
    with pytest.raises(ValueError, match="hbar"):
        harmonic.ho_levels(3, hbar=0.0)


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
