"""Pure integrators for Langevin ensembles: ``step(rng, state, landscape, **params) -> state``.

Overdamped Langevin (the documents' "Heisenberg evolution step" with mobility mu)::

    d theta = -mu grad L(theta) dt + sqrt(2 D) dW          (Ito = Stratonovich: additive noise)

Stationary density: Gibbs ``exp(-mu L / D)`` (temperature ``T = D/mu``). ``mu = 1`` is the
reference code's drift ``-grad L``; ``mu = 1/eta`` is the documents' master equation
``d rho/dt = (1/eta) div(grad L rho) + D lap rho``.

Underdamped form of the "Neural Heisenberg Hamiltonian" ``H = pi^2/(2 eta) + L(theta) +
(lam/2) S[rho]^2`` (momentum pi, mass eta)::

    d theta = pi/eta dt
    d pi    = -grad L dt + F_ext dt - gamma pi dt + sqrt(2 gamma eta T) dW

with ``T = D/mu``, so the stationary density of theta is the same Gibbs density; ``F_ext``
carries the entropy coupling (see :mod:`hhld.dynamics.entropy_force`).

Numerical contracts (declared in :data:`INTEGRATORS` and tested):

* ``euler_maruyama``: strong order 1.0 (additive noise), weak order 1.0, stationary
  averages biased O(dt).
* ``leimkuhler_matthews``: ``theta_{n+1} = theta_n - mu grad L dt + sqrt(2 D dt) (xi_n + xi_{n+1})/2``;
  one gradient per step like Euler-Maruyama but stationary averages accurate to O(dt^2)
  (Leimkuhler & Matthews 2013); exact stationary variance for quadratics.
* ``baoab``: BAOAB splitting (Leimkuhler & Matthews 2013) for the underdamped form;
  configurational stationary averages O(dt^2).

States are immutable ``NamedTuple`` records and carry the gradient at the current
positions (computed once per step, reused by the next step and by observers). Steps
never modify their input arrays. numpy arrays need a ``numpy.random.Generator``, torch
tensors a ``torch.Generator``; dtype and device are kept.
"""
from __future__ import annotations

import math
import weakref
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

from .._backend import is_torch, standard_normal
from .._validation import check_nonnegative, check_positive

__all__ = [
    "OverdampedState",
    "UnderdampedState",
    "init_overdamped",
    "init_underdamped",
    "euler_maruyama",
    "leimkuhler_matthews",
    "baoab",
    "IntegratorInfo",
    "INTEGRATORS",
    "get_integrator",
]

Array = Any


class OverdampedState(NamedTuple):
    """Ensemble state of overdamped Langevin.

    ``theta (N, d)``; ``grad`` = grad L(theta); ``step`` count; ``time``; ``noise``: the
    Leimkuhler-Matthews scheme's carried noise ``xi_n`` (None for Euler-Maruyama).
    """

    theta: Array
    grad: Array
    step: int = 0
    time: float = 0.0
    noise: Array | None = None


class UnderdampedState(NamedTuple):
    """Ensemble state of underdamped Langevin: positions, momenta ``pi``, total force
    (``-grad L + F_ext``) at the positions, step count and time."""

    theta: Array
    momentum: Array
    force: Array
    step: int = 0
    time: float = 0.0


def _check_theta(theta, landscape):
    if theta.ndim != 2 or theta.shape[1] != landscape.dim:
        raise ValueError(
            f"theta must have shape (N, {landscape.dim}) for {landscape.name}, got shape {tuple(theta.shape)}"
        )
    if is_torch(theta):
        if not theta.is_floating_point():
            raise TypeError(f"theta must be a floating tensor, got dtype {theta.dtype}")
    elif theta.dtype.kind != "f":
        raise TypeError(f"theta must be a floating array, got dtype {theta.dtype}")


