"""The reference integrators for Langevin ensembles: ``step(rng, state, landscape, **params) -> (state, info)``.

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

This module is the mathematics only. States are immutable ``NamedTuple`` records carrying the
gradient of the loss at the current positions (computed once per step, reused by the next step
and by the observers); steps never modify their input. numpy arrays need a
``numpy.random.Generator``, torch tensors a ``torch.Generator``; dtype and device are kept.
Every random number is one draw of shape ``(N, d)`` (``rng.standard_normal`` /
``torch.randn``), scaled afterwards. Faster versions of these steps for large CPU ensembles live
in :mod:`hhld.dynamics.kernels`; they give these functions' numbers (tested against them).

The ``info`` a step returns is a :class:`StepInfo`: ``finite`` is True when the step checked
that every new position is finite, None when it did not check (the reference steps never do;
the driver then checks).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple

from .._backend import is_torch, standard_normal
from .._validation import check_nonnegative, check_positive

__all__ = [
    "OverdampedState",
    "UnderdampedState",
    "StepInfo",
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
    """Ensemble state of underdamped Langevin: positions, momenta ``pi``, the loss gradient
    ``grad`` = grad L(theta), step count, time, and the external force ``extra_force`` =
    F_ext(theta) (None without one). The total force is ``-grad + extra_force``."""

    theta: Array
    momentum: Array
    grad: Array
    step: int = 0
    time: float = 0.0
    extra_force: Array | None = None


class StepInfo(NamedTuple):
    """What a step reports besides the state: ``finite`` is True when the step checked that
    every new position is finite (a fused kernel does it in the same pass), None when it did
    not check; never False for a finite state."""

    finite: bool | None = None


UNCHECKED = StepInfo(None)


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


def _copy_theta(landscape, theta0):
    theta = _as_theta(theta0)
    _check_theta(theta, landscape)
    return theta.clone() if is_torch(theta) else theta.copy()


def check_step_params(dt, D, mu):
    """``(dt, D, mu)`` checked: ``dt > 0``, ``D >= 0``, ``mu > 0`` (finite)."""
    return check_positive("dt", dt), check_nonnegative("D", D), check_positive("mu", mu)


# ------------------------------------------------------------------ overdamped
def init_overdamped(landscape, theta0, *, rng=None, **_params) -> OverdampedState:
    """Initial overdamped state: positions copied, gradient evaluated once. (The
    Leimkuhler-Matthews scheme's first noise ``xi_0`` is drawn at its first step.)"""
    theta = _copy_theta(landscape, theta0)
    return OverdampedState(theta=theta, grad=landscape.grad(theta), step=0, time=0.0, noise=None)


def euler_maruyama(rng, state: OverdampedState, landscape, *, dt: float, D: float, mu: float = 1.0):
    """One Euler-Maruyama step for all particles::

        theta' = (sqrt(2 D dt) xi + (-mu dt) grad L(theta)) + theta,    xi ~ N(0, 1)^(N, d)

    Returns ``(state', StepInfo)``; the state given is not modified.
    """
    dt, D, mu = check_step_params(dt, D, mu)
    theta = state.theta
    xi = standard_normal(rng, tuple(theta.shape), theta)
    new = (xi * math.sqrt(2.0 * D * dt) + state.grad * (-mu * dt)) + theta
    return OverdampedState(new, landscape.grad(new), state.step + 1, state.time + dt, None), UNCHECKED


def leimkuhler_matthews(rng, state: OverdampedState, landscape, *, dt: float, D: float, mu: float = 1.0):
    """One Leimkuhler-Matthews step::

        theta' = ((xi_n + xi_{n+1}) sqrt(2 D dt)/2 + (-mu dt) grad L(theta)) + theta

    ``xi_{n+1}`` is carried in the state for the next step (``xi_0`` is drawn first when the
    state carries none). Returns ``(state', StepInfo)``.
    """
    dt, D, mu = check_step_params(dt, D, mu)
    theta = state.theta
    shape = tuple(theta.shape)
    prev = state.noise if state.noise is not None else standard_normal(rng, shape, theta)
    nxt = standard_normal(rng, shape, theta)
    new = ((prev + nxt) * (0.5 * math.sqrt(2.0 * D * dt)) + state.grad * (-mu * dt)) + theta
    return OverdampedState(new, landscape.grad(new), state.step + 1, state.time + dt, nxt), UNCHECKED


def overdamped_at(state: OverdampedState, theta, landscape, **_params) -> OverdampedState:
    """``state`` moved to positions ``theta`` (e.g. by a tunneling kick): gradient recomputed."""
    return state._replace(theta=theta, grad=landscape.grad(theta))


# ----------------------------------------------------------------- underdamped
def _extra(extra_force, theta):
    return None if extra_force is None else extra_force(theta)


def init_underdamped(landscape, theta0, momentum0=None, *, rng=None, eta: float = 1.0, D: float = 0.0,
                     mu: float = 1.0, extra_force: Callable | None = None, **_params) -> UnderdampedState:
    """Initial underdamped state. Momenta default to zero, or to the Maxwell distribution
    ``N(0, eta * D/mu)`` when ``rng`` is given."""
    theta = _copy_theta(landscape, theta0)
    eta = check_positive("eta", eta)
    if momentum0 is not None:
        mom = momentum0.clone() if is_torch(momentum0) else _as_theta(momentum0).copy()
        if tuple(mom.shape) != tuple(theta.shape):
            raise ValueError(f"momentum0 must have shape {tuple(theta.shape)}, got {tuple(mom.shape)}")
    elif rng is not None:
        mom = standard_normal(rng, tuple(theta.shape), theta) * math.sqrt(eta * D / mu)
    else:
        mom = theta * 0
    return UnderdampedState(theta, mom, landscape.grad(theta), 0, 0.0, _extra(extra_force, theta))


def baoab_coefficients(dt: float, D: float, mu: float, eta: float, friction: float):
    """``(half, drift, c, s)`` of one BAOAB step: ``half = dt/2``, ``drift = half/eta``,
    ``c = exp(-friction dt)``, ``s = sqrt((1 - c^2) eta T)`` with ``T = D/mu``."""
    c = math.exp(-friction * dt)
    return 0.5 * dt, 0.5 * dt / eta, c, math.sqrt(max(0.0, (1.0 - c * c) * eta * D / mu))


def baoab(rng, state: UnderdampedState, landscape, *, dt: float, D: float, mu: float = 1.0, eta: float = 1.0,
          friction: float = 1.0, extra_force: Callable | None = None):
    """One BAOAB step for the underdamped Hamiltonian dynamics (mass ``eta``, friction
    rate ``friction``, temperature ``D/mu``); ``extra_force(theta) -> (N, d)`` adds e.g. the
    entropy coupling ``-lam S grad_theta S``. With ``F = -grad L + F_ext``::

        B: pi += dt/2 F          A: theta += (dt/2) pi/eta
        O: pi = c pi + s xi      (c = exp(-friction dt), s = sqrt((1 - c^2) eta T))
        A: theta += (dt/2) pi/eta                B: pi += dt/2 F(theta')

    (``pi - (dt/2) grad L`` is written as such, and ``F_ext`` added after). Returns
    ``(state', StepInfo)``.
    """
    dt, D, mu = check_step_params(dt, D, mu)
    eta = check_positive("eta", eta)
    friction = check_nonnegative("friction", friction)
    half, drift, c, s = baoab_coefficients(dt, D, mu, eta, friction)
    theta = state.theta
    mom = state.momentum - state.grad * half                  # B
    if state.extra_force is not None:
        mom = mom + state.extra_force * half
    theta = theta + mom * drift                               # A
    xi = standard_normal(rng, tuple(theta.shape), theta)
    mom = mom * c + xi * s                                    # O
    theta = theta + mom * drift                               # A
    grad = landscape.grad(theta)
    extra = _extra(extra_force, theta)
    mom = mom - grad * half                                   # B
    if extra is not None:
        mom = mom + extra * half
    return UnderdampedState(theta, mom, grad, state.step + 1, state.time + dt, extra), UNCHECKED


def underdamped_at(state: UnderdampedState, theta, landscape, *, extra_force=None, **_params) -> UnderdampedState:
    """``state`` moved to positions ``theta``: gradient and external force recomputed."""
    return state._replace(theta=theta, grad=landscape.grad(theta), extra_force=_extra(extra_force, theta))


# ----------------------------------------------------------------- the table
@dataclass(frozen=True)
class IntegratorInfo:
    """One row of the integrator table: what the driver, the observers, the kernels and the
    common tests know about a scheme (they read these declarations, never the name).

    Attributes
    ----------
    name : str
    step : callable
        ``step(rng, state, landscape, **params) -> (state, StepInfo)``, the reference step.
    init : callable
        ``init(landscape, theta0, *, rng=None, **params) -> state``.
    state_type : type
        The ``NamedTuple`` state the scheme advances (both carry ``theta`` and ``grad``).
    params : tuple of str
        The keyword parameters ``step`` takes besides ``dt``, ``D``, ``mu`` (e.g. ``eta``).
    strong_order, weak_order : float or None
        Declared orders on finite time (None: not claimed).
    stationary_order : float
        Order in ``dt`` of the bias of stationary averages.
    at_positions : callable
        ``at_positions(state, theta, landscape, **params) -> state``: the state moved to new
        positions (a tunneling kick), derived fields recomputed.
    noise : str
    """

    name: str
    step: Callable
    init: Callable
    state_type: type
    params: tuple = ()
    strong_order: float | None = None
    weak_order: float | None = None
    stationary_order: float = 1.0
    at_positions: Callable = field(default=overdamped_at)
    noise: str = "additive (Ito = Stratonovich)"

    @property
    def accepts_extra_force(self) -> bool:
        """True when the scheme takes an external force (the entropy coupling)."""
        return "extra_force" in self.params

    @property
    def kind(self) -> str:
        """``"overdamped"`` or ``"underdamped"`` (from :attr:`state_type`)."""
        return "underdamped" if self.state_type is UnderdampedState else "overdamped"


INTEGRATORS: dict[str, IntegratorInfo] = {
    "euler_maruyama": IntegratorInfo("euler_maruyama", euler_maruyama, init_overdamped, OverdampedState, (),
                                     strong_order=1.0, weak_order=1.0, stationary_order=1.0),
    "leimkuhler_matthews": IntegratorInfo("leimkuhler_matthews", leimkuhler_matthews, init_overdamped,
                                          OverdampedState, (), strong_order=None, weak_order=1.0,
                                          stationary_order=2.0),
    "baoab": IntegratorInfo("baoab", baoab, init_underdamped, UnderdampedState, ("eta", "friction", "extra_force"),
                            strong_order=None, weak_order=2.0, stationary_order=2.0, at_positions=underdamped_at),
}

_ALIASES = {"em": "euler_maruyama", "lm": "leimkuhler_matthews"}


def get_integrator(name: str) -> IntegratorInfo:
    """The integrator table's row for ``name``.

    Parameters
    ----------
    name : str
        ``"euler_maruyama"`` (alias ``"em"``), ``"leimkuhler_matthews"`` (``"lm"``) or
        ``"baoab"``; case and ``-``/``_`` do not matter.

    Returns
    -------
    IntegratorInfo
        The scheme's reference step, initialiser, state type, parameters and declared orders.

    Raises
    ------
    ValueError
        For an unknown name (the message lists the known ones).

    Notes
    -----
    To add a scheme, write its pure ``step`` and ``init`` here and add a row to
    :data:`INTEGRATORS`; the driver, the observers and the order tests use the row's
    declarations. A fused kernel for it (optional) goes in :mod:`hhld.dynamics.kernels`.
    """
    if not isinstance(name, str):
        raise TypeError(f"integrator must be a name (str), got {name!r}; choose one of {sorted(INTEGRATORS)}")
    key = name.replace("-", "_").lower()
    key = _ALIASES.get(key, key)
    if key not in INTEGRATORS:
        raise ValueError(f"unknown integrator {name!r}; choose one of {sorted(INTEGRATORS)}")
    return INTEGRATORS[key]
