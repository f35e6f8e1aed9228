"""Fused kernels beside the reference integrators: the same steps, faster, for large CPU ensembles.

The reference steps (:mod:`hhld.dynamics.integrators`) are written as whole-array expressions:
clear, backend-neutral, and several passes over memory per step. A kernel here takes steps of
the same scheme in row chunks small enough to stay in cache. :meth:`Kernel.advance` takes many
steps in one call (what :meth:`hhld.dynamics.Simulation.run` uses between observations): it
copies the input state's arrays into a new set, which the returned state will own, and updates
that set in place, step after step, chunk by chunk: the chunk's noise is drawn into a scratch
chunk by the run's own generator (``torch.Generator.normal_`` /
``numpy.random.Generator.standard_normal``, chunk by chunk, which gives the numbers of one
whole-array draw), then one compiled loop (:mod:`.loops`, numba) updates the positions (and
momenta), with the gradient, and checks finiteness in the same pass. Nobody sees the states
between, so a step allocates nothing and one step's arrays stay in cache.

How a kernel is chosen (:func:`find_kernel`, called once by :class:`hhld.dynamics.Simulation`):

* the landscape declares its gradient through the public capability
  :meth:`hhld.landscapes.Landscape.gradient_form` (a :class:`~hhld.landscapes.CubicGradient` or
  a :class:`~hhld.landscapes.LinearGradient`; every built-in except Rosenbrock and Müller-Brown
  does). Nothing else about the landscape is looked at;
* the integrator is in :data:`SUPPORTED` (BAOAB only without an external force);
* the positions are a C-contiguous float32/float64 numpy array or CPU torch tensor (not
  requiring grad) with at least :data:`MIN_ELEMENTS` entries;
* numba is installed (``pip install hhld[fast]``); without it the reference step runs.

A kernel returns the reference step's numbers: bit for bit for the cubic and diagonal forms
(the same operations in the same order, no fused multiply-adds; the gradient at the current
positions is the declared form's, recomputed from them, which for a landscape whose form is its
gradient is the state's stored one), and to rounding for a full matrix ``A`` (the matrix
product's summation order: unrolled in the loops up to :data:`.loops.SMALL_MATRIX` dimensions,
BLAS's above); ``tests/dynamics/test_kernels.py``
checks every kernel against the reference step. A state the kernel cannot take (another dtype,
a scripted random source, a non-contiguous array) is handed to the reference step.
"""
from __future__ import annotations

import functools
import math
from typing import Callable, NamedTuple

import numpy as np

from ..._backend import is_torch
from ...landscapes import CubicGradient, LinearGradient
from ..integrators import (OverdampedState, StepInfo, UnderdampedState, baoab_coefficients, check_step_params)

__all__ = ["Kernel", "find_kernel", "numba_available", "SUPPORTED", "MIN_ELEMENTS", "CHUNK_ELEMENTS"]

#: integrators with a fused kernel
SUPPORTED = ("euler_maruyama", "leimkuhler_matthews", "baoab")
#: smaller ensembles keep the reference step (no compilation for them)
MIN_ELEMENTS = 4096
#: entries per chunk (a multiple of 16: torch draws normals in blocks of 16, so chunked draws
#: equal one whole-array draw): the chunk's noise and positions stay in the L2 cache. Chosen from
#: interleaved runs of 8192-262144 on the double well (d = 2), the diagonal (d = 50) and the full
#: (d = 8) quadratic, all three integrators (docs/benchmarks/ensemble.md, run E): 32768 was best
#: or within noise of the best
CHUNK_ELEMENTS = 32768


@functools.lru_cache(maxsize=None)
def numba_available() -> bool:
    """True when numba can be imported (the kernels' compiler)."""
    try:
        import numba  # noqa: F401
    except Exception:  # noqa: BLE001 - any import failure means: no kernels
        return False
    return True


def _form_kind(form) -> str | None:
    if isinstance(form, CubicGradient):
        return "cubic"
    if isinstance(form, LinearGradient):
        return "diagonal" if form.diagonal else "full"
    return None