def _as_theta(theta0):
    if is_torch(theta0):
        return theta0 if theta0.ndim == 2 else theta0.reshape(1, -1)
    import numpy as np

    arr = np.asarray(theta0)
    if arr.dtype.kind != "f":
        arr = arr.astype(np.float64)
    return arr if arr.ndim == 2 else arr.reshape(1, -1)


def init_overdamped(landscape, theta0, *, integrator: str = "euler_maruyama", rng=None) -> OverdampedState:
    """Initial state for an overdamped integrator (gradient evaluated once).

    The Leimkuhler-Matthews scheme needs a first noise ``xi_0``; pass ``rng`` for it
    (drawn lazily at the first step when absent).
    """
    theta = _as_theta(theta0)
    _check_theta(theta, landscape)
    theta = theta.clone() if is_torch(theta) else theta.copy()
    noise = None
    if integrator == "leimkuhler_matthews" and rng is not None:
        noise = standard_normal(rng, tuple(theta.shape), theta)
    return OverdampedState(theta=theta, grad=landscape.grad(theta), step=0, time=0.0, noise=noise)


_LAST_PARAMS: list = [None]


def _params(dt, D, mu):
    key = (type(dt), dt, type(D), D, type(mu), mu)
    if key == _LAST_PARAMS[0]:  # the same plain floats as the previous step: already checked
        return dt, D, mu
    dt = check_positive("dt", dt)
    D = check_nonnegative("D", D)
    mu = check_positive("mu", mu)
    if key[0] is float and key[2] is float and key[4] is float:
        _LAST_PARAMS[0] = key
    return dt, D, mu


# ----------------------------------------------------------- fast paths
# Performance only (same numbers as the plain formulas, up to rounding where noted).
# On CPU an ensemble step is done in row chunks of fewer than 32768 elements (torch's
# intra-op grain size): each chunk's noise, update and gradient stay in cache, and no
# element-wise pass wakes torch's intra-op thread pool -- the normal generator is serial
# anyway, and on a small shared machine the pool's synchronisation costs far more than
# it gains. Nothing here changes a global setting (no torch.set_num_threads).
_CPU_CHUNK_ELEMENTS = 32752
_FUSED_GRAD_CACHE: dict = {}


def _fused_grad(landscape):
    """``landscape._grad_into(theta, out)`` when the landscape has one that is its own
    gradient (i.e. not shadowed by a subclass overriding ``_grad``), else None."""
    cls = type(landscape)
    if cls not in _FUSED_GRAD_CACHE:
        def owner(name):
            return next((k for k in cls.__mro__ if name in k.__dict__), None)

        og, ogi = owner("_grad"), owner("_grad_into")
        _FUSED_GRAD_CACHE[cls] = og is not None and ogi is not None and issubclass(ogi, og)
    return landscape._grad_into if _FUSED_GRAD_CACHE[cls] else None


_CHUNK_PLANS: dict = {}


