"""The fused loops, compiled by numba on first use (in memory: nothing is written to or loaded
from disk, and nothing needs a compiler at install or run time beyond numba's own LLVM).

Each loop advances one chunk of rows ``(n, d)`` of an ensemble by one step of a reference
integrator of :mod:`hhld.dynamics.integrators`, in place (the kernel's own copy of the state:
nobody sees the states between the steps of one :meth:`~hhld.dynamics.kernels.Kernel.advance`),
with the chunk's fresh noise ``z`` from a scratch chunk, evaluating the reference step's expressions in
the reference step's order (numba does not contract ``a * b + c`` into a fused multiply-add and
does not reorder floating-point operations), and the new gradient with the landscape's gradient
form in the order of :func:`hhld.landscapes.form_gradient`:

* ``"cubic"`` (:class:`~hhld.landscapes.CubicGradient`): ``((a x) x + b) x + c`` per coordinate;
* ``"diagonal"`` (diagonal :class:`~hhld.landscapes.LinearGradient`): ``A (x - center)``;
* ``"shift"`` (full ``LinearGradient`` above :data:`SMALL_MATRIX` dimensions): ``x - center`` is
  left in a scratch buffer and the caller multiplies it by ``A`` (a matrix product, done by BLAS:
  measured 3-40x faster than the same product written as a loop over ``j`` here, for d = 3-20),
  then does BAOAB's last half-kick (:func:`last_half_kick`);
* a full ``LinearGradient`` up to :data:`SMALL_MATRIX` dimensions (:func:`matrix_loops`): the
  product unrolled (source generated per ``d``), 4-27x faster than BLAS's on a chunk.

For the cubic and diagonal forms (:func:`_make_in_place`) the gradient at the current
positions is recomputed from them, not stored, and the gradient array is filled once after the
last step (``"gradient"``); for a full matrix (:func:`_make_in_place_stored`) it is read from the
state and the caller's product writes the new one.

Every loop returns True when every new position is finite (``|x| <= max``, false for NaN and
infinities), so the driver needs no second pass over the ensemble to check.
"""
from __future__ import annotations

import functools

import numba

__all__ = ["LOOPS", "last_half_kick", "matrix_loops", "SMALL_MATRIX"]


@numba.njit(inline="always")
def _cubic(x, k, k1, k2, k3):
    t = x * k1[k]
    t = t * x
    t = t + k2[k]
    t = t * x
    return t + k3[k]


@numba.njit(inline="always")
def _diagonal(x, k, k1, k2, k3):
    return k1[k] * (x - k2[k])


@numba.njit(inline="always")
def _shift(x, k, k1, k2, k3):
    return x - k2[k]


# ------------------------------------------------------------------ one entry of one step
# The reference steps' expressions, in their order, written once and inlined into every loop
# below (numba inlines at its own IR level, so each loop compiles to the same arithmetic).

@numba.njit(inline="always")
def _em(z, g, t, sigma, drift):
    """Euler-Maruyama: ``(z sigma + g drift) + t``."""
    return (z * sigma + g * drift) + t


@numba.njit(inline="always")
def _lm(prev, nxt, g, t, half_sigma, drift):
    """Leimkuhler-Matthews: ``((prev + nxt) half_sigma + g drift) + t``."""
    return ((prev + nxt) * half_sigma + g * drift) + t


@numba.njit(inline="always")
def _baoab(p, g, t, z, half, drift, c, s):
    """BAOAB up to the last half-kick: ``(x', m)``, the new position and the momentum before it."""
    m = p - g * half
    x = t + m * drift
    m = m * c + z * s
    return x + m * drift, m


@numba.njit(inline="always")
def _bad(x, big):
    """1 when ``x`` is not finite (``|x| <= big`` is false for NaN and infinities), as int32."""
    return numba.int32(not abs(x) <= big)