def _eligible(theta) -> bool:
    """A C-contiguous CPU float32/float64 array or tensor that numpy can view without a copy."""
    if is_torch(theta):
        return (theta.device.type == "cpu" and not theta.requires_grad and theta.is_contiguous()
                and str(theta.dtype) in ("torch.float32", "torch.float64") and not theta.is_neg()
                and not theta.is_conj())
    return (isinstance(theta, np.ndarray) and theta.dtype in (np.float32, np.float64)
            and theta.flags.c_contiguous and theta.flags.aligned)


def find_kernel(info, landscape, theta, params: dict | None = None) -> "Kernel | None":
    """The fused kernel for integrator ``info`` on ``landscape`` and positions like ``theta``,
    or None when none applies (module docstring; the reference step ``info.step`` then runs).

    Parameters
    ----------
    info : hhld.dynamics.IntegratorInfo
    landscape : a landscape; its :meth:`~hhld.landscapes.Landscape.gradient_form` decides.
    theta : the ensemble's positions (backend, dtype, layout and size decide).
    params : the step's keyword parameters (an ``extra_force`` rules BAOAB's kernel out).
    """
    if info.name not in SUPPORTED or (params or {}).get("extra_force") is not None:
        return None
    get_form = getattr(landscape, "gradient_form", None)
    form = get_form() if callable(get_form) else None
    kind = _form_kind(form)
    if kind is None or not _eligible(theta) or theta.shape[0] * theta.shape[1] < MIN_ELEMENTS:
        return None
    if theta.shape[1] != landscape.dim or not numba_available():
        return None
    dtype = np.dtype(str(theta.dtype).replace("torch.", ""))
    return Kernel(info, form, kind, dtype)