def _row_chunks(theta):
    """Row ranges ``[(lo, hi), ...]`` for a chunked step (one range: no chunking)."""
    n, d = theta.shape
    if n * d <= _CPU_CHUNK_ELEMENTS or (is_torch(theta) and not theta.is_cpu):
        return ((0, n),)
    plan = _CHUNK_PLANS.get((n, d))
    if plan is None:
        rows = max(1, _CPU_CHUNK_ELEMENTS // d)
        plan = tuple((lo, min(lo + rows, n)) for lo in range(0, n, rows))
        if len(_CHUNK_PLANS) > 64:
            _CHUNK_PLANS.clear()
        _CHUNK_PLANS[(n, d)] = plan
    return plan


def _em_update_numpy(new, theta, grad, gnew, drift, scale, grad_into):
    """In place on numpy arrays: ``new = scale * new + theta + drift * grad`` (``scale``
    None: ``new`` is already scaled noise) and ``gnew = grad L(new)`` when ``grad_into``
    is given -- row chunk by row chunk, so each chunk's update and gradient run in cache.
    numpy ufuncs are single-threaded and cost well under a microsecond per call."""
    import numpy as np

    chunks = _row_chunks(theta)
    rows = chunks[0][1]
    scratch = np.empty((rows,) + new.shape[1:], dtype=new.dtype)
    for lo, hi in chunks:
        nc = new[lo:hi]
        if scale is not None:
            nc *= scale
        nc += np.multiply(grad[lo:hi], drift, out=scratch if hi - lo == rows else scratch[: hi - lo])
        nc += theta[lo:hi]
        if grad_into is not None:
            grad_into(nc, gnew[lo:hi])


_NUMPY_VIEWABLE = ("torch.float32", "torch.float64")


# ------------------------------------------------ optional fused C kernel (CPU)
# For landscapes whose gradient is per-coordinate ``((th a) th + b) th`` (the built-in
# double wells, see ``DoubleWell._cubic_coeffs``), the update and the new gradient are one
# loop over the ensemble instead of seven array passes: after the generator has written
# the scaled noise into the output buffer, the kernel reads noise, positions and gradient
# once and writes positions and gradient once. It evaluates exactly the numpy path's
# expressions in the numpy path's order, with floating-point contraction off
# (``-ffp-contract=off``: no fused multiply-adds), so the results are bit for bit those of
# the numpy path; a self-test against that path runs when the kernel is loaded and any
# difference disables it. The kernel is compiled once with the system C compiler
# (``$CC``, ``cc``, ``gcc`` or ``clang``; well under a second) into a per-user cache
# (``$HHLD_CACHE_DIR``, else ``$XDG_CACHE_HOME/hhld`` or ``~/.cache/hhld``) and loaded with
# ctypes. Loading code from a directory means trusting it, so a cached library is loaded only
# when the directory is a real directory owned by this user and not writable by group or others
# (nor is its parent, unless sticky), the file is a regular file owned by this user and not
# writable by others, and its SHA-256 matches the one its name records (written at build time);
# a file that fails is deleted and rebuilt, a directory that fails is not used (the kernel is
# then built in a private temporary directory). Without a compiler, or with ``HHLD_C_KERNEL=0``
# in the environment, the chunked numpy path below is used: same numbers, somewhat slower.
_C_SOURCE = r"""
#include <stddef.h>
#include <stdint.h>
#include <string.h>
/* out = (out + g * drift) + th;  gout = ((out * a) * out + b) * out  (per coordinate).
   Returns 1 when every new position is finite (exponent bits not all set), else 0. */
#define HHLD_EM(T, U, EXP, NAME)                                                       \
int NAME(ptrdiff_t n, ptrdiff_t d, T *out, const T *th, const T *g, T drift,          \
         T *gout, const T *a, const T *b) {                                            \
    U bad = 0;                                                                         \
    if (d == 2) {                                                                      \
        const T a0 = a[0], a1 = a[1], b0 = b[0], b1 = b[1];                            \
        for (ptrdiff_t i = 0; i < 2 * n; i += 2) {                                     \
            T x = (out[i] + g[i] * drift) + th[i];                                     \
            T y = (out[i + 1] + g[i + 1] * drift) + th[i + 1];                         \
            U ux, uy;                                                                  \
            memcpy(&ux, &x, sizeof ux);                                                \
            memcpy(&uy, &y, sizeof uy);                                                \
            bad |= ((ux & EXP) == EXP) | ((uy & EXP) == EXP);                          \
            out[i] = x;                                                                \
            out[i + 1] = y;                                                            \
            gout[i] = ((x * a0) * x + b0) * x;                                         \
            gout[i + 1] = ((y * a1) * y + b1) * y;                                     \
        }                                                                              \
    } else {                                                                           \
        for (ptrdiff_t i = 0; i < n; i++) {                                            \
            for (ptrdiff_t j = 0; j < d; j++) {                                        \
                ptrdiff_t k = i * d + j;                                               \
                T x = (out[k] + g[k] * drift) + th[k];                                 \
                U ux;                                                                  \
                memcpy(&ux, &x, sizeof ux);                                            \
                bad |= ((ux & EXP) == EXP);                                            \
                out[k] = x;                                                            \
                gout[k] = ((x * a[j]) * x + b[j]) * x;                                 \
            }                                                                          \
        }                                                                              \
    }                                                                                  \
    return bad == 0;                                                                   \
}
HHLD_EM(float, uint32_t, 0x7f800000u, hhld_em_cubic_f32)
HHLD_EM(double, uint64_t, 0x7ff0000000000000ull, hhld_em_cubic_f64)
"""
_C_FLAGS = ("-O3", "-fPIC", "-shared", "-ffp-contract=off", "-fno-fast-math")
_C_KERNEL_MIN_ELEMENTS = 4096   # smaller ensembles keep the numpy path (no compile for them)
_C_KERNEL: list = [None]        # None: not tried yet; False: unavailable; else {dtype: fn}
C_KERNEL_STATUS = "not loaded yet"  # what happened when the kernel was (last) looked for


def _c_cache_dirs():
    import os
    from pathlib import Path

    if os.environ.get("HHLD_CACHE_DIR"):
        yield Path(os.environ["HHLD_CACHE_DIR"])
    if os.environ.get("XDG_CACHE_HOME"):
        yield Path(os.environ["XDG_CACHE_HOME"]) / "hhld"
    else:
        home = os.path.expanduser("~")
        if os.path.isabs(home):  # no home directory: only the private temporary build
            yield Path(home) / ".cache" / "hhld"


def _c_compile(cc, src_text, directory, prefix):
    """Compile ``src_text`` into ``directory/<prefix>_<sha256[:16]>.so`` (atomically); the path."""
    import hashlib
    import os
    import subprocess
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory(dir=directory, prefix=".build-") as tmp:
        src = os.path.join(tmp, "kernel.c")
        lib = os.path.join(tmp, "kernel.so")
        with open(src, "w") as fh:
            fh.write(src_text)
        proc = subprocess.run([*cc, *_C_FLAGS, "-o", lib, src], capture_output=True, text=True, timeout=120)
        if proc.returncode != 0 or not os.path.exists(lib):
            raise RuntimeError(f"{' '.join(cc)} failed: {proc.stderr.strip()[-500:]}")
        os.chmod(lib, 0o700)
        with open(lib, "rb") as fh:
            digest = hashlib.sha256(fh.read()).hexdigest()[:16]
        target = Path(directory) / f"{prefix}_{digest}.so"
        os.replace(lib, target)
    return target


def _c_private_dir(d) -> None:
    """Raise unless ``d`` is a directory that only this user can write to (module comment)."""
    import os
    import stat

    st = os.lstat(d)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise RuntimeError(f"{d} is not a plain directory")
    if st.st_uid != os.getuid():
        raise RuntimeError(f"{d} is not owned by this user")
    if st.st_mode & 0o022:
        raise RuntimeError(f"{d} is writable by group or others (mode {stat.S_IMODE(st.st_mode):o})")
    pst = os.stat(d.parent)
    if pst.st_mode & 0o002 and not pst.st_mode & stat.S_ISVTX:
        raise RuntimeError(f"{d.parent} is writable by anyone and not sticky")


def _c_verified(d, prefix):
    """The cached library ``d/<prefix>_<hash>.so`` whose owner, mode and SHA-256 check out, or None;
    a file that fails is removed (the directory is private: only this user wrote it)."""
    import hashlib
    import os
    import stat

    for p in sorted(d.glob(f"{prefix}_*.so")):
        st = os.lstat(p)
        ok = (stat.S_ISREG(st.st_mode) and st.st_uid == os.getuid() and not st.st_mode & 0o022)
        if ok:
            with open(p, "rb") as fh:
                ok = p.name == f"{prefix}_{hashlib.sha256(fh.read()).hexdigest()[:16]}.so"
        if ok:
            return p
        p.unlink()
    return None


def _c_self_test(fns):
    """The kernel against the numpy path, bit for bit (NaN/Inf included)."""
    import numpy as np

    gen = np.random.default_rng(12345)
    for dtype, fn in fns.items():
        for d in (1, 2, 3):
            n = 37
            th = (gen.standard_normal((n, d)) * 2).astype(dtype)
            g = (gen.standard_normal((n, d)) * 3).astype(dtype)
            xi = (gen.standard_normal((n, d)) * 0.1).astype(dtype)
            th[3, 0], g[5, d - 1], xi[7, 0] = np.inf, np.nan, -np.inf
            a = gen.standard_normal(d).astype(dtype)
            b = gen.standard_normal(d).astype(dtype)
            drift = -0.0123
            want = xi + g * dtype(drift)
            want += th
            gwant = want * a
            gwant *= want
            gwant += b
            gwant *= want
            for rows in (slice(None), slice(8, None)):  # with, then without non-finite values
                out, gout = xi[rows].copy(), np.empty_like(xi[rows])
                finite = fn(out.shape[0], d, out.ctypes.data, np.ascontiguousarray(th[rows]).ctypes.data,
                            np.ascontiguousarray(g[rows]).ctypes.data, drift, gout.ctypes.data,
                            a.ctypes.data, b.ctypes.data)
                if not (np.array_equal(out, want[rows], equal_nan=True)
                        and np.array_equal(gout, gwant[rows], equal_nan=True)
                        and bool(finite) == bool(np.isfinite(want[rows]).all())):
                    raise RuntimeError(f"self-test against the numpy path failed ({np.dtype(dtype).name}, d={d})")


def _c_load():
    """Compile (once per machine and compiler) and load the fused kernel; None when it is
    unavailable (the reason is kept in ``C_KERNEL_STATUS``)."""
    global C_KERNEL_STATUS
    import os

    if os.environ.get("HHLD_C_KERNEL", "1").strip().lower() in ("0", "false", "no", "off"):
        C_KERNEL_STATUS = "disabled by HHLD_C_KERNEL"
        return None
    try:
        import ctypes
        import hashlib
        import platform
        import shlex
        import shutil
        import tempfile
        from pathlib import Path

        import numpy as np

        if os.name != "posix":
            raise RuntimeError(f"not built on {os.name}")
        cc = shlex.split(os.environ.get("CC", "")) or next(
            ([c] for c in ("cc", "gcc", "clang") if shutil.which(c)), None)
        if not cc or not shutil.which(cc[0]):
            raise RuntimeError("no C compiler found")
        tag = hashlib.sha256(repr((_C_SOURCE, cc, _C_FLAGS, platform.machine(), platform.system())).encode())
        prefix = f"em_cubic_{tag.hexdigest()[:20]}"
        path, lib, errors = None, None, []
        for d in _c_cache_dirs():
            try:
                d.mkdir(parents=True, exist_ok=True, mode=0o700)
                _c_private_dir(d)
                path = _c_verified(d, prefix) or _c_compile(cc, _C_SOURCE, d, prefix)
                lib = ctypes.CDLL(str(path))
                break
            except Exception as exc:  # noqa: BLE001 - try the next place, then a private temp dir
                errors.append(f"{d}: {exc}")
        if lib is None:  # no usable cache: build in a private temporary directory, load, remove
            with tempfile.TemporaryDirectory(prefix="hhld-") as tmp:
                path = _c_compile(cc, _C_SOURCE, Path(tmp), prefix)
                lib = ctypes.CDLL(str(path))
            path = f"a temporary build; no usable cache directory: {'; '.join(errors) or 'none'}"
        fns = {}
        for dtype, suffix, ctype in ((np.float32, "f32", ctypes.c_float), (np.float64, "f64", ctypes.c_double)):
            fn = getattr(lib, f"hhld_em_cubic_{suffix}")
            ptr, size = ctypes.c_void_p, ctypes.c_ssize_t
            fn.argtypes = [size, size, ptr, ptr, ptr, ctype, ptr, ptr, ptr]
            fn.restype = ctypes.c_int
            fns[dtype] = fn
        _c_self_test(fns)
    except Exception as exc:  # noqa: BLE001 - any failure means: use the numpy path
        C_KERNEL_STATUS = f"unavailable ({type(exc).__name__}: {exc})"
        return None
    C_KERNEL_STATUS = f"loaded ({' '.join(cc)}, {path})"
    return {"float32": fns[np.float32], "float64": fns[np.float64]}


def _c_kernel():
    k = _C_KERNEL[0]
    if k is None:
        k = _C_KERNEL[0] = _c_load() or False
    return k or None


_CUBIC_CACHE: dict = {}


def _cubic_coeffs(landscape):
    """``landscape._cubic_coeffs`` when the landscape has it and it is its own gradient
    (neither ``_grad`` nor ``_grad_into`` overridden below the class defining it)."""
    cls = type(landscape)
    if cls not in _CUBIC_CACHE:
        def owner(name):
            return next((k for k in cls.__mro__ if name in k.__dict__), None)

        oc, og, ogi = owner("_cubic_coeffs"), owner("_grad"), owner("_grad_into")
        _CUBIC_CACHE[cls] = (oc is not None and og is not None and ogi is not None
                             and issubclass(oc, og) and issubclass(oc, ogi))
    return landscape._cubic_coeffs if _CUBIC_CACHE[cls] else None


def _em_c(new, theta, grad, gnew, drift, landscape):
    """The fused kernel on contiguous CPU float32/float64 tensors (``new`` holds the
    scaled noise); False when it does not apply."""
    coeffs = _cubic_coeffs(landscape)
    if (coeffs is None or grad.shape != new.shape or not (theta.is_contiguous() and grad.is_contiguous())
            or theta.is_neg() or grad.is_neg()):  # the kernel reads raw memory: exact layouts only
        return False
    n, d = new.shape
    if n * d < _C_KERNEL_MIN_ELEMENTS:
        return False
    kernel = _c_kernel()
    if kernel is None:
        return False
    dtype = str(new.dtype)[6:]  # "torch.float32" -> "float32"
    a, b = coeffs(dtype)
    finite = kernel[dtype](n, d, new.data_ptr(), theta.data_ptr(), grad.data_ptr(), drift, gnew.data_ptr(),
                           a.ctypes.data, b.ctypes.data)
    _FINITE_THETA[0] = weakref.ref(new) if finite else None
    return True


_FINITE_THETA: list = [None]  # weak reference to the last kernel output known to be all finite


def known_finite(theta) -> bool:
    """True when ``theta`` is the positions tensor just written by the fused kernel and
    the kernel found every entry finite (the driver's non-finite check then needs no
    extra pass). False means "not known", never "non-finite"."""
    ref = _FINITE_THETA[0]
    return ref is not None and ref() is theta


def _em_torch(rng, theta, grad, landscape, drift, sigma):
    """``theta + drift * grad + sigma * xi`` in a fresh tensor, and its gradient."""
    import torch

    if not isinstance(rng, torch.Generator):
        raise TypeError(
            "torch arrays need a torch.Generator as rng (got "
            f"{type(rng).__name__}); use hhld.torch_generator(seed, device)"
        )
    new = torch.empty_like(theta) if theta.is_contiguous() else torch.empty(
        theta.shape, dtype=theta.dtype, device=theta.device)
    # the whole ensemble's noise in one call (the generator is serial; it never wakes the
    # intra-op thread pool): the same numbers as ``sigma * torch.randn(theta.shape)``
    new.normal_(0.0, sigma, generator=rng)
    grad_into = _fused_grad(landscape)
    gnew = torch.empty_like(new) if grad_into is not None else None
    if (new.is_cpu and str(new.dtype) in _NUMPY_VIEWABLE and grad.dtype == new.dtype
            and grad.device == new.device and not grad.requires_grad and not theta.requires_grad):
        # CPU: the element-wise work on zero-copy numpy views of the tensors, in cache-sized
        # chunks -- serial, no intra-op thread pool wake-ups (on a small shared machine
        # they cost more than they gain), about 1/3 of torch's per-call overhead
        if gnew is None or not _em_c(new, theta, grad, gnew, drift, landscape):
            _em_update_numpy(new.numpy(), theta.numpy(), grad.numpy(), None if gnew is None else gnew.numpy(),
                             drift, None, grad_into)
    else:  # accelerators (one pass per operation) and dtypes numpy cannot view
        new.add_(grad, alpha=drift).add_(theta)
        if gnew is not None:
            grad_into(new, gnew)
    return new, (gnew if gnew is not None else landscape.grad(new))


def _em_numpy(rng, theta, grad, landscape, drift, sigma):
    import numpy as np

    new = standard_normal(rng, tuple(theta.shape), theta)  # fresh buffer, updated in place
    grad_into = _fused_grad(landscape)
    gnew = np.empty_like(new) if grad_into is not None else None
    _em_update_numpy(new, theta, grad, gnew, drift, sigma, grad_into)
    return new, (gnew if gnew is not None else landscape.grad(new))


def euler_maruyama(rng, state: OverdampedState, landscape, *, dt: float, D: float, mu: float = 1.0) -> OverdampedState:
    """One Euler-Maruyama step ``theta += -mu grad L dt + sqrt(2 D dt) xi`` for all particles.

    The state given is never modified: the new positions and gradient are fresh arrays.
    The noise is one draw of shape ``(N, d)`` from ``rng`` (the same numbers as
    ``rng.standard_normal((N, d))`` / ``torch.randn((N, d), generator=rng)``); on CPU the
    update and the new gradient then run in cache-sized row chunks, or, for CPU tensors on
    the built-in double wells, in one fused compiled loop when a C compiler is available
    (bit for bit the same numbers; ``HHLD_C_KERNEL=0`` turns it off).
    """
    dt, D, mu = _params(dt, D, mu)
    theta, grad = state.theta, state.grad
    sigma = math.sqrt(2.0 * D * dt)
    em = _em_torch if is_torch(theta) else _em_numpy
    new, gnew = em(rng, theta, grad, landscape, -mu * dt, sigma)
    return OverdampedState(new, gnew, state.step + 1, state.time + dt, None)


def leimkuhler_matthews(rng, state: OverdampedState, landscape, *, dt: float, D: float,
                        mu: float = 1.0) -> OverdampedState:
    """One Leimkuhler-Matthews step ``theta += -mu grad L dt + sqrt(2 D dt)(xi_n + xi_{n+1})/2``.

    ``xi_{n+1}`` is carried in the state for the next step (non-Markovian in theta alone).
    """
    dt, D, mu = _params(dt, D, mu)
    theta, grad = state.theta, state.grad
    shape = tuple(theta.shape)
    prev = state.noise if state.noise is not None else standard_normal(rng, shape, theta)
    nxt = standard_normal(rng, shape, theta)
    half_sigma = 0.5 * math.sqrt(2.0 * D * dt)
    if is_torch(theta):
        new = (prev + nxt).mul_(half_sigma).add_(grad, alpha=-mu * dt).add_(theta)
    else:
        new = prev + nxt
        new *= half_sigma
        new -= (mu * dt) * grad
        new += theta
    return OverdampedState(new, landscape.grad(new), state.step + 1, state.time + dt, nxt)


# ----------------------------------------------------------------- underdamped
def _total_force(landscape, theta, extra_force):
    f = -landscape.grad(theta)
    if extra_force is not None:
        f = f + extra_force(theta)
    return f


def init_underdamped(landscape, theta0, momentum0=None, *, rng=None, eta: float = 1.0, D: float = 0.0,
                     mu: float = 1.0, extra_force: Callable | None = None) -> UnderdampedState:
    """Initial underdamped state. Momenta default to zero, or to the Maxwell distribution
    ``N(0, eta * D/mu)`` when ``rng`` is given."""
    theta = _as_theta(theta0)
    _check_theta(theta, landscape)
    theta = theta.clone() if is_torch(theta) else theta.copy()
    eta = check_positive("eta", eta)
    if momentum0 is not None:
        mom = momentum0.clone() if is_torch(momentum0) else _as_theta(momentum0).copy()
        if tuple(mom.shape) != tuple(theta.shape):
            raise ValueError(f"momentum0 must have shape {tuple(theta.shape)}, got {tuple(mom.shape)}")
    elif rng is not None:
        mom = standard_normal(rng, tuple(theta.shape), theta) * math.sqrt(eta * D / mu)
    else:
        mom = theta * 0
    return UnderdampedState(theta, mom, _total_force(landscape, theta, extra_force), 0, 0.0)


def baoab(rng, state: UnderdampedState, landscape, *, dt: float, D: float, mu: float = 1.0, eta: float = 1.0,
          friction: float = 1.0, extra_force: Callable | None = None) -> UnderdampedState:
    """One BAOAB step for the underdamped Hamiltonian dynamics (mass ``eta``, friction
    rate ``friction``, temperature ``D/mu``); ``extra_force(theta) -> (N, d)`` adds e.g. the
    entropy coupling ``-lam S grad_theta S``.

    B: ``pi += dt/2 F``; A: ``theta += dt/2 pi/eta``; O: ``pi = c pi + sqrt((1-c^2) eta T) xi``
    with ``c = exp(-friction dt)``; A; B.
    """
    dt, D, mu = _params(dt, D, mu)
    eta = check_positive("eta", eta)
    friction = check_nonnegative("friction", friction)
    T = D / mu
    c = math.exp(-friction * dt)
    s = math.sqrt(max(0.0, (1.0 - c * c) * eta * T))
    theta, mom, force = state.theta, state.momentum, state.force
    half = 0.5 * dt
    mom = mom + half * force                      # B
    theta = theta + (half / eta) * mom            # A
    xi = standard_normal(rng, tuple(theta.shape), theta)
    mom = c * mom + s * xi                        # O
    theta = theta + (half / eta) * mom            # A
    force = _total_force(landscape, theta, extra_force)
    mom = mom + half * force                      # B
    return UnderdampedState(theta, mom, force, state.step + 1, state.time + dt)


# ----------------------------------------------------------------- the table
@dataclass(frozen=True)
class IntegratorInfo:
    """One row of the integrator table (drives the common tests).

    ``strong_order`` / ``weak_order``: declared orders on finite time (None: not
    claimed); ``stationary_order``: order of the bias of stationary averages in ``dt``.
    """

    name: str
    step: Callable
    init: Callable
    kind: str  # "overdamped" | "underdamped"
    strong_order: float | None
    weak_order: float | None
    stationary_order: float
    noise: str = "additive (Ito = Stratonovich)"


INTEGRATORS: dict[str, IntegratorInfo] = {
    "euler_maruyama": IntegratorInfo("euler_maruyama", euler_maruyama, init_overdamped, "overdamped", 1.0, 1.0, 1.0),
    "leimkuhler_matthews": IntegratorInfo(
        "leimkuhler_matthews", leimkuhler_matthews, init_overdamped, "overdamped", None, 1.0, 2.0
    ),
    "baoab": IntegratorInfo("baoab", baoab, init_underdamped, "underdamped", None, 2.0, 2.0),
}


def get_integrator(name: str) -> IntegratorInfo:
    key = name.replace("-", "_").lower()
    aliases = {"em": "euler_maruyama", "lm": "leimkuhler_matthews"}
    key = aliases.get(key, key)
    if key not in INTEGRATORS:
        raise ValueError(f"unknown integrator {name!r}; choose one of {sorted(INTEGRATORS)}")
    return INTEGRATORS[key]