def _make(grad, own_gradient: bool):
    """The loops for one gradient form (``grad``); ``own_gradient``: whether the loop evaluates the
    whole gradient itself (cubic, diagonal), or leaves ``x - center`` for the caller's matrix
    product and BAOAB's last half-kick after it (a full matrix).

    The arrays are one chunk of rows, flattened (C order); the per-coordinate constants
    ``k1, k2, k3`` are tiled to the chunk's length, so the loop is one flat loop that the
    compiler vectorises (an inner loop over a few coordinates would not be).

    The finiteness flag is accumulated as a 32-bit integer, truncated back to 32 bits at every
    step: numba widens ``int32 | int32`` to 64 bits, and a 64-bit accumulator makes LLVM vectorise
    the float32 loops 4 lanes wide instead of 8 (measured 0.6 against 0.85 ns per entry)."""
    return _make_in_place(grad) if own_gradient else _make_in_place_stored(grad)


def _make_in_place(grad):
    """The steps for the cubic and diagonal forms, in place, with the fresh noise ``z`` in a small
    scratch chunk and the gradient at the current positions recomputed (the same function of the
    same stored value: the bits a stored gradient would hold) instead of read. Per entry a step
    then touches only the positions (and momenta, and the previous noise for
    Leimkuhler-Matthews): the arrays of one step stay in cache. The gradient array is filled
    once, after the last step, by ``gradient``.

    BAOAB's last half-kick ``p = m - grad(x) half`` is deferred to the next step, whose first
    kick needs the same ``grad(x)``: ``"baoab"`` takes the first step of a call (momenta on entry),
    ``"baoab_pending"`` the later ones (the previous step's last half-kick first), and
    ``"baoab_kick"`` does the last step's kick and fills the gradient array. One gradient per
    entry and step instead of two; the same operations on the same values as the reference."""

    @numba.njit(nogil=True)
    def em(th, z, sigma, drift, big, k1, k2, k3):
        bad = numba.int32(0)
        for k in range(th.size):
            t = th[k]
            x = _em(z[k], grad(t, k, k1, k2, k3), t, sigma, drift)
            bad = numba.int32(bad | _bad(x, big))
            th[k] = x
        return bad == 0

    @numba.njit(nogil=True)
    def lm(th, prev, z, half_sigma, drift, big, k1, k2, k3):
        # prev: the previous step's noise on entry, this step's (z) on exit
        bad = numba.int32(0)
        for k in range(th.size):
            t = th[k]
            x = _lm(prev[k], z[k], grad(t, k, k1, k2, k3), t, half_sigma, drift)
            bad = numba.int32(bad | _bad(x, big))
            th[k] = x
            prev[k] = z[k]
        return bad == 0

    def baoab_loop(pending: bool):
        # p on exit: the momenta before this step's last half-kick; on entry the momenta (pending False:
        # the first step of a call), or those before the previous step's last half-kick (pending True),
        # which is applied first with the gradient at the current positions, the one the step's first
        # kick uses: evaluated once, the same bits as the reference step's stored momenta
        @numba.njit(nogil=True)
        def baoab(th, p, z, half, drift, c, s, big, k1, k2, k3):
            bad = numba.int32(0)
            for k in range(th.size):
                t = th[k]
                g = grad(t, k, k1, k2, k3)
                x, m = _baoab(p[k] - g * half if pending else p[k], g, t, z[k], half, drift, c, s)
                bad = numba.int32(bad | _bad(x, big))
                th[k] = x
                p[k] = m
            return bad == 0

        return baoab

    @numba.njit(nogil=True)
    def kick(th, p, gout, half, k1, k2, k3):
        # after the last step of a call: its last half-kick, and the gradient array
        for k in range(th.size):
            g = grad(th[k], k, k1, k2, k3)
            gout[k] = g
            p[k] = p[k] - g * half

    @numba.njit(nogil=True)
    def gradient(th, gout, k1, k2, k3):
        for k in range(th.size):
            gout[k] = grad(th[k], k, k1, k2, k3)

    return {"euler_maruyama": em, "leimkuhler_matthews": lm, "baoab": baoab_loop(False),
            "baoab_pending": baoab_loop(True), "baoab_kick": kick, "gradient": gradient}


