"""hhld.dynamics.kernels.loops: each compiled loop against its formula written in numpy, in the same
order of operations (bit-identical), and its finiteness flag (kernel-vs-reference-step tests: test_kernels.py)."""
import numpy as np
import pytest

pytest.importorskip("numba")
from hhld.dynamics.kernels.loops import LOOPS, SMALL_MATRIX, last_half_kick, matrix_loops  # noqa: E402

N = 24


def _arrays(seed=0):
    r = np.random.default_rng(seed)
    return [r.standard_normal(N) for _ in range(5)], [r.standard_normal(N) for _ in range(3)]


def _baoab_open(p, g, t, z, half, drift, c, s):
    """BAOAB up to its last half-kick, in the reference step's order: (x', m)."""
    m = p - g * half
    x = t + m * drift
    m = m * c + z * s
    return x + m * drift, m


def _grad(form, x, k1, k2, k3):
    if form == "cubic":
        return ((x * k1) * x + k2) * x + k3
    if form == "diagonal":
        return k1 * (x - k2)
    return x - k2


@pytest.mark.parametrize("form", ["cubic", "diagonal"])
def test_in_place_loops_recompute_the_gradient(form):
    """The cubic and diagonal loops read the gradient at the current positions from the form
    (not from an array) and update positions (momenta, previous noise) in place."""
    (z, th0, p0, prev0, _), ks = _arrays()
    sigma, drift = 0.3, -0.01
    g = _grad(form, th0, *ks)
    th = th0.copy()
    assert LOOPS[form]["euler_maruyama"](th, z, sigma, drift, 1e300, *ks)
    assert np.array_equal(th, (z * sigma + g * drift) + th0)
    th, prev = th0.copy(), prev0.copy()
    assert LOOPS[form]["leimkuhler_matthews"](th, prev, z, 0.5 * sigma, drift, 1e300, *ks)
    assert np.array_equal(th, ((prev0 + z) * (0.5 * sigma) + g * drift) + th0) and np.array_equal(prev, z)
    half, c, s = 0.05, 0.9, 0.2
    th, p = th0.copy(), p0.copy()
    assert LOOPS[form]["baoab"](th, p, z, half, 0.05, c, s, 1e300, *ks)  # first step: up to the last kick
    x, m = _baoab_open(p0, g, th0, z, half, 0.05, c, s)
    assert np.array_equal(th, x) and np.array_equal(p, m)
    th1, m1 = th.copy(), p.copy()
    assert LOOPS[form]["baoab_pending"](th, p, z[::-1].copy(), half, 0.05, c, s, 1e300, *ks)  # the next step
    g1 = _grad(form, th1, *ks)
    x, m = _baoab_open(m1 - g1 * half, g1, th1, z[::-1], half, 0.05, c, s)  # the last kick, then the step
    assert np.array_equal(th, x) and np.array_equal(p, m)
    gout = np.empty(N)
    LOOPS[form]["baoab_kick"](th, p, gout, half, *ks)  # after the last step: its kick, and the gradient
    assert np.array_equal(gout, _grad(form, x, *ks)) and np.array_equal(p, m - gout * half)
    gout = np.empty(N)
    LOOPS[form]["gradient"](th, gout, *ks)
    assert np.array_equal(gout, _grad(form, th, *ks))


def test_full_matrix_loops_read_the_stored_gradient_and_leave_x_minus_center():
    """The "shift" loops (a full matrix) read the gradient, write x - center for the caller's
    product, and leave BAOAB's last half-kick to last_half_kick."""
    (z, th0, p0, prev0, g), ks = _arrays(1)
    sigma, drift = 0.3, -0.01
    th, y = th0.copy(), np.empty(N)
    assert LOOPS["shift"]["euler_maruyama"](th, g, z, y, sigma, drift, 1e300, *ks)
    x = (z * sigma + g * drift) + th0
    assert np.array_equal(th, x) and np.array_equal(y, x - ks[1])
    th, prev = th0.copy(), prev0.copy()
    assert LOOPS["shift"]["leimkuhler_matthews"](th, prev, g, z, y, 0.5 * sigma, drift, 1e300, *ks)
    x = ((prev0 + z) * (0.5 * sigma) + g * drift) + th0
    assert np.array_equal(th, x) and np.array_equal(prev, z) and np.array_equal(y, x - ks[1])
    half, c, s = 0.05, 0.9, 0.2
    th, p = th0.copy(), p0.copy()
    assert LOOPS["shift"]["baoab"](th, p, g, z, y, half, 0.05, c, s, 1e300, *ks)
    m = p0 - g * half
    x = th0 + m * 0.05
    m = m * c + z * s
    x = x + m * 0.05
    assert np.array_equal(th, x) and np.array_equal(p, m) and np.array_equal(y, x - ks[1])
    gx = np.random.default_rng(3).standard_normal(N)  # the caller's product
    last_half_kick(p, gx, half)
    assert np.array_equal(p, m - gx * half)


