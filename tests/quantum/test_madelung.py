"""hhld.quantum.madelung: psi <-> (rho, u), the free-energy phase, the quantum potential, residuals."""
import numpy as np

from hhld.quantum import madelung
from hhld.quantum.grid import make_grid
from hhld.quantum.harmonic import ho_potential


def test_madelung_round_trip_and_free_energy_phase():
    g = make_grid(512, [(-10, 10)])
    x = g.axes()[0]
    p = np.exp(-x ** 2 / 2)
    p /= p.sum() * g.dV
    F = 0.3 * x + 0.1 * x ** 2
    eps, hbar, m = 0.5, 0.2, 1.3
    psi = madelung.psi_from_density_free_energy(p, F, eps, hbar)  # (3.6)
    rho, u = madelung.to_madelung(g, psi, hbar, m)
    assert np.allclose(rho, p, rtol=1e-12, atol=0)
    mask = p > 1e-8 * p.max()
    assert np.max(np.abs(u[0] - eps * (0.3 + 0.2 * x) / m)[mask]) < 1e-6  # u = grad(eps F)/m (3.4)
    F_back = madelung.free_energy_from_psi(psi, eps, hbar)
    period = 2 * np.pi * hbar / eps  # F is recovered modulo mu = 2 pi hbar / eps (3.7, 3.12)
    d = (F_back - F) / period
    assert np.max(np.abs(d - np.round(d))) < 1e-10


def test_madelung_residuals_small_for_schrodinger_solution():
    g = make_grid(256, [(-8, 8)])
    V = ho_potential(g, 1.0, 1.0) + 0.05 * g.axes()[0] ** 4
    psi0 = g.gaussian_packet(0.7, 0.5, 0.4)  # squeezed, moving: rho and u both change
    r = madelung.madelung_residuals(g, V, psi0, hbar=1.0, m=1.0, t=0.6, dt=1e-3)
    assert r.continuity < 1e-5
    assert r.euler < 1e-4
    assert r.euler_paper_form > 1e2 * r.euler  # the printed (3.3) without 1/sqrt(p) does not hold


def test_quantum_potential_of_gaussian():
    # sqrt(rho) Gaussian of variance s^2: Q = (hbar^2/2m) (1/(2 s^2) - x^2/(4 s^4))
    g = make_grid(256, [(-8, 8)])
    x = g.axes()[0]
    s = 0.8
    rho = np.exp(-x ** 2 / (2 * s * s))
    Q = madelung.quantum_potential(g, rho, hbar=1.0, m=1.0)
    exact = 0.5 * (1 / (2 * s * s) - x ** 2 / (4 * s ** 4))
    mask = np.abs(x) < 4
    assert np.max(np.abs(Q - exact)[mask]) < 1e-8
