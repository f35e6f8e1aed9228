import numpy as np
import pytest

from hhld import NonFiniteError
from hhld.fokker_planck import FokkerPlanck
from hhld.landscapes import Quadratic, double_well_1d


def test_entropy_production_terms():
    fp = FokkerPlanck(double_well_1d(), box=[(-2.2, 2.2)], cells=400, D=0.3)
    rho = fp.gaussian([0.4], 0.3)
    ep = fp.entropy_production(rho)
    # (2.6) equals the diffusion term of (2.5) up to O(h^2)
    assert np.isclose(ep.fisher, ep.diffusion, rtol=1e-3)
    # the split of (2.5) sums to the exact discrete dS/dt up to O(h^2)
    assert np.isclose(ep.paper_total, ep.total, rtol=1e-2)
    # exact dS/dt against a finite difference in time
    dt = 1e-5
    r1 = fp.evolve(rho, [dt])[0]
    assert np.isclose((fp.entropy(r1) - fp.entropy(rho)) / dt, ep.total, rtol=1e-3)
    assert ep.free_energy_rate < 0
    # at equilibrium: total = 0, learning = -diffusion, but (2.6) stays positive
    eq = fp.entropy_production(fp.gibbs())
    assert abs(eq.total) < 1e-8 * eq.diffusion
    assert np.isclose(eq.learning, -eq.diffusion, rtol=1e-10)
    assert eq.fisher > 0.5 * eq.diffusion


def test_entropy_of_gaussian_and_gibbs_free_energy_minimal():
    D, kappa = 0.5, 2.0
    fp = FokkerPlanck(Quadratic([kappa]), box=[(-5, 5)], cells=500, D=D)
    s = np.sqrt(D / kappa)
    assert np.isclose(fp.entropy(fp.gibbs()), 0.5 * np.log(2 * np.pi * np.e * s * s), rtol=1e-5)
    F_star = fp.free_energy(fp.gibbs())
    assert fp.free_energy(fp.gaussian([0.3], 0.4)) > F_star
    assert fp.kl(fp.gibbs()) < 1e-12


def test_kl_is_finite_where_gibbs_underflows():
    """At small D the Gibbs density underflows to 0 at the box edge; KL is computed in log space."""
    import numpy as np

    from hhld.fokker_planck import FokkerPlanck
    from hhld.landscapes import DoubleWell

    fp = FokkerPlanck(DoubleWell(dim=1), D=0.02, cells=1500, box=[(-2.5, 2.5)], check=False)
    assert fp.gibbs().min() == 0.0                       # the reference underflows somewhere
    rho = fp.gaussian([-1.2], 1.2)
    kl = fp.kl(rho)
    assert np.isfinite(kl) and kl > 0
    # the free-energy identity F[rho] - F[rho*] = D KL holds with it
    dF = fp.free_energy(rho) - fp.free_energy(fp.gibbs())
    assert abs(dF - fp.D * kl) <= 1e-8 * abs(dF)
    # and it agrees with the direct formula where the reference does not underflow
    fp2 = FokkerPlanck(DoubleWell(dim=1), D=0.3, cells=400, box=[(-2.5, 2.5)], check=False)
    r2 = fp2.gaussian([0.5], 0.3)
    p, q = r2.ravel(), fp2.gibbs().ravel()
    direct = float(np.sum(p[p > 0] * np.log(p[p > 0] / q[p > 0])) * fp2.grid.cell_volume)
    assert abs(fp2.kl(r2) - direct) <= 1e-12 * direct


def _fp():
    return FokkerPlanck(double_well_1d(), cells=128, D=0.1)


@pytest.mark.parametrize("make, match", [
    (lambda fp: 0.5 * fp.gibbs(), "normalised density"),
    (lambda fp: np.zeros(fp.grid.shape), "normalised density"),
    (lambda fp: -fp.gibbs(), ">= 0"),
    (lambda fp: fp.gibbs() - 0.2 * fp.gaussian([1.0], 0.1), ">= 0"),
    (lambda fp: np.ones(5), "128 values"),
])
@pytest.mark.parametrize("functional", ["kl", "entropy", "free_energy", "fisher_information", "entropy_production"])
def test_functionals_refuse_what_is_not_a_density(make, match, functional):
    fp = _fp()
    with pytest.raises(ValueError, match=match):
        getattr(fp, functional)(make(fp))


@pytest.mark.parametrize("functional", ["kl", "entropy", "free_energy"])
def test_functionals_refuse_nan(functional):
    fp = _fp()
    with pytest.raises(NonFiniteError, match="non-finite"):
        getattr(fp, functional)(np.full(fp.grid.shape, np.nan))


def test_round_off_negatives_of_an_evolution_are_accepted():
    fp = _fp()
    rho = fp.gibbs() + 0.0
    rho[0] = -1e-20  # round-off level
    rho = rho / fp.mass(rho)
    assert fp.kl(rho) >= 0 and np.isfinite(fp.entropy(rho))