def _product(x, A, c):
    """(x - c) @ A summed over j in order (the unrolled loops' order), rows of d entries."""
    y = x - c
    g = y[:, :1] * A[0]
    for j in range(1, A.shape[0]):
        g = g + y[:, j:j + 1] * A[j]
    return g


@pytest.mark.parametrize("d", [1, 3, SMALL_MATRIX])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_unrolled_matrix_loops_read_the_gradient_and_write_the_new_one(d, dtype):
    """The loops for a small full matrix (matrix_loops(d)): the step with the stored gradient, then
    the new gradient (x - center) @ A into it (BAOAB's last half-kick with it); bit for bit against
    numpy in the same order, in the positions' dtype."""
    r = np.random.default_rng(d)
    z, th0, p0, prev0, g0 = (r.standard_normal((5, d)).astype(dtype) for _ in range(5))
    A = r.standard_normal((d, d)).astype(dtype)
    A = (A + A.T) / dtype(2)
    c = r.standard_normal(d).astype(dtype)
    loops, args = matrix_loops(d), (A.reshape(-1), c)
    sigma, drift, big = dtype(0.3), dtype(-0.01), dtype(1e30)

    def flat(*arrays):
        return [a.reshape(-1) for a in arrays]

    th, g = th0.copy(), g0.copy()
    assert loops["euler_maruyama"](*flat(th, g, z), sigma, drift, big, *args)
    x = (z * sigma + g0 * drift) + th0
    assert th.dtype == dtype and np.array_equal(th, x) and np.array_equal(g, _product(x, A, c))
    th, prev, g = th0.copy(), prev0.copy(), g0.copy()
    assert loops["leimkuhler_matthews"](*flat(th, prev, g, z), sigma / dtype(2), drift, big, *args)
    x = ((prev0 + z) * (sigma / dtype(2)) + g0 * drift) + th0
    assert np.array_equal(th, x) and np.array_equal(prev, z) and np.array_equal(g, _product(x, A, c))
    half, step, cc, ss = dtype(0.05), dtype(0.05), dtype(0.9), dtype(0.2)
    th, p, g = th0.copy(), p0.copy(), g0.copy()
    assert loops["baoab"](*flat(th, p, g, z), half, step, cc, ss, big, *args)  # first step: up to the last kick
    x, m = _baoab_open(p0, g0, th0, z, half, step, cc, ss)
    assert np.array_equal(th, x) and np.array_equal(g, _product(x, A, c)) and np.array_equal(p, m)
    th1, m1, g1 = th.copy(), p.copy(), g.copy()
    assert loops["baoab_pending"](*flat(th, p, g, z[::-1].copy()), half, step, cc, ss, big, *args)
    x, m = _baoab_open(m1 - g1 * half, g1, th1, z[::-1], half, step, cc, ss)
    assert np.array_equal(th, x) and np.array_equal(g, _product(x, A, c)) and np.array_equal(p, m)
    loops["baoab_kick"](*flat(th, p, g), half, *args)
    assert np.array_equal(p, m - g * half)
    gout = np.empty_like(th)
    loops["gradient"](*flat(th, gout), *args)
    assert np.array_equal(gout, _product(th, A, c))
    th, g = th0.copy(), g0.copy()
    th[1, d - 1] = np.nan  # the finiteness flag
    assert not loops["euler_maruyama"](*flat(th, g, z), sigma, drift, big, *args)


@pytest.mark.parametrize("d", [0, SMALL_MATRIX + 1])
def test_unrolled_matrix_loops_refuse_other_dimensions(d):
    with pytest.raises(ValueError, match=f"1 <= d <= {SMALL_MATRIX}, got {d}"):
        matrix_loops(d)


@pytest.mark.parametrize("bad", [np.inf, np.nan, 2e3])
def test_flag_is_false_when_a_position_leaves_the_bound(bad):
    (z, th, _, _, _), ks = _arrays(2)
    th[5] = bad
    assert not LOOPS["diagonal"]["euler_maruyama"](th.copy(), z, 0.1, -0.01, 1e3, *ks)
    th[5] = 0.0                                    # the control: the same call with a finite start
    assert LOOPS["diagonal"]["euler_maruyama"](th.copy(), z, 0.1, -0.01, 1e3, *ks)
