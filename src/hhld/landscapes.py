"""Loss landscapes L(theta): value, gradient (and Hessian / Laplacian where cheap) on batches.

Every landscape takes points of shape ``(N, d)`` (a batch of N particles) or
``(d,)`` (one point) as a numpy array or a torch tensor, and returns the same
backend and dtype: ``value -> (N,)`` or a scalar, ``grad -> (N, d)`` or ``(d,)``.

Built-ins
---------
* :func:`double_well_2d` -- the documents' Example 1, ``(th1^2 - 1)^2 + th2^2``.
* :func:`anisotropic_quadratic` -- the documents' Example 2,
  ``0.5 * sum_i lam_i th_i^2`` with ``lam = linspace(0.1, 10, d)``.
* :func:`double_well_1d` -- ``(th^2 - 1)^2``.
* :class:`DoubleWell` -- the family behind both double wells, any dimension,
  with a barrier height and a transverse stiffness.
* :class:`TiltedDoubleWell`, :class:`Quadratic` (``0.5 th^T A th``), :class:`QuadraticQuartic`
  (``kappa th^2/2 + q th^4/4`` per coordinate),
  :class:`Rosenbrock`, :class:`MullerBrown`.

User landscapes
---------------
* :class:`NumpyLandscape` -- a numpy value function plus gradient function, as the
  documents' ``HeisenbergLearning`` takes them (pointwise functions are detected and
  vectorised automatically).
* :class:`TorchLandscape` -- a torch function; the gradient comes from autograd,
  evaluated on the whole batch at once.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from ._backend import is_torch, namespace, to_numpy
from ._validation import check_positive, check_real

__all__ = [
    "Landscape",
    "DoubleWell",
    "TiltedDoubleWell",
    "Quadratic",
    "QuadraticQuartic",
    "Rosenbrock",
    "MullerBrown",
    "NumpyLandscape",
    "TorchLandscape",
    "double_well_1d",
    "double_well_2d",
    "anisotropic_quadratic",
    "get_landscape",
    "check_landscape",
    "LANDSCAPES",
    "CubicGradient",
    "LinearGradient",
    "form_gradient",
]


def _dim(dim) -> int:
    """A dimension: an integer >= 1."""
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
        raise ValueError(f"dim must be a positive integer, got dim={dim!r}")
    return int(dim)


class Landscape(abc.ABC):
    """A loss landscape ``L: R^d -> R`` evaluated on batches of points.

    Subclasses implement :meth:`_value` and :meth:`_grad` on 2-D input ``(N, d)``;
    they may override :meth:`_hessian` / :meth:`_laplacian` with closed forms.
    ``dim`` is the dimension ``d``; ``box`` a suggested domain ``[(lo, hi)] * d``
    for grids and plots.
    """

    name: str = "landscape"

    def __init__(self, dim: int, box: Sequence[tuple[float, float]] | None = None):
        self.dim = _dim(dim)
        self.box = [tuple(map(float, b)) for b in box] if box is not None else [(-3.0, 3.0)] * self.dim
        if len(self.box) != self.dim:
            raise ValueError(f"box must have {self.dim} (lo, hi) pairs, got {len(self.box)}")
        for k, b in enumerate(self.box):
            if len(b) != 2 or not (np.isfinite(b).all() and b[0] < b[1]):
                raise ValueError(f"box[{k}] must be a finite (lo, hi) pair with lo < hi, got {b!r}")

    # ------------------------------------------------------------------ API
    def value(self, theta):
        """``L(theta)``: ``(N, d) -> (N,)``, ``(d,) -> scalar``."""
        th, single = self._as_batch(theta)
        out = self._value(th)
        return out[0] if single else out

    __call__ = value

    def grad(self, theta):
        """``grad L(theta)``: ``(N, d) -> (N, d)``, ``(d,) -> (d,)``."""
        th, single = self._as_batch(theta)
        out = self._grad(th)
        return out[0] if single else out

    def value_and_grad(self, theta):
        th, single = self._as_batch(theta)
        v, g = self._value_and_grad(th)
        return (v[0], g[0]) if single else (v, g)

    def hessian(self, theta):
        """Hessian ``(N, d, d)`` (or ``(d, d)``). Closed form where known, else
        central differences of the gradient (numpy) / autograd (torch)."""
        th, single = self._as_batch(theta)
        out = self._hessian(th)
        return out[0] if single else out

    def laplacian(self, theta):
        """``Delta L = tr Hessian``: ``(N, d) -> (N,)``."""
        th, single = self._as_batch(theta)
        out = self._laplacian(th)
        return out[0] if single else out

    def hvp(self, theta, v):
        """Hessian-vector product ``H(theta) v`` for batches: ``(N, d), (N, d) -> (N, d)``.
        ``theta`` and ``v`` must be the same kind (both numpy arrays or both torch tensors) and
        shape."""
        if is_torch(theta) != is_torch(v):
            kinds = ("a torch tensor" if is_torch(theta) else "a numpy array",
                     "a torch tensor" if is_torch(v) else "a numpy array")
            raise TypeError(f"{self.name}.hvp: theta is {kinds[0]} but v is {kinds[1]}; pass both as numpy "
                            f"arrays or both as torch tensors")
        th, single = self._as_batch(theta)
        vv, _ = self._as_batch(v)
        if tuple(vv.shape) != tuple(th.shape):
            raise ValueError(f"{self.name}.hvp: v has shape {tuple(getattr(v, 'shape', ()))}, theta has shape "
                             f"{tuple(getattr(theta, 'shape', ()))}; they must match")
        if is_torch(th) and (vv.dtype != th.dtype or vv.device != th.device):
            vv = vv.to(dtype=th.dtype, device=th.device)
        out = self._hvp(th, vv)
        return out[0] if single else out

    def gradient_form(self) -> "CubicGradient | LinearGradient | None":
        """The gradient's closed form as data, for the fused ensemble kernels.

        The extension point of :mod:`hhld.dynamics.kernels`: a landscape whose gradient is
        one of the documented forms returns it here, and the ensemble driver then advances
        large CPU ensembles with a fused compiled kernel (one pass over memory per step)
        instead of the reference step; the numbers are those of the reference step (bit
        for bit where the arithmetic is the same, see ``docs/architecture.md``).

        Returns
        -------
        CubicGradient or LinearGradient or None
            :class:`CubicGradient` for separable gradients
            ``grad_i L = ((a_i th_i) th_i + b_i) th_i + c_i``; :class:`LinearGradient` for
            ``grad L = A (th - center)``; ``None`` (the default) when the gradient has no
            such form: the reference step is used.

        Notes
        -----
        The form must be the landscape's own gradient: :meth:`grad` has to compute the same
        expression in the same order (:func:`form_gradient` does exactly that, use it as
        ``_grad``). A subclass that overrides ``_grad``, ``grad`` or ``_value_and_grad``
        without defining ``gradient_form`` itself gets ``None`` (its gradient is no longer
        the inherited form).
        """
        return None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        own = cls.__dict__
        if "gradient_form" not in own and any(k in own for k in ("_grad", "grad", "_value_and_grad")):
            cls.gradient_form = Landscape.gradient_form  # the inherited form no longer describes _grad

    def minima(self) -> list[np.ndarray]:
        """Known local minima (may be empty; used as starting guesses)."""
        return []

    def saddles(self) -> list[np.ndarray]:
        """Known index-1 saddles (may be empty)."""
        return []

    def __repr__(self) -> str:
        return f"{type(self).__name__}(dim={self.dim})"

    # ------------------------------------------------------- implementation
    @abc.abstractmethod
    def _value(self, theta):
        ...

    @abc.abstractmethod
    def _grad(self, theta):
        ...

    def _value_and_grad(self, theta):
        return self._value(theta), self._grad(theta)

    def _hvp(self, theta, v):
        if is_torch(theta):
            import torch

            x = theta.detach().requires_grad_(True)
            with torch.enable_grad():
                g = self._grad_torch_autograd(x)
                (hv,) = torch.autograd.grad((g * v).sum(), x)
            return hv.detach()
        h = self._fd_step(theta)
        return (self._grad(theta + h * v) - self._grad(theta - h * v)) / (2 * h)

    def _hessian(self, theta):
        d = self.dim
        xp = namespace(theta)
        cols = []
        for j in range(d):
            e = xp.zeros_like(theta)
            e[:, j] = 1.0
            cols.append(self._hvp(theta, e))
        H = xp.stack(cols, axis=-1)
        return 0.5 * (H + H.transpose(-1, -2) if is_torch(H) else H + np.swapaxes(H, -1, -2))

    def _laplacian(self, theta):
        H = self._hessian(theta)
        if is_torch(H):
            return H.diagonal(dim1=-2, dim2=-1).sum(-1)
        return np.trace(H, axis1=-2, axis2=-1)

    def _grad_torch_autograd(self, x):
        # Subclasses with a torch-differentiable _value get a differentiable grad;
        # built-in closed-form gradients are themselves differentiable in torch.
        return self._grad(x)

    @staticmethod
    def _fd_step(theta) -> float:
        eps = np.finfo(np.asarray(to_numpy(theta)).dtype if not is_torch(theta) else np.float64).eps
        return float(eps ** (1 / 3))

    def _as_batch(self, theta):
        if is_torch(theta):
            th = theta
            if not th.is_floating_point():
                th = th.double()
        else:
            th = np.asarray(theta)
            if not np.issubdtype(th.dtype, np.floating):
                th = th.astype(np.float64)
        if th.ndim == 1:
            if th.shape[0] != self.dim:
                raise ValueError(
                    f"{self.name}: a point must have shape ({self.dim},), got shape {tuple(th.shape)}"
                )
            return th[None, :], True
        if th.ndim != 2 or th.shape[-1] != self.dim:
            raise ValueError(
                f"{self.name}: expected points of shape (N, {self.dim}) or ({self.dim},), "
                f"got shape {tuple(th.shape)}"
            )
        return th, False


def _torch():
    import torch

    return torch


# ------------------------------------------------------------ gradient forms
@dataclass(frozen=True)
class CubicGradient:
    """A separable gradient ``grad_i L(th) = ((a_i th_i) th_i + b_i) th_i + c_i`` (a loss of at
    most fourth degree in each coordinate, no coupling): the double wells, the quartic well, the
    diagonal quadratic about 0. ``a``, ``b``, ``c``: float64 arrays of length ``dim``."""

    a: np.ndarray
    b: np.ndarray
    c: np.ndarray

    def constants(self):
        return (self.a, self.b, self.c)


@dataclass(frozen=True)
class LinearGradient:
    """``grad L(th) = A (th - center)``: ``A`` symmetric, given as its diagonal ``(dim,)``
    (evaluated as ``A * (th - center)``) or as a full ``(dim, dim)`` matrix (evaluated as
    ``(th - center) @ A``)."""

    A: np.ndarray
    center: np.ndarray

    @property
    def diagonal(self) -> bool:
        return self.A.ndim == 1

    def constants(self):
        return (self.A, self.center)


def form_gradient(form, th, consts=None):
    """The gradient that ``form`` describes, on a batch ``th`` ``(N, d)`` (numpy or torch),
    evaluated in exactly the order the fused kernels use (the reference for them).
    ``consts``: the form's constants already in the backend/dtype/device of ``th``."""
    if consts is None:
        consts = _cast_constants(form.constants(), th)
    if isinstance(form, CubicGradient):
        a, b, c = consts
        out = th * a
        out = out * th
        out = out + b
        out = out * th
        return out + c
    A, center = consts
    y = th - center
    return A * y if form.diagonal else y @ A


