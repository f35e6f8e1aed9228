"""Every fused kernel (hhld.dynamics.kernels) against the reference step it replaces.

Bit for bit for the cubic and diagonal gradient forms (the same operations in the same order);
for a full matrix A (the gradient's matrix product is BLAS's, by chunk) within
|difference| <= 64 eps (1 + |theta|) per step, eps of the dtype.
"""
import math

import numpy as np
import pytest
import torch

import hhld
from hhld.dynamics import INTEGRATORS, Simulation, kernels
from hhld.dynamics.kernels import MIN_ELEMENTS, chunk_rows, find_kernel
from hhld.dynamics.kernels.loops import SMALL_MATRIX
from hhld.landscapes import (CubicGradient, DoubleWell, Landscape, LinearGradient, Quadratic, QuadraticQuartic,
                             TiltedDoubleWell, TorchLandscape, anisotropic_quadratic, double_well_2d, form_gradient)

pytest.importorskip("numba")


def _full(d):
    Q = np.linalg.qr(np.random.default_rng(4).normal(size=(d, d)))[0]
    return Quadratic(Q @ np.diag(np.linspace(0.5, 3.0, d)) @ Q.T, center=np.linspace(-0.2, 0.2, d))


LANDSCAPES = {
    "double_well_2d": (double_well_2d, "cubic"),
    "double_well_5d": (lambda: DoubleWell(5, barrier=0.7, transverse=1.3), "cubic"),
    "double_well_1d": (lambda: DoubleWell(1), "cubic"),
    "tilted_double_well": (lambda: TiltedDoubleWell(3, tilt=0.3), "cubic"),
    "quartic": (lambda: QuadraticQuartic(4, kappa=0.5, q=2.0), "cubic"),
    "quadratic_diagonal": (lambda: anisotropic_quadratic(50), "diagonal"),
    "quadratic_diagonal_centred": (lambda: Quadratic(np.array([1.0, 2.0, 3.0]), center=[0.1, -0.3, 0.5]), "diagonal"),
    "quadratic_full": (lambda: _full(6), "full"),  # the product unrolled in the loop (d <= SMALL_MATRIX)
    "quadratic_full_12": (lambda: _full(12), "full"),  # BLAS's product, chunk by chunk
}
BACKENDS = ["numpy32", "numpy64", "torch32", "torch64"]


def _theta(backend, n, d, seed=2):
    x = np.random.default_rng(seed).normal(size=(n, d)) * 0.8
    if backend.startswith("torch"):
        return torch.as_tensor(x, dtype=torch.float32 if backend == "torch32" else torch.float64)
    return x.astype(np.float32 if backend == "numpy32" else np.float64)


def _rng(backend, seed):
    return torch.Generator().manual_seed(seed) if backend.startswith("torch") else np.random.default_rng(seed)


def _np(x):
    return x.numpy() if isinstance(x, torch.Tensor) else x


def _run(step, info, landscape, theta, backend, n_steps=3, **params):
    rng = _rng(backend, 9)
    state = info.init(landscape, theta, rng=rng, D=0.1, **params)
    finite = []
    for _ in range(n_steps):
        state, step_info = step(rng, state, landscape, dt=0.01, D=0.1, **params)
        finite.append(step_info.finite)
    return state, finite


def _assert_reference_numbers(got, ref, fields, kind):
    """Bit for bit, or within 64 eps (1 + |x|) for a full matrix (BLAS's summation order)."""
    for f in fields:
        a, b = getattr(got, f), getattr(ref, f)
        assert type(a) is type(b) and a.dtype == b.dtype and tuple(a.shape) == tuple(b.shape), f
        a, b = _np(a), _np(b)
        if kind == "full":
            eps = np.finfo(a.dtype).eps
            np.testing.assert_array_less(np.abs(a.astype(np.float64) - b), 64 * eps * (1 + np.abs(b)), err_msg=f)
        else:
            assert np.array_equal(a, b), f"{f} differs from the reference step (max {np.abs(a - b).max()})"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("integrator", sorted(kernels.SUPPORTED))
