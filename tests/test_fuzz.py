"""Fuzz the numeric entry points: "correct, or a clear error; never NaN out of finite input".

Hypothesis draws shapes, dtypes, extreme scales and non-finite entries. For finite input an
entry point must return finite numbers (``inf`` only where the true value overflows) or raise
one of the library's clear errors; for non-finite input the entry points that take data
(densities, wave functions, ensembles) must refuse it. The settings are derandomized (the same
examples on every run, so CI is deterministic) and small (a few seconds in all).
"""
from __future__ import annotations

import math
import warnings
from functools import lru_cache

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from hhld import NonFiniteError

FUZZ = settings(derandomize=True, max_examples=30, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
#: what a clear refusal may be
CLEAR = (ValueError, TypeError, NonFiniteError, FloatingPointError)

dtypes = st.sampled_from([np.float32, np.float64])
exponents = st.integers(-300, 300)


def _no_nan(x) -> bool:
    a = np.asarray(x.detach().cpu() if hasattr(x, "detach") else x, dtype=np.float64)
    return not np.isnan(a).any()


@st.composite
def batches(draw, dim):
    """A finite batch ``(N, dim)`` at a scale ``10**k`` (clipped to the dtype's range)."""
    dtype = draw(dtypes)
    n = draw(st.integers(1, 5))
    k = draw(exponents)
    top = np.finfo(dtype).max / 4
    unit = draw(hnp.arrays(np.float64, (n, dim), elements=st.floats(-1, 1, allow_nan=False)))
    with np.errstate(over="ignore", under="ignore"):
        x = np.clip(unit * 10.0 ** k, -top, top).astype(dtype)
    return x


def _landscapes():
    from hhld.landscapes import LANDSCAPES, Quadratic, get_landscape

    out = []
    for name in sorted(LANDSCAPES):
        out.append(Quadratic([1.0, 3.0]) if name == "quadratic" else get_landscape(name))
    return out


LANDS = _landscapes()


@pytest.mark.parametrize("land", LANDS, ids=lambda land: land.name)
@FUZZ
@given(data=st.data())
def test_landscapes_never_give_nan_for_finite_points(land, data):
    x = data.draw(batches(land.dim))
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        for fn in (land.value, land.grad):
            try:
                out = fn(x)
            except CLEAR:
                continue
            assert _no_nan(out), f"{land.name}.{fn.__name__} gave NaN at {x.tolist()}"
            assert np.asarray(out).dtype == x.dtype


@st.composite
def densities(draw, n):
    w = draw(hnp.arrays(np.float64, n, elements=st.floats(0, 1, allow_nan=False)))
    k = draw(st.integers(-250, 250))
    return w * 10.0 ** k


@lru_cache(maxsize=1)
def _fp():
    from hhld.fokker_planck import FokkerPlanck
    from hhld.landscapes import double_well_1d

    return FokkerPlanck(double_well_1d(), cells=64, D=0.2)


@FUZZ
@given(w=densities(64), corrupt=st.sampled_from(["none", "nan", "inf", "negative", "unnormalised"]))
def test_density_functionals(w, corrupt):
    fp = _fp()
    try:
        rho = fp.grid.normalize_density(w)
    except CLEAR:  # zero mass (or overflowing) weights cannot be normalised: a clear error
        return
    if corrupt == "nan":
        rho[3] = np.nan
    elif corrupt == "inf":
        rho[5] = np.inf
    elif corrupt == "negative":
        rho[7] = -0.5 * rho.max() - 1e-3
    elif corrupt == "unnormalised":
        rho = 3.0 * rho
    for fn in (fp.kl, fp.entropy, fp.free_energy, fp.fisher_information):
        if corrupt == "none":
            v = fn(rho)
            assert math.isfinite(v), (fn.__name__, v)
        else:
            with pytest.raises(CLEAR):
                fn(rho)
    if corrupt == "none":
        assert fp.kl(rho) >= 0
        out = fp.evolve(rho, [0.1, 10.0])
        assert np.isfinite(out).all() and abs(fp.mass(out[-1]) - 1) < 1e-9


@FUZZ
@given(center=st.floats(-3, 3), width=st.floats(1e-6, 1e3), p=st.floats(-1e3, 1e3),
       n=st.integers(0, 20), dt=st.floats(1e-6, 1.0))
def test_schrodinger_packets_and_steps(center, width, p, n, dt):
    from hhld.landscapes import double_well_1d
    from hhld.quantum.grid import make_grid
    from hhld.quantum.schrodinger import SplitStepSolver

    g = make_grid(64, [(-3.0, 3.0)])
    try:
        psi = g.gaussian_packet(center, width, p)
    except CLEAR:
        return
    assert np.isfinite(psi).all() and abs(g.norm(psi) - 1) < 1e-12
    out = SplitStepSolver(g, double_well_1d(), dt=0.01).step(psi, n, dt)
    assert np.isfinite(out).all() and abs(g.norm(out) - 1) < 1e-10
    bad = psi.copy()
    bad[0] = np.nan
    with pytest.raises(CLEAR):
        SplitStepSolver(g, double_well_1d(), dt=0.01).step(bad)


@FUZZ
@given(data=st.data(), dt=st.floats(1e-8, 10.0), D=st.floats(0.0, 1e3),
       integrator=st.sampled_from(["euler_maruyama", "leimkuhler_matthews", "baoab"]))
def test_simulation_runs_finite_or_stops_with_a_clear_error(data, dt, D, integrator):
    from hhld.dynamics import Simulation
    from hhld.landscapes import double_well_2d

    x = data.draw(batches(2))
    with np.errstate(all="ignore"):
        try:
            sim = Simulation(double_well_2d(), x, dt=dt, D=D, integrator=integrator, rng=np.random.default_rng(0))
            sim.run(3)
        except CLEAR:
            return
    assert np.isfinite(np.asarray(sim.state.theta)).all()


@FUZZ
@given(data=st.data(), D=st.floats(1e-6, 1e6))
def test_ensemble_observables(data, D):
    from hhld.observables import consolidation_ratio, entropy_knn, uncertainty_product

    x = data.draw(batches(2)).astype(np.float64)
    g = data.draw(batches(2)).astype(np.float64)[: x.shape[0]]
    if g.shape != x.shape:
        return
    with np.errstate(all="ignore"):
        for fn, args in ((consolidation_ratio, (g, D)), (uncertainty_product, (x, g)), (entropy_knn, (x,))):
            try:
                out = fn(*args)
            except CLEAR:
                continue
            vals = [v for v in (out if isinstance(out, (tuple, list)) else [out])]
            if hasattr(out, "__dataclass_fields__"):
                vals = [getattr(out, f) for f in out.__dataclass_fields__]
            for v in vals:
                assert _no_nan(v), (fn.__name__, x.tolist(), g.tolist())