def _make_in_place_stored(grad, leave_y: bool = True, pending: bool = False):
    """The in-place steps for the ``"shift"`` form (a full matrix): the gradient at the current
    positions is read from ``g`` (the matrix product's, stored by the previous step), and
    ``grad(x)`` (``x - center``) goes to the scratch ``y`` for the caller's product into ``g``
    (and, for BAOAB, the last half-kick). Every array argument is a different array: aliased
    arguments would make LLVM's run-time overlap check fall back to a scalar loop. With
    ``leave_y=False`` (:func:`matrix_loops`, whose product reads the new positions) nothing is
    written to ``y`` (a compile-time constant: the store is not compiled) and ``y`` may be any array;
    with ``pending=True`` BAOAB's momenta on entry are those before the previous step's last half-kick,
    applied first (``p - g half``, the stored gradient ``g`` being the one it needs)."""

    @numba.njit(nogil=True)
    def em(th, g, z, y, sigma, drift, big, k1, k2, k3):
        bad = numba.int32(0)
        for k in range(th.size):
            x = _em(z[k], g[k], th[k], sigma, drift)
            bad = numba.int32(bad | _bad(x, big))
            th[k] = x
            if leave_y:
                y[k] = grad(x, k, k1, k2, k3)
        return bad == 0

    @numba.njit(nogil=True)
    def lm(th, prev, g, z, y, half_sigma, drift, big, k1, k2, k3):
        bad = numba.int32(0)
        for k in range(th.size):
            x = _lm(prev[k], z[k], g[k], th[k], half_sigma, drift)
            bad = numba.int32(bad | _bad(x, big))
            th[k] = x
            prev[k] = z[k]
            if leave_y:
                y[k] = grad(x, k, k1, k2, k3)
        return bad == 0

    @numba.njit(nogil=True)
    def baoab(th, p, g, z, y, half, drift, c, s, big, k1, k2, k3):
        # p: the momenta before the last half-kick on exit (the caller kicks with the new gradient)
        bad = numba.int32(0)
        for k in range(th.size):
            gk = g[k]
            x, m = _baoab(p[k] - gk * half if pending else p[k], gk, th[k], z[k], half, drift, c, s)
            bad = numba.int32(bad | _bad(x, big))
            th[k] = x
            p[k] = m
            if leave_y:
                y[k] = grad(x, k, k1, k2, k3)
        return bad == 0

    return {"euler_maruyama": em, "leimkuhler_matthews": lm, "baoab": baoab}


@numba.njit(nogil=True)
def last_half_kick(pout, gout, half):
    """BAOAB's last half-kick ``pout = pout - gout half`` (the reference step's ``m - g' half``),
    for the ``"shift"`` loops, whose gradient needs the matrix product first."""
    for k in range(pout.size):
        pout[k] = pout[k] - gout[k] * half


#: ``LOOPS[form][integrator]``: the compiled loop (compiled lazily, per dtype, at its first call)
LOOPS = {"cubic": _make(_cubic, True), "diagonal": _make(_diagonal, True), "shift": _make(_shift, False)}


# ------------------------------------------------------------------ small full matrices
#: the largest dimension for which a full matrix's product is unrolled into the loops
#: (:func:`matrix_loops`); above it BLAS multiplies each chunk (``"shift"`` loops). Measured per
#: 32768-entry float32 chunk, 1 thread (docs/benchmarks/ensemble.md): d = 3 / 4 / 8 unrolled 5 / 7 /
#: 12 us against torch.mm's 137 / 91 / 47 us; from d = 9 the unrolled product no longer fits the
#: vector registers (d = 9-11: 54-90 us against 83-111 us, d = 12: 86 against 23 us, d = 16: 163
#: against 20 us), so above 8 BLAS's product stays
SMALL_MATRIX = 8


def _product(d, x, out):
    """Source lines ``out_k = ((y_0 a_0k + y_1 a_1k) + ...) + y_(d-1) a_(d-1)k`` for ``y = x - c``:
    the entries of ``(x - center) @ A`` (:func:`hhld.landscapes.form_gradient`), summed in the
    order of ``j``."""
    lines = [f"y{j} = {x}{j} - c{j}" for j in range(d)]
    for k in range(d):
        expr = f"y0 * a0_{k}"
        for j in range(1, d):
            expr = f"({expr}) + y{j} * a{j}_{k}"
        lines.append(f"{out}{k} = {expr}")
    return lines


