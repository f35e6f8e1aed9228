"""hhld.dynamics.kernels.loops: each compiled loop against its formula written in numpy, in the same
order of operations (bit-identical), and its finiteness flag (kernel-vs-reference-step tests: test_kernels.py)."""
import numpy as np
import pytest

pytest.importorskip("numba")
from hhld.dynamics.kernels.loops import LOOPS, last_half_kick  # noqa: E402

N = 24


def _arrays(seed=0):
    r = np.random.default_rng(seed)
    return [r.standard_normal(N) for _ in range(5)], [r.standard_normal(N) for _ in range(3)]


def _grad(form, x, k1, k2, k3):
    if form == "cubic":
        return ((x * k1) * x + k2) * x + k3
    if form == "diagonal":
        return k1 * (x - k2)
    return x - k2


@pytest.mark.parametrize("form", ["cubic", "diagonal", "shift"])
def test_euler_maruyama_and_leimkuhler_matthews_loops(form):
    (xi, th, g, prev, nxt), ks = _arrays()
    sigma, drift = 0.3, -0.01
    out, gout = xi.copy(), np.empty(N)
    assert LOOPS[form]["euler_maruyama"](out, th, g, gout, sigma, drift, 1e300, *ks)
    x = (xi * sigma + g * drift) + th
    assert np.array_equal(out, x) and np.array_equal(gout, _grad(form, x, *ks))
    new, gout = np.empty(N), np.empty(N)
    assert LOOPS[form]["leimkuhler_matthews"](new, prev, nxt, th, g, gout, 0.5 * sigma, drift, 1e300, *ks)
    x = ((prev + nxt) * (0.5 * sigma) + g * drift) + th
    assert np.array_equal(new, x) and np.array_equal(gout, _grad(form, x, *ks))


@pytest.mark.parametrize("form, kick", [("cubic", True), ("shift", False)])
def test_baoab_loop_and_its_last_half_kick(form, kick):
    (xi, th, p, g, _), ks = _arrays(1)
    half, drift, c, s = 0.05, 0.05, 0.9, 0.2
    out, pout, gout = xi.copy(), np.empty(N), np.empty(N)
    assert LOOPS[form]["baoab"](out, th, p, g, pout, gout, half, drift, c, s, 1e300, *ks)
    m = p - g * half
    x = th + m * drift
    m = m * c + xi * s
    x = x + m * drift
    gx = _grad(form, x, *ks)
    assert np.array_equal(out, x) and np.array_equal(gout, gx)
    # "shift" leaves the matrix product and the kick to the caller: last_half_kick, same numbers
    assert np.array_equal(pout, m - gx * half if kick else m)
    if not kick:
        last_half_kick(pout, gout, half)
        assert np.array_equal(pout, m - gx * half)


@pytest.mark.parametrize("bad", [np.inf, np.nan, 2e3])
def test_flag_is_false_when_a_position_leaves_the_bound(bad):
    (xi, th, g, _, _), ks = _arrays(2)
    th[5] = bad
    out, gout = xi.copy(), np.empty(N)
    assert not LOOPS["diagonal"]["euler_maruyama"](out, th, g, gout, 0.1, -0.01, 1e3, *ks)
    th[5] = 0.0                                    # the control: the same call with a finite start
    out = xi.copy()
    assert LOOPS["diagonal"]["euler_maruyama"](out, th, g, gout, 0.1, -0.01, 1e3, *ks)
