"""Fused kernels beside the reference integrators: the same steps, faster, for large CPU ensembles.

The reference steps (:mod:`hhld.dynamics.integrators`) are written as whole-array expressions:
clear, backend-neutral, and several passes over memory per step. A kernel here does one step of
the same scheme in row chunks small enough to stay in cache: the chunk's noise is drawn by the
run's own generator (``torch.Generator.normal_`` / ``numpy.random.Generator.standard_normal``,
chunk by chunk, which gives the numbers of one whole-array draw), then one compiled loop
(:mod:`.loops`, numba) updates the positions (and momenta), evaluates the new gradient and checks
finiteness in the same pass.

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
(the same operations in the same order, no fused multiply-adds), and to rounding for a full
matrix ``A`` (the matrix product's summation order is BLAS's); ``tests/dynamics/test_kernels.py``
checks every kernel against the reference step. A state the kernel cannot take (another dtype,
a scripted random source, a non-contiguous array) is handed to the reference step.
"""
from __future__ import annotations

import functools
import math

import numpy as np

from ..._backend import is_torch
from ...landscapes import CubicGradient, LinearGradient
from ..integrators import (OverdampedState, StepInfo, UnderdampedState, baoab_coefficients, check_step_params)

__all__ = ["Kernel", "find_kernel", "numba_available", "SUPPORTED", "MIN_ELEMENTS", "CHUNK_ELEMENTS"]

#: integrators with a fused kernel
SUPPORTED = ("euler_maruyama", "leimkuhler_matthews", "baoab")
#: smaller ensembles keep the reference step (no compilation for them)
MIN_ELEMENTS = 4096
#: elements per chunk (a multiple of 16: torch draws normals in blocks of 16, so chunked draws
#: equal one whole-array draw)
CHUNK_ELEMENTS = 16384


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
        return "diagonal" if form.diagonal else "shift"
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


