"""hhld.quantum.vector_potential: the gauge-transformed evolution equals the plain one (exactly on links)."""
import numpy as np
import pytest

from hhld.landscapes import get_landscape
from hhld.quantum import vector_potential as vp
from hhld.quantum.grid import make_grid


@pytest.mark.parametrize("dim", [1, 2])
def test_vector_potential_equals_gauge_transformed_plain_evolution(dim):
    n = 80 if dim == 1 else 24
    g = make_grid(n, [(-3, 3)] * dim)
    V = get_landscape("double_well", dim=dim)
    omega0 = lambda *xs: 0.7 * np.sin(xs[0]) + 0.2 * sum(xx ** 2 for xx in xs)  # noqa: E731
    eps, hbar, m, e = 0.4, 0.5, 1.0, 2.0
    psi_t0 = g.gaussian_packet([0.5] * dim, 0.4, [0.3] * dim)       # Psi~(0)
    U = vp.gauge_factor(g, omega0, eps, hbar)
    Ht = vp.gauge_hamiltonian(g, V, vp.link_phases_from_omega(g, omega0, eps, hbar), hbar, m)
    H = vp.plain_hamiltonian(g, V, hbar, m)
    assert abs(Ht - Ht.conj().T).max() < 1e-14
    t = 0.8
    a = vp.evolve_sparse(Ht, psi_t0, t, hbar)
    b = np.conj(U) * vp.evolve_sparse(H, U * psi_t0, t, hbar)
    assert np.max(np.abs(a - b)) < 1e-12 * np.max(np.abs(a))
    # with A = (eps/e) grad Omega_0 on the nodes (4.12) only: O(dx^2)
    om = np.asarray(omega0(*g.mesh()))
    A = vp.vector_potential(g, om, eps, e)
    Hf = vp.gauge_hamiltonian(g, V, vp.link_phases_from_field(g, A, e, hbar), hbar, m)
    c = vp.evolve_sparse(Hf, psi_t0, t, hbar)
    assert np.max(np.abs(c - a)) < 0.05 * np.max(np.abs(a))