def _cast_constants(arrays, th):
    if is_torch(th):
        import torch

        return tuple(torch.as_tensor(a, dtype=th.dtype, device=th.device) for a in arrays)
    return tuple(np.asarray(a).astype(th.dtype, copy=False) for a in arrays)


def _form_grad(landscape, th, cls):
    """``grad L(th)`` from ``cls.gradient_form(landscape)`` (the form of the class that defines
    it, also when a subclass calls this gradient through ``super()``), with its constants cached
    per backend, dtype and device on the landscape."""
    cache = landscape.__dict__.setdefault("_form_cache", {})
    key = (cls, is_torch(th), str(th.dtype), str(th.device) if is_torch(th) else "cpu")
    hit = cache.get(key)
    if hit is None:
        form = cls.gradient_form(landscape)
        hit = cache[key] = (form, _cast_constants(form.constants(), th))
    return form_gradient(hit[0], th, hit[1])


# ---------------------------------------------------------------- built-ins
class DoubleWell(Landscape):
    """``L = barrier * (th1^2 - 1)^2 + transverse * sum_{i>=2} th_i^2``.

    ``dim=2`` with the defaults is the documents' 2-D double well
    ``(th1^2-1)^2 + th2^2``; ``dim=1`` is ``(th^2-1)^2``. Minima at
    ``th1 = +-1`` (other coordinates 0), saddle at the origin, barrier height
    ``barrier``; curvature ``8*barrier`` along th1 at a minimum, ``-4*barrier``
    at the saddle, ``2*transverse`` across.
    """

    name = "double_well"

    def __init__(self, dim: int = 2, barrier: float = 1.0, transverse: float = 1.0):
        super().__init__(dim, box=[(-2.0, 2.0)] * _dim(dim))
        self.barrier = check_positive("barrier", barrier)
        self.transverse = check_positive("transverse", transverse)

    def _value(self, th):
        x = th[:, 0]
        v = self.barrier * (x * x - 1.0) ** 2
        if self.dim > 1:
            v = v + self.transverse * (th[:, 1:] ** 2).sum(-1)
        return v

    def gradient_form(self) -> "CubicGradient":
        """Every gradient coordinate is ``((a_i th_i) th_i + b_i) th_i + c_i`` with
        ``a = (4 barrier, 0, ...)``, ``b = (-4 barrier, 2 transverse, ...)``, ``c = 0``."""
        a = np.zeros(self.dim)
        a[0] = 4.0 * self.barrier
        b = np.full(self.dim, 2.0 * self.transverse)
        b[0] = -4.0 * self.barrier
        return CubicGradient(a, b, np.zeros(self.dim))

    def _grad(self, th):
        return _form_grad(self, th, DoubleWell)

    def _hessian(self, th):
        xp = namespace(th)
        n, d = th.shape
        H = xp.zeros((n, d, d), dtype=th.dtype, **({"device": th.device} if is_torch(th) else {}))
        H[:, 0, 0] = self.barrier * (12.0 * th[:, 0] ** 2 - 4.0)
        for i in range(1, d):
            H[:, i, i] = 2.0 * self.transverse
        return H

    def _laplacian(self, th):
        return self.barrier * (12.0 * th[:, 0] ** 2 - 4.0) + 2.0 * self.transverse * (self.dim - 1)

    def _hvp(self, th, v):
        xp = namespace(th)
        out = xp.empty_like(v)
        out[:, 0] = self.barrier * (12.0 * th[:, 0] ** 2 - 4.0) * v[:, 0]
        if self.dim > 1:
            out[:, 1:] = 2.0 * self.transverse * v[:, 1:]
        return out

    def minima(self):
        e = np.zeros(self.dim)
        e[0] = 1.0
        return [-e, e.copy()]

    def saddles(self):
        return [np.zeros(self.dim)]

    def __repr__(self):
        return f"DoubleWell(dim={self.dim}, barrier={self.barrier}, transverse={self.transverse})"