@pytest.mark.parametrize("land", sorted(LANDSCAPES))
def test_kernel_against_reference_step(land, integrator, backend):
    make, kind = LANDSCAPES[land]
    landscape = make()
    info = INTEGRATORS[integrator]
    params = {"eta": 1.3, "friction": 0.7} if integrator == "baoab" else {}
    chunk = 4096  # several chunks, a small test
    n = max(MIN_ELEMENTS // landscape.dim, 16) + 4 * chunk // landscape.dim + 7
    theta = _theta(backend, n, landscape.dim)
    kernel = find_kernel(info, landscape, theta, params)
    assert kernel is not None and kernel.kind == kind
    kernel.chunk = chunk
    assert len(chunk_rows(n, landscape.dim, chunk)) >= 4
    fused, finite = _run(kernel, info, landscape, theta, backend, **params)
    ref, ref_finite = _run(info.step, info, landscape, theta, backend, **params)
    rng = _rng(backend, 9)  # the same three steps in one advance() call
    multi, multi_info = kernel.advance(rng, info.init(landscape, theta, rng=rng, D=0.1, **params), landscape, 3,
                                       dt=0.01, D=0.1, **params)
    assert finite == [True] * 3 and ref_finite == [None] * 3 and multi_info.finite is True
    assert type(fused) is type(ref) and fused.step == ref.step == multi.step == 3
    assert math.isclose(fused.time, ref.time) and multi.time == fused.time
    fields = [f for f in ref._fields if isinstance(getattr(ref, f), (np.ndarray, torch.Tensor))]
    assert "grad" in fields
    for got in (fused, multi):
        _assert_reference_numbers(got, ref, fields, kind)
    # the new gradient is the landscape's own
    g = landscape.grad(fused.theta)
    assert np.allclose(_np(fused.grad), _np(g), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("d", [6, 12])
def test_full_matrix_kernel_is_not_bit_identical_by_luck_only_within_tolerance(d):
    """Negative control for the tolerance above: a kernel whose gradient misses the centre
    shift is caught by it (the unrolled product and BLAS's)."""
    landscape = _full(d)
    info = INTEGRATORS["euler_maruyama"]
    theta = _theta("numpy64", 4000, d)
    kernel = find_kernel(info, landscape, theta)
    assert kernel.unrolled == (d <= SMALL_MATRIX)
    pc = list(kernel._per_coord)
    pc[1] = pc[1] * 1.0001
    kernel._per_coord = tuple(pc)
    kernel._tiles.clear()
    fused, _ = _run(kernel, info, landscape, theta, "numpy64")
    ref, _ = _run(info.step, info, landscape, theta, "numpy64")
    eps = np.finfo(np.float64).eps
    assert np.any(np.abs(fused.grad - ref.grad) > 64 * eps * (1 + np.abs(ref.grad)))


@pytest.mark.parametrize("d", [1, SMALL_MATRIX, SMALL_MATRIX + 1])
def test_full_matrix_product_unrolled_up_to_small_matrix_then_blas(d):
    landscape = _full(d)
    kernel = find_kernel(INTEGRATORS["baoab"], landscape, _theta("torch32", 8192, d))
    assert kernel.kind == "full" and kernel.unrolled == (d <= SMALL_MATRIX)
    assert (kernel.matrix is None) == kernel.unrolled
    assert kernel.description == ("fused baoab, full gradient, " + ("unrolled" if d <= SMALL_MATRIX else "BLAS")
                                  + " product, float32 (numba)")


@pytest.mark.parametrize("n, d", [(100_000, 2), (4099, 3), (8192, 1), (10, 7), (16 * 1024 + 3, 1), (1000, 100)])
def test_chunks_cover_rows_in_blocks_of_16_entries(n, d):
    rows = chunk_rows(n, d)
    assert rows[0][0] == 0 and rows[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(rows, rows[1:]))
    assert all((hi - lo) * d % 16 == 0 for lo, hi in rows[:-1])
    assert (rows[-1][1] - rows[-1][0]) * d >= 16 or len(rows) == 1


@pytest.mark.parametrize("backend", ["numpy64", "torch32"])
@pytest.mark.parametrize("integrator", sorted(kernels.SUPPORTED))
@pytest.mark.parametrize("land", ["double_well_2d", "double_well_5d", "quadratic_diagonal_centred", "quadratic_full"])
def test_advance_is_n_single_steps(land, integrator, backend):
    """``advance(n)`` (every step in place on a copy of the input, no states between) gives the
    numbers of n calls of the step, bit for bit (a full matrix within rounding), without writing
    into the state it started from or into any state it returned."""
    landscape = LANDSCAPES[land][0]()
    info = INTEGRATORS[integrator]
    params = {"eta": 1.3, "friction": 0.7} if integrator == "baoab" else {}
    theta = _theta(backend, 3000, landscape.dim)
    kernel = find_kernel(info, landscape, theta, params)
    kernel.chunk = 1024  # several chunks, the last one shorter
    for n_steps in (1, 2, 5):
        rng_a, rng_b = _rng(backend, 4), _rng(backend, 4)
        start = info.init(landscape, theta, rng=rng_a, D=0.1, **params)
        info.init(landscape, theta, rng=rng_b, D=0.1, **params)
        kept = {f: _np(getattr(start, f)).copy() for f in start._fields if hasattr(getattr(start, f), "shape")}
        a, a_info = kernel.advance(rng_a, start, landscape, n_steps, dt=0.01, D=0.1, **params)
        b = start
        for _ in range(n_steps):
            b, _ = kernel(rng_b, b, landscape, dt=0.01, D=0.1, **params)
        assert a_info.finite is True and a.step == b.step == n_steps and a.time == b.time
        _assert_reference_numbers(a, b, [f for f in b._fields if hasattr(getattr(b, f), "shape")],
                                  LANDSCAPES[land][1])
        for f, v in kept.items():  # the input state is never written
            assert np.array_equal(_np(getattr(start, f)), v), f
    # the arrays the kernel keeps between calls (its scratch chunks) never belong to a state it returned
    rng = _rng(backend, 5)
    states = [info.init(landscape, theta, rng=rng, D=0.1, **params)]
    for n_steps in (3, 1, 2, 4, 1, 1, 3):
        states.append(kernel.advance(rng, states[-1], landscape, n_steps, dt=0.01, D=0.1, **params)[0])
    copies = [[_np(x).copy() for x in st if hasattr(x, "shape")] for st in states]
    for n_steps in (2, 3, 1, 2):
        kernel.advance(rng, states[-1], landscape, n_steps, dt=0.01, D=0.1, **params)
    for st, kept in zip(states, copies):
        assert all(np.array_equal(_np(x), c) for x, c in zip([x for x in st if hasattr(x, "shape")], kept))
    with pytest.raises(ValueError, match="n_steps must be >= 1, got 0"):
        kernel.advance(rng_a, start, landscape, 0, dt=0.01, D=0.1, **params)


@pytest.mark.filterwarnings("ignore:overflow encountered")
def test_advance_stops_after_the_first_non_finite_step():
    landscape = double_well_2d()
    info = INTEGRATORS["euler_maruyama"]
    theta = _theta("torch32", 5000, 2)
    theta[77, 0] = 1e15  # its gradient overflows: non-finite after step 1
    kernel = find_kernel(info, landscape, theta)
    state, step_info = kernel.advance(_rng("torch32", 0), info.init(landscape, theta), landscape, 10,
                                      dt=0.01, D=0.1)
    assert step_info.finite is False and state.step == 1
    assert not bool(torch.isfinite(state.theta[77]).all())


@pytest.mark.filterwarnings("ignore:overflow encountered")
@pytest.mark.parametrize("integrator", sorted(kernels.SUPPORTED))
def test_advance_stops_at_a_non_finite_step_with_the_reference_numbers(integrator):
    """A particle that overflows at step 2 of a call: advance stops there, and the
    state it returns (positions, gradient, momenta, noise) is the reference steps' state."""
    landscape = double_well_2d()
    info = INTEGRATORS[integrator]
    params = {"eta": 1.3, "friction": 0.7} if integrator == "baoab" else {}
    theta = _theta("torch32", 5000, 2)
    theta[77, 0] = 1e12  # step 1: about -4e34 (finite); step 2: its gradient overflows
    kernel = find_kernel(info, landscape, theta, params)
    kernel.chunk = 2048
    rng_a, rng_b = _rng("torch32", 3), _rng("torch32", 3)
    a, a_info = kernel.advance(rng_a, info.init(landscape, theta, rng=rng_a, D=0.1, **params), landscape, 10,
                               dt=0.01, D=0.1, **params)
    b = info.init(landscape, theta, rng=rng_b, D=0.1, **params)
    while b.step == 0 or bool(torch.isfinite(b.theta).all()):
        b, _ = info.step(rng_b, b, landscape, dt=0.01, D=0.1, **params)
    assert a_info.finite is False and a.step == b.step == 2
    for f in b._fields:
        x, y = getattr(a, f), getattr(b, f)
        if hasattr(y, "shape"):
            assert np.array_equal(_np(x), _np(y), equal_nan=True), f


def test_chunk_size_draws_like_one_whole_array():
    k = find_kernel(INTEGRATORS["baoab"], double_well_2d(), np.zeros((5000, 2)))
    assert k.chunk == kernels.CHUNK_ELEMENTS and k.chunk % 16 == 0


@pytest.mark.parametrize("backend", ["numpy32", "torch32", "torch64"])
def test_kernel_reports_non_finite_positions(backend):
    landscape = double_well_2d()
    info = INTEGRATORS["euler_maruyama"]
    theta = _theta(backend, 5000, 2)
    theta[1234, 0] = 1e110 if backend.endswith("64") else 1e15  # its gradient overflows: theta' = inf
    kernel = find_kernel(info, landscape, theta)
    rng = _rng(backend, 0)
    with np.errstate(over="ignore", invalid="ignore"):
        state = info.init(landscape, theta)
        state, step_info = kernel(rng, state, landscape, dt=0.01, D=0.1)
    assert step_info.finite is False
    assert not np.isfinite(_np(state.theta)[1234]).all()


@pytest.mark.filterwarnings("ignore:overflow encountered")
@pytest.mark.parametrize("mode", ["raise", "drop"])
def test_driver_names_the_non_finite_particle_after_a_fused_step(mode):
    n, bad = 5000, 4321
    theta = torch.zeros(n, 2)
    theta[bad, 0] = 1e20  # finite, but its gradient overflows: non-finite after step 1
    sim = Simulation(double_well_2d(), theta, dt=0.01, D=0.05, rng=torch.Generator().manual_seed(0),
                     on_nonfinite=mode)
    assert sim.kernel is not None
    if mode == "raise":
        with pytest.raises(hhld.NonFiniteError, match=rf"step 1 in particle {bad}") as err:
            sim.run(3)
        assert err.value.step == 1 and err.value.particle == bad
    else:
        sim.run(3)
        assert sim.dropped == [(1, bad, "non-finite theta")]
        assert sim.state.theta.shape == (n - 1, 2) and bool(torch.isfinite(sim.state.theta).all())


@pytest.mark.filterwarnings("ignore:overflow encountered")
@pytest.mark.parametrize("land,integrator", [("double_well_2d", "euler_maruyama"), ("quadratic_full", "baoab"),
                                             ("quadratic_diagonal_centred", "leimkuhler_matthews")])
def test_dropped_particles_mid_call_then_a_smaller_ensemble_match_the_reference(land, integrator):
    """A particle that overflows (at step 2 of a call, for the double well) is dropped; the
    kernel's later calls run a smaller ensemble with the scratch chunks of the larger one. Same run as the reference
    steps (bit for bit; a full matrix to rounding), same dropped particle."""
    make, kind = LANDSCAPES[land]
    params = {"eta": 1.3, "friction": 0.7} if integrator == "baoab" else {}

    def run(kernels_on):
        landscape = make()
        theta = torch.as_tensor(np.random.default_rng(1).normal(size=(6000, landscape.dim)) * 0.5,
                                dtype=torch.float32)
        # finite, then not: the cubic gradient overflows at step 2, the full matrix's
        # product within two steps, the diagonal one at once (A = 3 times 1.5e38), so step 1
        col, x0 = {"cubic": (0, 1e12), "full": (0, 3e38), "diagonal": (2, 1.5e38)}[kind]
        theta[4321, col] = x0
        sim = Simulation(landscape, theta, dt=0.01, D=0.05, integrator=integrator, on_nonfinite="drop",
                         rng=torch.Generator().manual_seed(2), kernels=kernels_on, **params)
        if kernels_on:
            sim.kernel.chunk = 2048  # several chunks, so the scratch is reused smaller
        sim.run(7).run(5)
        return sim

    a, b = run(True), run(False)
    assert a.kernel is not None and b.kernel is None
    assert a.dropped == b.dropped and len(a.dropped) == 1 and a.dropped[0][1] == 4321
    assert a.state.step == b.state.step == 12 and a.state.theta.shape == (5999, make().dim)
    fields = [f for f in b.state._fields if isinstance(getattr(b.state, f), torch.Tensor)]
    _assert_reference_numbers(a.state, b.state, fields, kind)


@pytest.mark.parametrize("progress", [False, True])
def test_simulation_with_and_without_kernels_gives_the_same_run(progress):
    """The driver hands the kernel every step up to the next observer's (``advance``): the
    observers still see every state they are due at, the same as step by step."""
    from hhld.dynamics import LossObserver, MomentsObserver

    def run(kernels_on):
        sim = Simulation(double_well_2d(), torch.zeros(6000, 2), dt=0.01, D=0.05, integrator="leimkuhler_matthews",
                         rng=torch.Generator().manual_seed(3), kernels=kernels_on,
                         observers=[LossObserver(every=3), MomentsObserver(every=7)])
        sim.run(20, progress=progress).run(9)
        return sim, sim.state, sim.results()

    (sk, a, ra), (sr, b, rb) = run(True), run(False)
    assert sk.kernel is not None and sr.kernel is None
    assert torch.equal(a.theta, b.theta) and torch.equal(a.grad, b.grad) and torch.equal(a.noise, b.noise)
    assert a.step == b.step == 29
    la, lb = ra["loss"], rb["loss"]
    assert list(la["steps"]) == list(lb["steps"]) == list(range(3, 30, 3))
    assert np.array_equal(la["mean"], lb["mean"]) and np.array_equal(la["std"], lb["std"])
    assert ra["moments"]["n"] == rb["moments"]["n"] == 4 * 6000  # steps 7, 14, 21, 28 x 6000 particles
    assert np.array_equal(ra["moments"]["mean_theta"], rb["moments"]["mean_theta"])


class _Shifted(DoubleWell):
    def _grad(self, th):
        return super()._grad(th) + 1.0


class _UserCubic(Landscape):
    """A user landscape that declares its gradient form: L = sum th^4/4 - th^2/2."""

    name = "user_cubic"

    def _value(self, th):
        return (0.25 * th ** 4 - 0.5 * th ** 2).sum(-1)

    def gradient_form(self):
        return CubicGradient(np.ones(self.dim), -np.ones(self.dim), np.zeros(self.dim))

    def _grad(self, th):
        return form_gradient(self.gradient_form(), th)


def test_kernel_choice_follows_the_declared_capability_only():
    info = INTEGRATORS["euler_maruyama"]
    big = np.zeros((5000, 2))
    # a subclass that overrides the gradient loses the inherited form (and so the kernel)
    assert _Shifted(2).gradient_form() is None and find_kernel(info, _Shifted(2), big) is None
    sim = Simulation(_Shifted(2), big, dt=0.01, D=0.0)
    sim.run(1)
    np.testing.assert_allclose(sim.state.theta, -0.01)  # its own gradient (+1) was used
    # a user landscape that declares a form gets the fused kernel, and the reference's numbers
    user = _UserCubic(2)
    k = find_kernel(info, user, big)
    assert k is not None and k.kind == "cubic"
    a, _ = _run(k, info, user, _theta("numpy64", 5000, 2), "numpy64")
    b, _ = _run(info.step, info, user, _theta("numpy64", 5000, 2), "numpy64")
    assert np.array_equal(a.theta, b.theta)
    # no form, small ensembles, autograd tensors, an external force: the reference step
    assert find_kernel(info, TorchLandscape(lambda x: (x ** 2).sum(-1), 2), big) is None
    assert find_kernel(info, double_well_2d(), np.zeros((10, 2))) is None
    assert find_kernel(info, double_well_2d(), torch.zeros(5000, 2, requires_grad=True)) is None
    assert find_kernel(INTEGRATORS["baoab"], double_well_2d(), big, {"extra_force": lambda t: t * 0}) is None
    assert find_kernel(info, double_well_2d(), np.zeros((5000, 2), dtype=np.float16)) is None
    assert find_kernel(info, double_well_2d(), np.zeros((2, 5000)).T) is None  # not C-contiguous


def test_kernel_hands_states_it_cannot_take_to_the_reference_step():
    landscape = double_well_2d()
    info = INTEGRATORS["euler_maruyama"]
    kernel = find_kernel(info, landscape, np.zeros((5000, 2)))

    class Scripted:  # a random source that is not a numpy Generator (tests script noise this way)
        def standard_normal(self, shape, dtype=None):
            return np.ones(shape, dtype=dtype or np.float64)

    state = info.init(landscape, np.zeros((5000, 2)))
    new, step_info = kernel(Scripted(), state, landscape, dt=0.01, D=0.5)
    assert step_info.finite is None and np.allclose(new.theta, 0.1)  # the reference step ran
    small = info.init(landscape, np.zeros((10, 2)))
    assert kernel(np.random.default_rng(0), small, landscape, dt=0.01, D=0.5)[1].finite is None


def test_without_numba_the_reference_step_runs(monkeypatch):
    monkeypatch.setattr(kernels, "numba_available", lambda: False)
    sim = Simulation(double_well_2d(), np.zeros((5000, 2)), dt=0.01, D=0.1, rng=np.random.default_rng(0))
    assert sim.kernel is None
    sim.run(2)
    assert np.isfinite(sim.state.theta).all()


def test_form_gradient_is_each_built_in_gradient():
    th = np.random.default_rng(0).normal(size=(50, 3))
    for land in (DoubleWell(3), TiltedDoubleWell(3, 0.2), QuadraticQuartic(3, 1.0, 0.5), Quadratic([1.0, 2.0, 3.0]),
                 _full(3)):
        form = land.gradient_form()
        assert isinstance(form, (CubicGradient, LinearGradient))
        assert np.array_equal(form_gradient(form, th), land.grad(th))
    x = torch.tensor(th[:4], requires_grad=True)  # the torch form stays differentiable
    DoubleWell(3).grad(x)[:, 0].sum().backward()
    np.testing.assert_allclose(x.grad[:, 0].numpy(), 12 * th[:4, 0] ** 2 - 4, rtol=1e-12)