def chunk_rows(n: int, d: int) -> list[tuple[int, int]]:
    """Row ranges ``[(lo, hi), ...]`` covering ``n`` rows of ``d`` entries: every range but the
    last a multiple of 16 entries, and the last at least 16 entries (merged into the one before
    otherwise), so that drawing the noise range by range gives one whole-array draw's numbers."""
    rows = max(16, (CHUNK_ELEMENTS // d) // 16 * 16)
    out = [(lo, min(lo + rows, n)) for lo in range(0, n, rows)]
    if len(out) > 1 and (out[-1][1] - out[-1][0]) * d < 16:
        out[-2:] = [(out[-2][0], n)]
    return out


class Kernel:
    """One fused step (integrator x gradient form x dtype), called like the reference step:
    ``kernel(rng, state, landscape, **params) -> (state, StepInfo)``; ``StepInfo.finite`` is
    whether every new position is finite (checked in the same pass)."""

    def __init__(self, info, form, kind: str, dtype):
        from .loops import LOOPS

        self.info, self.form, self.kind, self.dtype = info, form, kind, np.dtype(dtype)
        self.loop = LOOPS[kind][info.name]
        cast = [np.ascontiguousarray(a, dtype=self.dtype) for a in form.constants()]
        if kind == "cubic":
            per_coord = cast
        else:  # (A or a placeholder, center, placeholder)
            A, center = cast
            self.matrix = A if kind == "shift" else None
            per_coord = (A if kind == "diagonal" else center, center, center)
        self._per_coord = per_coord
        self._tiles: dict = {}
        self.big = np.finfo(self.dtype).max.astype(self.dtype)
        self._step = {"euler_maruyama": self._em, "leimkuhler_matthews": self._lm, "baoab": self._baoab}[info.name]

    def __repr__(self) -> str:
        return f"Kernel({self.info.name}, {self.kind}, {self.dtype.name})"

    @property
    def description(self) -> str:
        """e.g. ``"fused euler_maruyama, cubic gradient, float32 (numba)"``."""
        return f"fused {self.info.name}, {self.kind} gradient, {self.dtype.name} (numba)"

    # ------------------------------------------------------------------ call
    def __call__(self, rng, state, landscape, **params):
        if not self._accepts(rng, state):
            return self.info.step(rng, state, landscape, **params)
        return self._step(rng, state, **params)

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

    def _views(self, *arrays):
        return [a.numpy() if is_torch(a) else a for a in arrays]

    def _empty(self, like):
        if is_torch(like):
            import torch

            t = torch.empty(like.shape, dtype=like.dtype)
            return t, t.numpy()
        a = np.empty(like.shape, dtype=like.dtype)
        return a, a

    def _filler(self, rng, target, view, rows):
        """``fill(i)``: standard normals into the ``i``-th row range of ``target`` (``view``: its
        numpy view), drawn by the run's generator. The torch chunks are made in one ``split`` per
        step (a tensor slice costs microseconds of Python per chunk)."""
        if is_torch(target):
            d = target.shape[1]
            parts = target.view(-1).split([(hi - lo) * d for lo, hi in rows])
            return lambda i: parts[i].normal_(generator=rng)
        flat, d = view.reshape(-1), view.shape[1]
        return lambda i: rng.standard_normal(out=flat[rows[i][0] * d: rows[i][1] * d], dtype=self.dtype)

    def _consts(self, d: int, length: int):
        """The per-coordinate constants tiled to at least ``length`` entries (rows of ``d``); a
        chunk starts on a row, so entry ``k`` of a chunk takes constant ``k % d``."""
        t = self._tiles.get(d)
        if t is None or t[0].size < length:
            reps = -(-length // d)
            t = self._tiles[d] = tuple(np.tile(c, reps) for c in self._per_coord)
        return t

    def _scalar(self, x):
        return self.dtype.type(x)

    def _matmul_rows(self, y, out):
        np.matmul(y, self.matrix, out=out)

    # ------------------------------------------------------------ the steps
    def _sweep(self, rng, noise, arrays, gnew, scalars, after=None) -> bool:
        """The chunk loop every step shares: per chunk of rows, the noise drawn into ``noise`` (a
        ``(target, numpy view)`` pair), then the compiled loop on the chunk of ``arrays`` and the new
        gradient ``gnew`` (for a full matrix: ``th' - center`` in a scratch buffer, times ``A`` after,
        then ``after(lo, hi)``). True when every new position is finite."""
        n, d = gnew.shape
        rows = chunk_rows(n, d)
        fill = self._filler(rng, *noise, rows)
        flats = [a.reshape(-1) for a in arrays]
        scratch = self._scratch(gnew)
        gflat = gnew.reshape(-1) if scratch is None else scratch.reshape(-1)
        tail = (*scalars, self.big, *self._consts(d, max(hi - lo for lo, hi in rows) * d))
        loop = self.loop
        ok = True
        for i, (lo, hi) in enumerate(rows):
            fill(i)
            a, b = lo * d, hi * d
            if scratch is None:
                ok &= loop(*[f[a:b] for f in flats], gflat[a:b], *tail)
            else:
                ok &= loop(*[f[a:b] for f in flats], gflat[: b - a], *tail)
                self._matmul_rows(scratch[: hi - lo], gnew[lo:hi])
                if after is not None:
                    after(lo, hi)
        return bool(ok)

    def _em(self, rng, state, *, dt, D, mu=1.0):
        dt, D, mu = check_step_params(dt, D, mu)
        th, g = self._views(state.theta, state.grad)
        new_t, new = self._empty(state.theta)
        gnew_t, gnew = self._empty(state.theta)
        scalars = (self._scalar(math.sqrt(2.0 * D * dt)), self._scalar(-mu * dt))
        ok = self._sweep(rng, (new_t, new), (new, th, g), gnew, scalars)
        return OverdampedState(new_t, gnew_t, state.step + 1, state.time + dt, None), StepInfo(ok)

    def _lm(self, rng, state, *, dt, D, mu=1.0):
        dt, D, mu = check_step_params(dt, D, mu)
        th, g = self._views(state.theta, state.grad)
        if state.noise is None:  # xi_0, drawn whole before xi_1 as the reference step does
            prev_t, prev = self._empty(state.theta)
            rows = chunk_rows(*th.shape)
            fill = self._filler(rng, prev_t, prev, rows)
            for i in range(len(rows)):
                fill(i)
        else:
            (prev,) = self._views(state.noise)
        nxt_t, nxt = self._empty(state.theta)
        new_t, new = self._empty(state.theta)
        gnew_t, gnew = self._empty(state.theta)
        scalars = (self._scalar(0.5 * math.sqrt(2.0 * D * dt)), self._scalar(-mu * dt))
        ok = self._sweep(rng, (nxt_t, nxt), (new, prev, nxt, th, g), gnew, scalars)
        return OverdampedState(new_t, gnew_t, state.step + 1, state.time + dt, nxt_t), StepInfo(ok)

    def _baoab(self, rng, state, *, dt, D, mu=1.0, eta=1.0, friction=1.0, extra_force=None):
        from ..._validation import check_nonnegative, check_positive

        dt, D, mu = check_step_params(dt, D, mu)
        eta = check_positive("eta", eta)
        friction = check_nonnegative("friction", friction)
        scalars = tuple(self._scalar(v) for v in baoab_coefficients(dt, D, mu, eta, friction))
        th, p, g = self._views(state.theta, state.momentum, state.grad)
        new_t, new = self._empty(state.theta)
        pnew_t, pnew = self._empty(state.theta)
        gnew_t, gnew = self._empty(state.theta)

        def last_half_kick(lo, hi):  # full matrix: the loop left it, the gradient needed A first
            pnew[lo:hi] -= gnew[lo:hi] * scalars[0]

        ok = self._sweep(rng, (new_t, new), (new, th, p, g, pnew), gnew, scalars, after=last_half_kick)
        return UnderdampedState(new_t, pnew_t, gnew_t, state.step + 1, state.time + dt, None), StepInfo(ok)

    def _scratch(self, th):
        if self.kind != "shift":
            return None
        rows = chunk_rows(*th.shape)
        return np.empty((max(hi - lo for lo, hi in rows), th.shape[1]), dtype=self.dtype)