def double_well_1d() -> DoubleWell:
    """``L(th) = (th^2 - 1)^2``."""
    lw = DoubleWell(dim=1)
    lw.name = "double_well_1d"
    return lw


def double_well_2d() -> DoubleWell:
    """The documents' Example 1: ``L(th) = (th1^2 - 1)^2 + th2^2``."""
    lw = DoubleWell(dim=2)
    lw.name = "double_well_2d"
    return lw


class TiltedDoubleWell(Landscape):
    """``L = (th1^2 - 1)^2 + tilt * th1 + sum_{i>=2} th_i^2``: an asymmetric double well
    (the right well is higher for ``tilt > 0``)."""

    name = "tilted_double_well"

    def __init__(self, dim: int = 1, tilt: float = 0.25):
        super().__init__(dim, box=[(-2.0, 2.0)] * _dim(dim))
        self.tilt = check_real("tilt", tilt)

    def _value(self, th):
        x = th[:, 0]
        v = (x * x - 1.0) ** 2 + self.tilt * x
        if self.dim > 1:
            v = v + (th[:, 1:] ** 2).sum(-1)
        return v

    def gradient_form(self) -> CubicGradient:
        """``((4 th1) th1 - 4) th1 + tilt`` along th1, ``2 th_i`` across."""
        a = np.zeros(self.dim)
        a[0] = 4.0
        b = np.full(self.dim, 2.0)
        b[0] = -4.0
        c = np.zeros(self.dim)
        c[0] = self.tilt
        return CubicGradient(a, b, c)

    def _grad(self, th):
        return _form_grad(self, th, TiltedDoubleWell)

    def _hvp(self, th, v):
        xp = namespace(th)
        out = xp.empty_like(v)
        out[:, 0] = (12.0 * th[:, 0] ** 2 - 4.0) * v[:, 0]
        if self.dim > 1:
            out[:, 1:] = 2.0 * v[:, 1:]
        return out

    def _stationary_x(self) -> np.ndarray:
        # roots of 4x^3 - 4x + tilt = 0
        r = np.roots([4.0, 0.0, -4.0, self.tilt])
        return np.sort(r[np.abs(r.imag) < 1e-12].real)

    def minima(self):
        xs = self._stationary_x()
        out = []
        for x in (xs[0], xs[-1]) if len(xs) == 3 else xs:
            p = np.zeros(self.dim)
            p[0] = x
            out.append(p)
        return out

    def saddles(self):
        xs = self._stationary_x()
        if len(xs) != 3:
            return []
        p = np.zeros(self.dim)
        p[0] = xs[1]
        return [p]

    def __repr__(self):
        return f"TiltedDoubleWell(dim={self.dim}, tilt={self.tilt})"