def _gradient_source(d: int) -> str:
    """The Python source of :func:`matrix_loops`' ``gradient(th, gout, Af, cen)``: per row of ``d``
    entries, ``(t - center) @ A`` into ``d`` scalars (so that LLVM keeps the sums in registers and
    vectorises the loop across rows), then stored."""
    consts = [f"a{j}_{k} = Af[{j * d + k}]" for j in range(d) for k in range(d)]
    consts += [f"c{j} = cen[{j}]" for j in range(d)]
    rows = [f"t{j} = th[b + {j}]" for j in range(d)] + _product(d, "t", "g")
    rows += [f"gout[b + {k}] = g{k}" for k in range(d)]
    return "\n".join(["def gradient(th, gout, Af, cen):", *("    " + c for c in consts),
                      f"    for i in range(th.size // {d}):", f"        b = i * {d}",
                      *("        " + r for r in rows)]) + "\n"


#: the steps with the stored gradient, writing nothing else (:func:`matrix_loops` adds the product)
_STORED = _make_in_place_stored(_shift, leave_y=False)
_STORED_PENDING = _make_in_place_stored(_shift, leave_y=False, pending=True)


@functools.lru_cache(maxsize=None)
def matrix_loops(d: int) -> dict:
    """The steps for a full matrix ``A`` of dimension ``d <=`` :data:`SMALL_MATRIX`, in place,
    called as the ``"shift"`` loops are but without their scratch ``y`` and with ``(A_flat,
    center)`` for the constants: ``loop(th[, other], g, z, scalars..., big, A_flat, center)``. As
    there, the gradient at the current positions is read from ``g`` (the state's); then the new one,
    ``(x - center) @ A``, is written to ``g`` by ``"gradient"``. Each step is two flat loops over the
    chunk, both vectorised by LLVM. BAOAB's last half-kick is deferred to the next step as in
    :func:`_make_in_place` (``"baoab"``, ``"baoab_pending"``, ``"baoab_kick"``).

    The product is unrolled: numba cannot keep the ``d`` sums of a loop over ``j`` in registers, so
    its source is generated for each ``d`` (:func:`_gradient_source`) and compiled in memory on first
    use."""
    if not 1 <= d <= SMALL_MATRIX:
        raise ValueError(f"matrix_loops takes 1 <= d <= {SMALL_MATRIX}, got {d}")
    ns = {}
    exec(compile(_gradient_source(d), f"<hhld matrix gradient d={d}>", "exec"), ns)  # noqa: S102
    gradient = numba.njit(nogil=True)(ns["gradient"])

    em_stored, lm_stored, baoab_stored = (_STORED[k] for k in ("euler_maruyama", "leimkuhler_matthews", "baoab"))

    # (the stored steps' y and constants are unused: g and the centre stand in for them)
    @numba.njit(nogil=True)
    def em(th, g, z, sigma, drift, big, Af, cen):
        ok = em_stored(th, g, z, g, sigma, drift, big, cen, cen, cen)
        gradient(th, g, Af, cen)
        return ok

    @numba.njit(nogil=True)
    def lm(th, prev, g, z, half_sigma, drift, big, Af, cen):
        ok = lm_stored(th, prev, g, z, g, half_sigma, drift, big, cen, cen, cen)
        gradient(th, g, Af, cen)
        return ok

    def baoab_loop(stored):
        @numba.njit(nogil=True)
        def baoab(th, p, g, z, half, drift, c, s, big, Af, cen):
            ok = stored(th, p, g, z, g, half, drift, c, s, big, cen, cen, cen)
            gradient(th, g, Af, cen)
            return ok

        return baoab

    @numba.njit(nogil=True)
    def kick(th, p, g, half, Af, cen):
        last_half_kick(p, g, half)

    # BAOAB's last half-kick deferred to the next step, as in :func:`_make_in_place`
    return {"euler_maruyama": em, "leimkuhler_matthews": lm, "baoab": baoab_loop(baoab_stored),
            "baoab_pending": baoab_loop(_STORED_PENDING["baoab"]), "baoab_kick": kick, "gradient": gradient}