def chunk_rows(n: int, d: int, chunk: int = CHUNK_ELEMENTS) -> list[tuple[int, int]]:
    """Row ranges ``[(lo, hi), ...]`` of about ``chunk`` entries covering ``n`` rows of ``d``
    entries: every range but the last a multiple of 16 entries, and the last at least 16 entries
    (merged into the one before otherwise), so that drawing the noise range by range gives one
    whole-array draw's numbers."""
    rows = max(16, (chunk // d) // 16 * 16)
    out = [(lo, min(lo + rows, n)) for lo in range(0, n, rows)]
    if len(out) > 1 and (out[-1][1] - out[-1][0]) * d < 16:
        out[-2:] = [(out[-2][0], n)]
    return out


class Kernel:
    """Fused steps (integrator x gradient form x dtype), called like the reference step:
    ``kernel(rng, state, landscape, **params) -> (state, StepInfo)``; ``StepInfo.finite`` is
    whether every new position is finite (checked in the same pass)."""

    def __init__(self, info, form, kind: str, dtype):
        from .loops import LOOPS, SMALL_MATRIX, matrix_loops

        self.info, self.form, self.kind, self.dtype = info, form, kind, np.dtype(dtype)
        cast = [np.ascontiguousarray(a, dtype=self.dtype) for a in form.constants()]
        #: a full matrix of dimension <= SMALL_MATRIX: the product unrolled in the loops
        self.unrolled = kind == "full" and cast[0].shape[0] <= SMALL_MATRIX
        if kind == "cubic":
            per_coord = cast
        elif self.unrolled:  # (A flattened, center): not tiled
            per_coord = (cast[0].reshape(-1), cast[1])
        else:  # (A or a placeholder, center, placeholder)
            A, center = cast
            per_coord = (A if kind == "diagonal" else center, center, center)
        # a larger full matrix: the loop leaves x - center in a scratch chunk, BLAS multiplies it by A
        self.matrix = cast[0] if kind == "full" and not self.unrolled else None
        self._per_coord = per_coord
        loops = matrix_loops(cast[0].shape[0]) if self.unrolled else LOOPS["shift" if kind == "full" else kind]
        #: the compiled in-place step (:mod:`.loops`)
        self.loop = loops[info.name]
        # BAOAB whose last half-kick waits for the next step (:func:`.loops._make_in_place`): the later
        # steps' loop and the kick after the last step (None: BLAS's path, which kicks every step)
        self.pending_loop = loops.get(f"{info.name}_pending")
        self.kick_loop = loops.get(f"{info.name}_kick")
        self.gradient_loop = loops.get("gradient")  # the cubic and diagonal forms: the gradient array at the end
        #: entries per chunk (:data:`CHUNK_ELEMENTS`)
        self.chunk = CHUNK_ELEMENTS
        self._tiles: dict = {}
        self._scratch = None  # the noise chunk (and, full matrix, x - center): no state owns it
        self.big = np.finfo(self.dtype).max.astype(self.dtype)

    def __repr__(self) -> str:
        return f"Kernel({self.info.name}, {self.kind}, {self.dtype.name})"

    @property
    def description(self) -> str:
        """e.g. ``"fused euler_maruyama, cubic gradient, float32 (numba)"``; a full matrix says
        whose product it uses (``"full gradient, unrolled product"`` or ``"full gradient, BLAS
        product"``)."""
        form = f"{self.kind} gradient"
        if self.kind == "full":
            form += ", unrolled product" if self.unrolled else ", BLAS product"
        return f"fused {self.info.name}, {form}, {self.dtype.name} (numba)"

    # ------------------------------------------------------------------ call
    def __call__(self, rng, state, landscape, **params):
        """One step: ``(state, StepInfo)``, the reference step's numbers."""
        return self.advance(rng, state, landscape, 1, **params)

    def advance(self, rng, state, landscape, n_steps: int, **params):
        """Up to ``n_steps`` steps in one call: ``(state, StepInfo)`` of the last step taken.

        The same numbers as ``n_steps`` calls of the step (the same draws in the same order, the
        same expressions), without the states in between: the input state's arrays are copied
        into a new set, which every step then updates in place (:meth:`_steps`) and the
        returned state owns. The input state is never written, and no array of a returned state
        is ever written again. It stops early, after the first step that leaves a non-finite
        position (``StepInfo.finite`` False; the returned state is that step's), so a caller's
        check sees the step where it happened. A state the kernel cannot take gets one reference
        step."""
        n_steps = int(n_steps)
        if n_steps < 1:
            raise ValueError(f"n_steps must be >= 1, got {n_steps}")
        if not self._accepts(rng, state):
            return self.info.step(rng, state, landscape, **params)
        spec = _SPECS[self.info.name]
        dt, scalars = self._scalars(**params)
        th = state.theta
        # the new set: positions, momenta and the previous noise copied, the gradient too where the
        # loop reads it (a full matrix; the other forms recompute it and fill it after the last step)
        copied = {"theta", "momentum", "noise"} | ({"grad"} if self.kind == "full" else set())
        new = {}
        for name in spec.arrays:
            a = getattr(state, name) if name in copied else None
            new[name] = _copy(a) if a is not None else _empty(th, th.shape)
        if self.info.name == "leimkuhler_matthews" and state.noise is None:
            # xi_0, drawn whole before xi_1 (the reference's order)
            _draw_into(rng, new["noise"].reshape(-1), self.dtype)()
        taken, ok = self._steps(rng, new, n_steps, scalars)
        step, time = state.step, state.time
        for _ in range(taken):  # the reference's clock: dt added once per step
            step, time = step + 1, time + dt
        return spec.state(new, step, time), StepInfo(ok)

    def _steps(self, rng, arrays: dict, n_steps: int, scalars):
        """Up to ``n_steps`` steps in place on ``arrays`` (the new set, by name): ``(steps taken,
        finite)``. Per chunk of rows (:data:`CHUNK_ELEMENTS` entries), the chunk's noise is drawn
        into a scratch chunk, then the compiled loop updates the chunk. The cubic and diagonal
        forms run the loops of :func:`.loops._make_in_place` (the gradient at the current
        positions recomputed, not stored; the gradient array filled once, at the end); a full
        matrix reads the stored gradient and writes the new one: up to :data:`.loops.SMALL_MATRIX`
        dimensions by the loops of :func:`.loops.matrix_loops` (the product unrolled), above by
        those of :func:`.loops._make_in_place_stored` (``x - center`` goes to a second scratch chunk)
        and BLAS, which multiplies that by ``A`` into the gradient rows (then BAOAB's last
        half-kick, :meth:`_full_post`); on the other paths BAOAB's last half-kick of a step waits
        for the next step's loop (``"baoab_pending"``), and the last one runs after the loop
        (``"baoab_kick"``). The same numbers as the
        reference steps: the same draws in the same order (chunks of multiples of 16 entries),
        the same expressions on the same stored values. Stops after the first step that leaves a
        non-finite position."""
        th = arrays["theta"]
        n, d = th.shape
        rows = chunk_rows(n, d, self.chunk)
        longest = max(hi - lo for lo, hi in rows) * d
        consts = self._consts(d, longest)
        full = self.matrix is not None
        parts = 2 if full else 1  # the noise chunk, then (a full matrix for BLAS) x - center
        if self._scratch is None or type(self._scratch) is not type(th) or self._scratch.dtype != th.dtype \
                or self._scratch.shape[0] < parts * longest:
            self._scratch = _empty(th, (parts * longest,))
        sizes = [(hi - lo) * d for lo, hi in rows]
        zs = [self._scratch[:m] for m in sizes]  # the noise chunk (and, full matrix, y after it)
        fills = [_draw_into(rng, z, self.dtype) for z in zs]
        if is_torch(th):
            zs = [z.numpy() for z in zs]
        flat = self._scratch.numpy() if is_torch(th) else self._scratch
        ys = [flat[longest: longest + m] for m in sizes] if full else [None] * len(rows)
        name = self.info.name
        ths, gs = _split(th, rows), _split(arrays["grad"], rows)
        # the second array a step updates: Leimkuhler-Matthews' previous noise, BAOAB's momenta
        others = [None] * len(rows) if name == "euler_maruyama" else \
            _split(arrays["noise" if name == "leimkuhler_matthews" else "momentum"], rows)
        tail = (*scalars, self.big, *consts)
        plan = []
        for fill, t, g, o, z, y in zip(fills, ths, gs, others, zs, ys):
            head = (t,) if o is None else (t, o)
            if full:  # loops(th[, o], g, z, y, ...), then y A into g
                post = self._full_post(name, o, g, y, d, scalars[0], is_torch(th))
                plan.append((fill, head + (g, z, y) + tail, post))
            elif self.unrolled:  # loops(th[, o], g, z, ...): the new gradient into g
                plan.append((fill, head + (g, z) + tail, None))
            else:  # loops(th[, o], z, ...)
                plan.append((fill, head + (z,) + tail, None))
        loop, taken, ok = self.loop, 0, True
        while taken < n_steps and ok:
            for fill, args, post in plan:
                fill()
                ok &= loop(*args)
                if post is not None:
                    post()
            taken += 1
            if self.pending_loop is not None:  # BAOAB: the next step kicks the momenta first
                loop = self.pending_loop
        if self.kick_loop is not None:  # the last step's last half-kick (and the gradient array)
            for t, g, o in zip(ths, gs, others):
                self.kick_loop(t, o, g, scalars[0], *consts)
        elif self.kind != "full":
            for t, g in zip(ths, gs):
                self.gradient_loop(t, g, *consts)
        return taken, bool(ok)

    def _full_post(self, name, p, g, y, d, half, use_torch: bool):
        """What follows the loop on one chunk of a step with a full matrix: the product ``y A``
        into the gradient rows ``g`` (flat chunks), then, for BAOAB, the last half-kick of the
        momenta ``p``. For a torch ensemble the product is torch's (``torch.mm`` on views of the
        same memory), so it follows ``torch.set_num_threads``; numpy's BLAS would start its own
        threads, which made the d = 8 product 1.5x slower on 2 cores (docs/benchmarks/ensemble.md)."""
        from .loops import last_half_kick

        y2, g2 = y.reshape(-1, d), g.reshape(-1, d)
        if use_torch:
            import torch

            yt, gt, At = torch.from_numpy(y2), torch.from_numpy(g2), torch.from_numpy(self.matrix)

            def product():
                torch.mm(yt, At, out=gt)
        else:
            A = self.matrix

            def product():
                np.matmul(y2, A, out=g2)

        if name != "baoab":
            return product

        def product_and_kick():
            product()
            last_half_kick(p, g, half)

        return product_and_kick

    # ------------------------------------------------------------ helpers
    def _accepts(self, rng, state) -> bool:
        th = state.theta
        if not _eligible(th) or th.shape[0] * th.shape[1] < MIN_ELEMENTS or str(th.dtype)[-7:] != self.dtype.name:
            return False
        others = [state.grad] + ([state.momentum] if isinstance(state, UnderdampedState) else []) + (
            [state.noise] if isinstance(state, OverdampedState) and state.noise is not None else [])
        if any(o is None or type(o) is not type(th) or o.shape != th.shape or not _eligible(o)
               or o.dtype != th.dtype for o in others):
            return False
        if isinstance(state, UnderdampedState) and state.extra_force is not None:
            return False
        if is_torch(th):
            import torch

            return isinstance(rng, torch.Generator) and rng.device.type == "cpu"
        return isinstance(rng, np.random.Generator)

    def _scalars(self, *, dt, D, mu=1.0, eta=1.0, friction=1.0, extra_force=None):
        """``(dt, loop scalars)`` for this integrator, the parameters checked as the reference
        step checks them."""
        dt, D, mu = check_step_params(dt, D, mu)
        name = self.info.name
        if name == "baoab":
            from ..._validation import check_nonnegative, check_positive

            eta = check_positive("eta", eta)
            friction = check_nonnegative("friction", friction)
            values = baoab_coefficients(dt, D, mu, eta, friction)
        elif name == "leimkuhler_matthews":
            values = (0.5 * math.sqrt(2.0 * D * dt), -mu * dt)
        else:
            values = (math.sqrt(2.0 * D * dt), -mu * dt)
        return dt, tuple(self.dtype.type(v) for v in values)

    def _consts(self, d: int, length: int):
        """The per-coordinate constants tiled to at least ``length`` entries (rows of ``d``); a
        chunk starts on a row, so entry ``k`` of a chunk takes constant ``k % d``."""
        if self.unrolled:  # the matrix and the centre, as they are
            return tuple(self._per_coord)
        t = self._tiles.get(d)
        if t is None or t[0].size < length:
            reps = -(-length // d)
            t = self._tiles[d] = tuple(np.tile(c, reps) for c in self._per_coord)
        return t


def _empty(like, shape):
    """A new uninitialised array of ``shape`` with ``like``'s backend and dtype."""
    if is_torch(like):
        import torch

        return torch.empty(shape, dtype=like.dtype)
    return np.empty(shape, dtype=like.dtype)


def _draw_into(rng, out, dtype):
    """``fill()``: standard normals into ``out`` (a flat torch tensor or numpy array) by the run's
    generator (``normal_`` / ``standard_normal(out=)``)."""
    if is_torch(out):
        return lambda: out.normal_(generator=rng)
    return lambda: rng.standard_normal(out=out, dtype=dtype)


def _copy(a):
    """A new array with ``a``'s values (same backend, dtype and C-contiguous layout)."""
    return a.clone() if is_torch(a) else a.copy()


def _split(a, rows):
    """Flat numpy views of rows ``rows`` (``[(lo, hi), ...]``) of the 2-D array or tensor ``a``."""
    flat = (a.numpy() if is_torch(a) else a).reshape(-1)
    d = a.shape[1]
    return [flat[lo * d: hi * d] for lo, hi in rows]


class _Spec(NamedTuple):
    """One integrator's state arrays as the kernel carries them (names of the state's fields)
    and how the new state is built from them."""

    arrays: tuple
    state: Callable


def _overdamped(a, step, time):
    return OverdampedState(a["theta"], a["grad"], step, time, a.get("noise"))


def _underdamped(a, step, time):
    return UnderdampedState(a["theta"], a["momentum"], a["grad"], step, time, None)


_SPECS = {
    "euler_maruyama": _Spec(("theta", "grad"), _overdamped),
    "leimkuhler_matthews": _Spec(("theta", "grad", "noise"), _overdamped),
    "baoab": _Spec(("theta", "momentum", "grad"), _underdamped),
}