class Quadratic(Landscape):
    """``L = 0.5 (th - c)^T A (th - c)`` with symmetric ``A``.

    Passing a 1-D ``A`` means ``diag(A)`` (the separable case, evaluated without
    a matrix product).
    """

    name = "quadratic"

    def __init__(self, A, center=None, box=None):
        A = np.asarray(A, dtype=np.float64)
        if A.ndim == 1:
            self.diagonal = True
        elif A.ndim == 2 and A.shape[0] == A.shape[1]:
            if not np.allclose(A, A.T, atol=1e-12 * max(1.0, np.abs(A).max())):
                raise ValueError("A must be symmetric (0.5 th^T A th only sees its symmetric part)")
            self.diagonal = False
        else:
            raise ValueError(f"A must be a square matrix or a vector of eigenvalues, got shape {A.shape}")
        if not np.isfinite(A).all():
            raise ValueError(f"A must be finite, got {A.tolist()!r:.200}")
        dim = A.shape[0]
        super().__init__(dim, box=box or [(-3.0, 3.0)] * dim)
        self.A = A
        self.center = np.zeros(dim) if center is None else np.asarray(center, dtype=np.float64)
        if self.center.shape != (dim,):
            raise ValueError(f"center must have shape ({dim},), got {self.center.shape}")
        if not np.isfinite(self.center).all():
            raise ValueError(f"center must be finite, got {self.center.tolist()}")
        self._cache: dict = {}

    def _consts(self, th):
        """A and c in the backend/dtype/device of ``th`` (cached)."""
        if not is_torch(th):
            return self.A.astype(th.dtype, copy=False), self.center.astype(th.dtype, copy=False)
        key = (th.dtype, th.device)
        if key not in self._cache:
            import torch

            self._cache[key] = (
                torch.as_tensor(self.A, dtype=th.dtype, device=th.device),
                torch.as_tensor(self.center, dtype=th.dtype, device=th.device),
            )
        return self._cache[key]

    def eigenvalues(self) -> np.ndarray:
        return np.sort(self.A) if self.diagonal else np.linalg.eigvalsh(self.A)

    def _value(self, th):
        A, c = self._consts(th)
        y = th - c
        if self.diagonal:
            return 0.5 * (A * y * y).sum(-1)
        return 0.5 * ((y @ A) * y).sum(-1)

    def gradient_form(self) -> LinearGradient:
        return LinearGradient(self.A, self.center)

    def _grad(self, th):
        A, c = self._consts(th)
        return form_gradient(self.gradient_form(), th, (A, c))

    def _hvp(self, th, v):
        A, _ = self._consts(th)
        return A * v if self.diagonal else v @ A

    def _hessian(self, th):
        xp = namespace(th)
        A, _ = self._consts(th)
        M = xp.diag(A) if self.diagonal else A
        n = th.shape[0]
        if is_torch(th):
            return M.expand(n, self.dim, self.dim).clone()
        return np.broadcast_to(M, (n, self.dim, self.dim)).copy()

    def _laplacian(self, th):
        xp = namespace(th)
        A, _ = self._consts(th)
        tr = A.sum() if self.diagonal else xp.trace(A)
        return tr + 0.0 * th[:, 0]

    def minima(self):
        return [self.center.copy()]

    def __repr__(self):
        return f"Quadratic(dim={self.dim}, diagonal={self.diagonal})"


