"""Grid mean first-passage times, committors and transition rates against the exact 1-D formula."""
import numpy as np
import pytest

from hhld import theory as T
from hhld.fokker_planck import FokkerPlanck, committor, mean_first_passage_time, transition_rate
from hhld.landscapes import Quadratic, double_well_1d, double_well_2d


def _aligned(lw, D, m, core=0.5, half=2.2, **kw):
    """A grid whose cell centres are the multiples of h = core/m, so that +-core are centres."""
    h = core / m
    n = int(np.ceil(half / h))
    return FokkerPlanck(lw, D=D, cells=[2 * n + 1] + list(kw.pop("more_cells", [])),
                        box=[(-(n + 0.5) * h, (n + 0.5) * h)] + list(kw.pop("more_box", [])), check=False)


def test_grid_mfpt_converges_to_the_1d_formula_at_second_order():
    errs = []
    for m in (10, 20, 40):
        fp = _aligned(double_well_1d(), 0.5, m)
        x = fp.grid.axes[0]
        tau = mean_first_passage_time(fp, lambda th: th[:, 0] >= 0.5 - 1e-12)
        i = int(np.argmin(np.abs(x + 1.0)))
        exact = T.mean_first_passage_time_1d(double_well_1d(), x[i], 0.5, 0.5, reflect=float(fp.grid.lo[0]))
        errs.append(abs(tau.ravel()[i] / exact - 1))
        assert np.all(tau[x >= 0.5 - 1e-12] == 0) and np.all(tau[x < 0.5 - 1e-12] > 0)
    assert errs[-1] < 1e-4
    assert 3.0 < errs[0] / errs[1] < 5.0 and 3.0 < errs[1] / errs[2] < 5.0  # O(h^2)


def test_ou_mfpt_on_a_grid():
    fp = FokkerPlanck(Quadratic([1.0], box=[(-6.0, 6.0)]), D=0.5, cells=1201, check=False)
    x = fp.grid.axes[0]
    b = x[np.argmin(np.abs(x - 1.0))]
    tau = mean_first_passage_time(fp, lambda th: th[:, 0] >= b - 1e-12)
    i = int(np.argmin(np.abs(x)))
    assert tau.ravel()[i] == pytest.approx(T.mean_first_passage_time_1d(Quadratic([1.0]), x[i], b, 0.5), rel=1e-4)


def test_core_to_core_rate_is_the_inverse_passage_time_from_the_core_edge():
    fp = _aligned(double_well_1d(), 0.5, 20)
    A = lambda th: th[:, 0] <= -0.5 + 1e-12  # noqa: E731
    B = lambda th: th[:, 0] >= 0.5 - 1e-12  # noqa: E731
    r = transition_rate(fp, A, B)
    exact = 1.0 / T.mean_first_passage_time_1d(double_well_1d(), -0.5, 0.5, 0.5)
    assert r.rate_ab == pytest.approx(exact, rel=2e-3)
    assert r.rate_ba == pytest.approx(r.rate_ab, rel=1e-9)  # symmetric wells
    assert r.prob_last_a + r.prob_last_b == pytest.approx(1.0, abs=1e-12)
    # it is not lambda_1/2 (the two agree only as D -> 0): the core rate is ~11% higher at D = 0.5
    lam_half = 0.5 * fp.spectrum(3).rates[1]
    assert 1.08 < r.rate_ab / lam_half < 1.14
    q = committor(fp, A, B)
    assert q.min() == 0.0 and q.max() == 1.0 and np.all(np.diff(q) >= -1e-12)  # monotone in 1-D


def test_separable_2d_core_rate_equals_the_1d_one():
    fp = _aligned(double_well_2d(), 0.4, 10, more_cells=[72], more_box=[(-1.8, 1.8)])
    r = transition_rate(fp, lambda th: th[:, 0] <= -0.5 + 1e-12, lambda th: th[:, 0] >= 0.5 - 1e-12)
    exact = 1.0 / T.mean_first_passage_time_1d(double_well_1d(), -0.5, 0.5, 0.4)
    assert r.rate_ab == pytest.approx(exact, rel=5e-3)


def test_bad_sets():
    fp = FokkerPlanck(double_well_1d(), D=0.5, cells=64, check=False)
    with pytest.raises(ValueError, match="contains no cell"):
        mean_first_passage_time(fp, lambda th: th[:, 0] > 10)
    with pytest.raises(ValueError, match="every cell"):
        mean_first_passage_time(fp, lambda th: th[:, 0] > -10)
    with pytest.raises(ValueError, match="boolean mask of the grid's shape"):
        mean_first_passage_time(fp, np.zeros(3, bool))
    with pytest.raises(ValueError, match="overlap"):
        committor(fp, lambda th: th[:, 0] < 0.1, lambda th: th[:, 0] > -0.1)


def test_expected_transitions_against_a_simulated_chain():
    """The labelled-chain expectation against a direct (vectorised Gillespie) simulation of the
    grid's jump process with the hysteresis counter, on a 5-cell grid."""
    from hhld.fokker_planck.mfpt import expected_transitions

    fp = FokkerPlanck(double_well_1d(), D=0.8, cells=5, box=[(-1.5, 1.5)], check=False)
    A, B = np.array([True, False, False, False, False]), np.array([False, False, False, False, True])
    rho0 = np.array([1.0, 0, 0, 0, 0])
    T = 4.0
    exact = expected_transitions(fp, A, B, rho0, T)
    G = fp.generator.toarray()
    rates = G.copy()
    np.fill_diagonal(rates, 0.0)           # rates[j, i] = i -> j
    out = rates.sum(0)
    rng = np.random.default_rng(0)
    n = 40000
    state = np.zeros(n, int)
    label = np.ones(n, int)                 # 1: A, 2: B
    t = np.zeros(n)
    count = np.zeros(n)
    alive = np.ones(n, bool)
    while alive.any():
        idx = np.flatnonzero(alive)
        t[idx] += rng.exponential(1.0 / out[state[idx]])
        done = t[idx] > T
        alive[idx[done]] = False
        idx = idx[~done]
        p = rates[:, state[idx]] / out[state[idx]]
        u = rng.random(idx.size)
        new = (p.cumsum(0) < u).sum(0)
        state[idx] = new
        newlab = np.where(A[new], 1, np.where(B[new], 2, label[idx]))
        count[idx] += newlab != label[idx]
        label[idx] = newlab
    mc, se = count.mean(), count.std(ddof=1) / np.sqrt(n)
    assert abs(exact.count - mc) < 4 * se
    assert exact.occupancy == pytest.approx(T, rel=1e-9)  # started in A: always labelled
    assert abs(exact.count - 1.1 * mc) > 4 * se  # negative control
    long = expected_transitions(fp, A, B, rho0, 2000.0)
    assert long.rate == pytest.approx(transition_rate(fp, A, B).rate_ab, rel=2e-3)
