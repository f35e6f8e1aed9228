import numpy as np

from hhld.landscapes import double_well_1d
from hhld.quantum import measurement as ms
from hhld.quantum.eigen import hamiltonian_matrix
from hhld.quantum.grid import make_grid


def _hamiltonians(M=60):
    g = make_grid(M, [(-2.5, 2.5)])
    x = g.axes()[0]
    H = hamiltonian_matrix(g, double_well_1d(), hbar=0.3).toarray()
    Hm = hamiltonian_matrix(g, 0.5 * x ** 2, hbar=0.3).toarray()
    rng = np.random.default_rng(7)
    R = rng.normal(size=(M, M)) + 1j * rng.normal(size=(M, M))
    Hp = H + 0.5 * (R + R.conj().T)  # a generic, non-real Hermitian post-evolution Hamiltonian
    return H, Hm, Hp


def test_completeness_of_effective_operators():
    H, Hm, Hp = _hamiltonians()
    D = ms.position_projectors(H.shape[0], n_bins=5)
    assert ms.completeness_defect(D) == 0.0
    O = ms.effective_operators(D, Hp, t_plus=1.7, hbar=0.3)
    assert ms.completeness_defect(O) < 1e-12
    # non-diagonal, as the paper wants
    assert max(np.abs(Om - np.diag(np.diag(Om))).max() for Om in O) > 1e-2


def test_probabilities_both_ways_agree():
    H, Hm, Hp = _hamiltonians()
    M = H.shape[0]
    psi0 = ms.pre_evolve(Hm, 0.8, 10, hbar=0.3)            # (5.4)
    assert abs(np.linalg.norm(psi0) - 1) < 1e-12
    assert np.count_nonzero(np.abs(psi0) > 1e-3) > 5        # a genuine superposition
    psiT = ms.evolve_state(H, 2.0, psi0, hbar=0.3)           # (5.5)
    D = ms.position_projectors(M, n_bins=4)
    O = ms.effective_operators(D, Hp, 1.1, hbar=0.3)        # (5.16)
    p_post = ms.probabilities_post_evolution(psiT, D, Hp, 1.1, hbar=0.3)  # (5.12)+(5.13)
    p_op = ms.probabilities_operators(psiT, O)                             # (5.8)/(5.15)
    p_comp = ms.probabilities_components(psiT, O)                          # (5.11)
    assert np.max(np.abs(p_post - p_op)) < 1e-12
    assert np.max(np.abs(p_comp - p_op)) < 1e-12
    assert abs(p_op.sum() - 1) < 1e-12
    # the naive position reading (5.10) without post-evolution gives different numbers
    p_naive = ms.probabilities_diagonal(psiT, D)
    assert np.max(np.abs(p_naive - p_op)) > 1e-3


def test_mixed_state_pre_evolution():
    H, Hm, Hp = _hamiltonians(40)
    rng = np.random.default_rng(3)
    p = rng.random(40)
    rho0 = ms.pre_evolve_mixed(Hm, 0.9, p, hbar=0.3)        # (5.6)
    assert ms.is_density_matrix(rho0)
    assert np.abs(rho0 - np.diag(np.diag(rho0))).max() > 1e-3  # not diagonal any more
    assert abs(np.trace(rho0 @ rho0).real - np.sum((p / p.sum()) ** 2)) < 1e-12  # purity kept
    D = ms.position_projectors(40, n_bins=3)
    O = ms.effective_operators(D, Hp, 0.5, hbar=0.3)
    rhoT = ms.evolve_density(H, 1.0, rho0, hbar=0.3)
    pm = ms.probabilities_density(rhoT, O)
    U = ms.propagator(Hp, 0.5, hbar=0.3)
    direct = np.array([np.trace(Dm @ U @ rhoT @ U.conj().T).real for Dm in D])
    assert np.max(np.abs(pm - direct)) < 1e-12


def test_propagator_methods_agree_and_unitary():
    H, _, _ = _hamiltonians(30)
    U1 = ms.propagator(H, 0.7, 0.3)
    U2 = ms.propagator(H, 0.7, 0.3, method="expm")
    assert np.max(np.abs(U1 - U2)) < 1e-10
    assert np.max(np.abs(U1.conj().T @ U1 - np.eye(30))) < 1e-12