def anisotropic_quadratic(dim: int = 50, lam_min: float = 0.1, lam_max: float = 10.0) -> Quadratic:
    """The documents' Example 2: ``0.5 sum_i lam_i th_i^2``, ``lam = linspace(0.1, 10, d)``
    (condition number 100)."""
    lam_min, lam_max = check_positive("lam_min", lam_min), check_positive("lam_max", lam_max)
    if lam_min > lam_max:
        raise ValueError(f"need lam_min <= lam_max, got lam_min={lam_min!r}, lam_max={lam_max!r}")
    q = Quadratic(np.linspace(lam_min, lam_max, _dim(dim)))
    q.name = "anisotropic_quadratic"
    return q


class QuadraticQuartic(Landscape):
    """``L = sum_i (kappa/2) th_i^2 + (q/4) th_i^4``: a convex, non-quadratic well (kappa-convex for
    ``kappa > 0, q >= 0``; the convergence experiment's landscape for Theorem 3), any dimension,
    minimum at 0. Closed-form Hessian (diagonal ``kappa + 3 q th_i^2``) and Laplacian."""

    name = "quadratic_quartic"

    def __init__(self, dim: int = 1, kappa: float = 1.0, q: float = 1.0, box=None):
        super().__init__(dim, box=box or [(-3.0, 3.0)] * dim)
        if not np.isfinite(kappa) or kappa < 0:
            raise ValueError(f"kappa must be finite and >= 0, got kappa={kappa!r}")
        if not np.isfinite(q) or q < 0:
            raise ValueError(f"q must be finite and >= 0, got q={q!r}")
        if kappa == 0 and q == 0:
            raise ValueError("kappa and q cannot both be 0 (a flat landscape has no Gibbs density)")
        self.kappa, self.q = float(kappa), float(q)

    def _value(self, th):
        y = th * th
        return (0.5 * self.kappa * y + 0.25 * self.q * y * y).sum(-1)

    def gradient_form(self) -> CubicGradient:
        """``((q th_i) th_i + kappa) th_i`` per coordinate."""
        return CubicGradient(np.full(self.dim, self.q), np.full(self.dim, self.kappa), np.zeros(self.dim))

    def _grad(self, th):
        return _form_grad(self, th, QuadraticQuartic)

    def _hvp(self, th, v):
        return (self.kappa + 3.0 * self.q * th * th) * v

    def _laplacian(self, th):
        return (self.kappa + 3.0 * self.q * th * th).sum(-1)

    def minima(self):
        return [np.zeros(self.dim)]

    def __repr__(self):
        return f"QuadraticQuartic(dim={self.dim}, kappa={self.kappa}, q={self.q})"


class Rosenbrock(Landscape):
    """``L = sum_i b (th_{i+1} - th_i^2)^2 + (a - th_i)^2`` (d >= 2), minimum at ``(a, a^2, ...)``."""

    name = "rosenbrock"

    def __init__(self, dim: int = 2, a: float = 1.0, b: float = 100.0):
        if _dim(dim) < 2:
            raise ValueError(f"Rosenbrock needs dim >= 2, got dim={dim}")
        super().__init__(dim, box=[(-2.0, 2.0)] + [(-1.0, 3.0)] * (dim - 1))
        self.a = check_real("a", a)
        self.b = check_real("b", b)

    def _value(self, th):
        x, y = th[:, :-1], th[:, 1:]
        return (self.b * (y - x * x) ** 2 + (self.a - x) ** 2).sum(-1)

    def _grad(self, th):
        xp = namespace(th)
        x, y = th[:, :-1], th[:, 1:]
        r = y - x * x
        g = xp.zeros_like(th)
        g[:, :-1] = -4.0 * self.b * x * r - 2.0 * (self.a - x)
        g[:, 1:] = g[:, 1:] + 2.0 * self.b * r
        return g

    def minima(self):
        if self.dim == 2:
            return [np.array([self.a, self.a ** 2])]
        return [np.ones(self.dim)] if self.a == 1.0 else []


class MullerBrown(Landscape):
    """The Müller-Brown potential (Müller & Brown 1979), a standard 2-D test with three
    minima and two saddles; ``scale`` multiplies the whole potential (the original
    values reach about -147)."""

    name = "muller_brown"
    _A = np.array([-200.0, -100.0, -170.0, 15.0])
    _a = np.array([-1.0, -1.0, -6.5, 0.7])
    _b = np.array([0.0, 0.0, 11.0, 0.6])
    _c = np.array([-10.0, -10.0, -6.5, 0.7])
    _x0 = np.array([1.0, 0.0, -0.5, -1.0])
    _y0 = np.array([0.0, 0.5, 1.5, 1.0])

    def __init__(self, scale: float = 1.0):
        super().__init__(2, box=[(-1.5, 1.2), (-0.5, 2.0)])
        self.scale = check_positive("scale", scale)

    def _terms(self, th):
        x = th[:, 0:1]
        y = th[:, 1:2]
        if is_torch(th):
            import torch

            def cast(a):
                return torch.as_tensor(a, dtype=th.dtype, device=th.device)
        else:
            def cast(a):
                return a.astype(th.dtype, copy=False)
        A, a, b, c, x0, y0 = (cast(v) for v in (self._A, self._a, self._b, self._c, self._x0, self._y0))
        dx = x - x0
        dy = y - y0
        xp = namespace(th)
        e = A * xp.exp(a * dx * dx + b * dx * dy + c * dy * dy)
        return e, dx, dy, a, b, c

    def _value(self, th):
        e, *_ = self._terms(th)
        return self._finite(th, self.scale * e.sum(-1))

    def _grad(self, th):
        xp = namespace(th)
        e, dx, dy, a, b, c = self._terms(th)
        gx = (e * (2 * a * dx + b * dy)).sum(-1)
        gy = (e * (b * dx + 2 * c * dy)).sum(-1)
        return self._finite(th, self.scale * xp.stack([gx, gy], axis=-1))

    def _finite(self, th, out):
        """Far outside its box the exponentials overflow to inf of both signs, whose sum is NaN:
        raise instead of returning it."""
        bad = ~np.isfinite(to_numpy(out)).reshape(th.shape[0], -1).all(axis=1) if out.ndim else None
        if bad is not None and bad.any():
            nan = np.isnan(to_numpy(out)).reshape(th.shape[0], -1).any(axis=1)
            if nan.any():
                from ._validation import NonFiniteError

                i = int(np.flatnonzero(nan)[0])
                raise NonFiniteError(
                    f"muller_brown overflows at theta={to_numpy(th[i]).tolist()}, far outside its box {self.box}: "
                    f"its exponential terms reach +-inf and their sum is undefined", particle=i, quantity="loss")
        return out

    def minima(self):
        return [np.array([-0.558, 1.442]), np.array([0.623, 0.028]), np.array([-0.050, 0.467])]

    def saddles(self):
        return [np.array([-0.822, 0.624]), np.array([0.212, 0.293])]


# ------------------------------------------------------------ user landscapes
class NumpyLandscape(Landscape):
    """A landscape from a numpy value function and gradient function.

    ``loss_fn`` / ``grad_fn`` may be written for one point (the documents' style,
    ``theta -> float`` and ``theta -> (d,)``) or for a batch. ``vectorize`` says how
    they are called on a batch ``(N, d)``:

    * ``"batched"``: ``loss_fn(theta)`` takes ``(N, d)`` and returns ``(N,)``;
    * ``"transposed"``: takes ``(d, N)`` (pointwise code such as
      ``x, y = theta[0], theta[1]`` works unchanged and fast);
    * ``"loop"``: one call per point (always right, slow);
    * ``"auto"`` (default): tries ``batched`` then ``transposed`` on a probe batch and
      keeps the first that agrees with the per-point loop to 1e-10 relative.

    ``grad_fn=None`` uses central finite differences (a warning-free fallback;
    supply the gradient for speed and accuracy).
    """

    name = "numpy"

    def __init__(self, loss_fn: Callable, grad_fn: Callable | None, dim: int, *,
                 vectorize: str = "auto", box=None, name: str | None = None):
        super().__init__(dim, box=box)
        if not callable(loss_fn):
            raise TypeError(f"loss_fn must be callable, got {loss_fn!r}")
        if grad_fn is not None and not callable(grad_fn):
            raise TypeError(f"grad_fn must be callable or None, got {grad_fn!r}")
        self.loss_fn = loss_fn
        self.grad_fn = grad_fn
        self.name = name or getattr(loss_fn, "__name__", "numpy")
        allowed = ("auto", "batched", "transposed", "loop")
        if vectorize not in allowed:
            raise ValueError(f"vectorize must be one of {allowed}, got {vectorize!r}")
        self._mode_value = self._mode_grad = None if vectorize == "auto" else vectorize

    # per-point reference calls
    def _loop_value(self, th):
        return np.array([self._one(self.loss_fn, "loss_fn", p, ()) for p in th])

    def _loop_grad(self, th):
        return np.stack([self._one(self.grad_fn, "grad_fn", p, (self.dim,)) for p in th]).astype(th.dtype, copy=False)

    def _one(self, fn, role: str, p, shape: tuple):
        """``fn(p)`` for one point, checked: a real value of ``shape`` (an error names ``fn``)."""
        name = getattr(fn, "__qualname__", repr(fn))
        out = fn(p)
        if out is None:
            raise TypeError(f"{role} {name!r} returned None for a point of shape ({self.dim},); it must return "
                            + ("a real scalar" if not shape else f"an array of shape {shape}"))
        try:
            a = np.asarray(to_numpy(out), dtype=np.float64)
        except (TypeError, ValueError):
            raise TypeError(f"{role} {name!r} returned {type(out).__name__} {out!r:.60}; it must return "
                            + ("a real scalar" if not shape else f"a real array of shape {shape}")) from None
        if a.size != int(np.prod(shape)):
            raise ValueError(f"{role} {name!r} returned an array of shape {a.shape} for a point of shape "
                             f"({self.dim},); expected " + ("a scalar" if not shape else f"shape {shape}"))
        return a.reshape(shape) if shape else float(a.reshape(()))

    def _detect(self, kind: str):
        rng = np.random.default_rng(12345)
        probe = rng.normal(size=(self.dim + 3, self.dim))
        ref = self._loop_value(probe) if kind == "value" else self._loop_grad(probe)
        for mode in ("batched", "transposed"):
            try:
                with np.errstate(all="ignore"):
                    out = self._call(kind, mode, probe)
            except Exception:  # noqa: BLE001 - a mode that fails is simply not that mode
                continue
            if out.shape == ref.shape and np.allclose(out, ref, rtol=1e-10, atol=1e-12):
                return mode
        return "loop"

    def _call(self, kind, mode, th):
        fn = self.loss_fn if kind == "value" else self.grad_fn
        if mode == "loop":
            return self._loop_value(th) if kind == "value" else self._loop_grad(th)
        if mode == "batched":
            out = np.asarray(fn(th))
            return out.reshape(th.shape[0]) if kind == "value" else out.reshape(th.shape)
        out = np.asarray(fn(th.T))
        if kind == "value":
            return out.reshape(th.shape[0])
        return out.reshape(self.dim, th.shape[0]).T

    @property
    def vectorize(self) -> dict:
        return {"value": self._mode_value, "grad": self._mode_grad}

    def _value(self, th):
        if is_torch(th):
            import torch

            return torch.as_tensor(self._value(to_numpy(th)), dtype=th.dtype, device=th.device)
        if self._mode_value is None:
            self._mode_value = self._detect("value")
        return self._call("value", self._mode_value, th).astype(th.dtype, copy=False)

    def _grad(self, th):
        if is_torch(th):
            import torch

            return torch.as_tensor(self._grad(to_numpy(th)), dtype=th.dtype, device=th.device)
        if self.grad_fn is None:
            h = np.finfo(np.float64).eps ** (1 / 3)
            cols = []
            for j in range(self.dim):
                e = np.zeros(self.dim)
                e[j] = h
                cols.append((self._value(th + e) - self._value(th - e)) / (2 * h))
            return np.stack(cols, axis=-1).astype(th.dtype, copy=False)
        if self._mode_grad is None:
            self._mode_grad = self._detect("grad")
        return self._call("grad", self._mode_grad, th).astype(th.dtype, copy=False)


class TorchLandscape(Landscape):
    """A landscape from a torch function; gradient, Hessian-vector products and
    Laplacian by autograd, evaluated on the whole batch.

    ``fn`` maps ``(N, d) -> (N,)`` when ``batched=True`` (default); with
    ``batched=False`` it maps one point ``(d,) -> ()`` and is vectorised with
    ``torch.func.vmap``. numpy input is accepted and answered in numpy.
    """

    name = "torch"

    def __init__(self, fn: Callable, dim: int, *, batched: bool = True, box=None, name: str | None = None):
        super().__init__(dim, box=box)
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {fn!r}")
        self.fn = fn
        self.batched = bool(batched)
        self.name = name or getattr(fn, "__name__", "torch")

    def _f(self, x):
        if self.batched:
            out = self.fn(x)
        else:
            import torch

            out = torch.func.vmap(self.fn)(x)
        if getattr(out, "numel", lambda: -1)() != x.shape[0]:
            raise ValueError(f"fn {getattr(self.fn, '__qualname__', self.fn)!r} returned shape "
                             f"{tuple(getattr(out, 'shape', ()))} for points of shape {tuple(x.shape)}; expected one "
                             + ("value per point, shape (N,)" if self.batched else "scalar per point"))
        return out.reshape(x.shape[0])

    def _wrap(self, th, compute):
        import torch

        if is_torch(th):
            return compute(th)
        t = torch.from_numpy(np.ascontiguousarray(th))
        return to_numpy(compute(t))

    def _value(self, th):
        import torch

        def compute(x):
            with torch.no_grad():
                return self._f(x)

        return self._wrap(th, compute)

    def _value_and_grad(self, th):
        import torch

        def compute(x):
            x = x.detach().requires_grad_(True)
            with torch.enable_grad():
                v = self._f(x)
                (g,) = torch.autograd.grad(v.sum(), x)
            return torch.cat([v.detach()[:, None], g], dim=1)

        out = self._wrap(th, compute)
        return out[:, 0], out[:, 1:]

    def _grad(self, th):
        return self._value_and_grad(th)[1]

    def _hvp(self, th, v):
        import torch

        def compute(x):
            vv = v if is_torch(v) else torch.from_numpy(np.ascontiguousarray(v))
            x = x.detach().requires_grad_(True)
            with torch.enable_grad():
                (g,) = torch.autograd.grad(self._f(x).sum(), x, create_graph=True)
                (hv,) = torch.autograd.grad((g * vv).sum(), x)
            return hv

        return self._wrap(th, compute)


# ------------------------------------------------------------------ registry
LANDSCAPES: dict[str, Callable[..., Landscape]] = {
    "double_well_2d": double_well_2d,
    "double_well_1d": double_well_1d,
    "double_well": DoubleWell,
    "tilted_double_well": TiltedDoubleWell,
    "anisotropic_quadratic": anisotropic_quadratic,
    "quadratic": Quadratic,
    "quadratic_quartic": QuadraticQuartic,
    "rosenbrock": Rosenbrock,
    "muller_brown": MullerBrown,
}


def check_landscape(obj, where: str = "landscape"):
    """``obj`` if it can serve as a landscape (a :class:`Landscape`, or an object with ``dim`` and
    callable ``value`` and ``grad``); else a ``TypeError`` that says how to wrap a function."""
    if isinstance(obj, Landscape):
        return obj
    if (isinstance(getattr(obj, "dim", None), (int, np.integer)) and callable(getattr(obj, "value", None))
            and callable(getattr(obj, "grad", None))):
        return obj
    if callable(obj):
        what = f"the function {getattr(obj, '__name__', type(obj).__name__)!r}"
        hint = ("; wrap a loss function as NumpyLandscape(loss_fn, grad_fn, dim) (numpy; grad_fn=None for "
                "finite differences) or TorchLandscape(fn, dim) (torch, gradient by autograd), or give a "
                f"registry name: {sorted(LANDSCAPES)}")
    else:
        what = f"{obj!r} (a {type(obj).__name__})"
        hint = f"; give a Landscape or a registry name: {sorted(LANDSCAPES)}"
    raise TypeError(f"{where} must be a hhld.landscapes.Landscape (value, grad and dim), got {what}{hint}")


def get_landscape(name: str | Landscape, **kwargs) -> Landscape:
    """A landscape by registry name (``hhld.landscapes.LANDSCAPES``), with keyword options; a
    landscape object is returned as it is."""
    if not isinstance(name, str):
        if kwargs:
            raise TypeError(f"keyword options {sorted(kwargs)} apply to a registry name, not to {name!r}")
        return check_landscape(name)
    key = name.replace("-", "_").lower()
    if key not in LANDSCAPES:
        raise ValueError(f"unknown landscape {name!r}; choose one of {sorted(LANDSCAPES)}")
    return LANDSCAPES[key](**kwargs)
