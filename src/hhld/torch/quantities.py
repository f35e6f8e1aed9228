"""The quantities the :class:`~hhld.torch.monitor.Monitor` computes, one object each.

A quantity has a schedule (``every`` steps), declares what it needs (:attr:`Quantity.needs`,
a subset of :data:`NEEDS`; the monitor enables the union of what the due quantities need) and
has three methods, all called by the monitor:

* ``pre_step(ctx)`` -- inside ``optimizer.step`` before the update (the gradients are final:
  unscaled under AMP, clipped if the loop clips); ``ctx`` is a :class:`StepContext`. Returns a
  dict of *additive* values: 0-d tensors (kept on the device; the monitor converts an interval's
  values with one host synchronisation) or host floats;
* ``post_step(ctx)`` -- after the update (same convention);
* ``finalize(ictx)`` -- once per logging interval, on host floats (:class:`IntervalContext`):
  turns the interval's sums into the row's values. Ratios are formed from separately averaged
  numerators and denominators (never an average of per-step ratios); the per-step values are in
  ``ictx.values`` for quantities that need per-step nonlinear combinations.

A new quantity is one class plus one entry in :data:`QUANTITY_TABLE` (which drives the contract
tests). No quantity reads the monitor's private state: everything it may use is in the two
contexts.

Tier 0 (every step): :class:`GradientStats`, :class:`UncertaintyWindow`; tier 1:
:class:`NoiseScale`; tier 2 (amortised): :class:`Curvature`. Regimes and phase-transition events
work on the finished rows (:class:`RegimeTracker`, :class:`PhaseTransitionDetector`).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import torch
from torch import nn

from ..observables import RegimeThresholds, classify_regime, consolidation_ratio, consolidation_ratio_sgd
from .hessian import hutchinson_trace, make_hvp, top_eigenvalue
from .noise import diffusion_from_noise, noise_from_moments

__all__ = ["NEEDS", "StepContext", "PerSampleStats", "ClipInfo", "IntervalContext", "Quantity", "GradientStats",
           "UncertaintyWindow", "NoiseScale", "Curvature", "ProbeNoise", "RegimeTracker", "PhaseTransitionDetector",
           "QUANTITY_TABLE", "robust_norms", "robust_norm_values", "robust_norm_pair"]

#: what a quantity can ask the monitor for
NEEDS = frozenset({
    "grad_norms",     # per-parameter norms of the applied gradient (always computed: tier 0 needs them)
    "per_sample",     # per-sample squared gradient norms of the step (the per-sample engine runs)
    "params",         # the parameter tensors themselves
    "model",          # the model, for extra forward/backward passes (tier 2)
    "l2_decay",       # the optimizer's L2 weight decay per parameter name (StepContext.l2_decay; known at no cost)
})


@dataclass(frozen=True)
class PerSampleStats:
    """The step's per-sample statistics over the covered parameters, for the gradient ``step()`` applies
    (true per-sample scale: loss reduction, accumulation, loss scaling and clipping undone / applied).

    ``mean_sq``: ``mean_i ||g_i||^2`` over the step's ``n_samples`` local samples; ``gbar_sq``:
    ``||gbar||^2`` of the applied batch-mean gradient restricted to the covered parameters;
    ``batch_size``: the samples behind ``gbar`` (all workers under DDP); ``covered_dim``: their dimension.
    """

    mean_sq: torch.Tensor | float
    gbar_sq: torch.Tensor | float
    batch_size: int
    n_samples: int
    covered_dim: int
    covered: frozenset


@dataclass(frozen=True)
class ClipInfo:
    """How the gradient ``step()`` applies relates to the one backward produced (tier-1 steps).

    ``coef``: ``||g_applied|| / ||g_backward||`` (1.0 when untouched); ``uniform``: the same factor for
    every parameter (``clip_grad_norm_``); else the gradients were changed non-uniformly
    (``clip_grad_value_``, per-parameter clipping). ``scales``: when each parameter's gradient was only
    rescaled (per-group or per-parameter clipping: its L1 and L2 norms changed by the same factor), the factor
    of each parameter of the step (in the order of its names); the per-sample gradients of the applied
    gradient are then the backward ones rescaled alike. ``None`` with ``uniform`` False: not a rescaling
    (``clip_grad_value_``), and per-sample statistics of the applied gradient are not defined for this step."""

    coef: float
    uniform: bool
    scales: tuple | None = None


@dataclass(frozen=True)
class StepContext:
    """What a quantity may read at one optimizer step (typed; see :data:`NEEDS`)."""

    step: int
    names: tuple
    params: tuple
    grads: tuple                 # the applied gradients (None entries removed; with ``l2_decay``, p.grad + a p)
    lr: float
    batch_size: int              # samples behind the applied gradient (all micro-batches, all workers)
    n_micro: int
    dim: int                     # dimension of all monitored parameters
    grad_norms: torch.Tensor     # per-parameter norms of ``grads``, float64, robust to tiny / huge values
    grad_sq: torch.Tensor | float  # ||g||^2: a float64 0-d tensor, or a host float on CPU
    model: nn.Module | None = None
    per_sample: PerSampleStats | None = None
    per_sample_note: str | None = None
    clip: ClipInfo | None = None
    #: an L2 weight decay the optimizer adds to the gradients (``{name: a}``: ``grads`` are ``p.grad + a p``), or None
    l2_decay: dict | None = None


@dataclass
class IntervalContext:
    """What a quantity may read when the logging interval ends (host floats)."""

    step: int
    sums: dict
    counts: dict
    values: dict                 # key -> the interval's per-step values
    dim: int
    D_given: float | None        # the monitor's D= (known diffusion), else None
    D_measured: float | None = None          # this interval's measured SGD diffusion (tier 1)
    D_last: float | None = None              # the last measured one (any interval)
    D_last_rel_se: float | None = None       # its relative standard error over the interval's steps
    optimizer_kind: str = "sgd"
    extra: dict = field(default_factory=dict)

    @property
    def D(self) -> float | None:
        """``D`` for ``C = ||g||^2/(D d)``: the given one, else this interval's measured one."""
        return self.D_given if self.D_given is not None else self.D_measured


class Quantity:
    """Base class: a schedule, declared needs, and the three hooks (all optional)."""

    name = "quantity"
    tier = 0
    needs: frozenset = frozenset({"grad_norms"})
    #: also run on every step another quantity makes the monitor measure (its ``pre_step``/``post_step``; ``due``
    #: alone decides which steps it makes the monitor measure)
    every_measured_step: bool = False

    def __init__(self, every: int = 1):
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"{type(self).__name__}: every must be an integer >= 1, got {every!r}")
        self.every = every

    def due(self, step: int) -> bool:
        return step % self.every == 0

    def pre_step(self, ctx: StepContext) -> dict:
        return {}

    def post_step(self, ctx: StepContext) -> dict:
        return {}

    def finalize(self, ictx: IntervalContext) -> dict:
        return {}

    def state_dict(self) -> dict:
        """What the quantity carries from one step to the next, as plain values and tensors
        (:meth:`hhld.torch.Monitor.state_dict`); ``{}`` for one that carries nothing (the default: a
        quantity with state of its own overrides this and :meth:`load_state_dict`)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned."""
        if state:
            raise ValueError(f"{type(self).__name__} carries no state, but was given {sorted(state)}: override "
                             "state_dict() and load_state_dict() together")


def robust_norms(ts) -> torch.Tensor:
    """Per-tensor 2-norms as one float64 ``(P,)`` tensor, exact for tiny and huge values.

    One fused ``_foreach_norm`` in the tensors' dtype (float32 for half types); on CPU the result is
    checked at once (no cost: no device) and the tensors whose norm under- or overflowed (outside
    ``[1e-18, 1e18]``) are redone in float64; on other devices the fused norm accumulates in float64.
    Sparse tensors use their values."""
    dense = [t.coalesce().values() if t.is_sparse else t for t in ts]
    if not dense:
        return torch.zeros(0, dtype=torch.float64)
    dev = dense[0].device
    if dev.type != "cpu":
        return torch.stack(torch._foreach_norm(dense, 2, dtype=torch.float64))
    return robust_norm_pair(dense)[1]


def robust_norm_values(ts) -> list:
    """:func:`robust_norms` of CPU tensors as host floats (what it computes on CPU, before the tensor)."""
    return robust_norm_pair(ts)[0]


def robust_norm_pair(ts) -> tuple[list, torch.Tensor]:
    """:func:`robust_norms` of CPU tensors both as host floats and as the float64 tensor, from one
    fused pass (the tensor is the fused result widened, not rebuilt from the floats)."""
    dense = [t.coalesce().values() if t.is_sparse else t for t in ts]
    if not dense:
        return [], torch.zeros(0, dtype=torch.float64)
    if any(t.dtype in (torch.float16, torch.bfloat16) for t in dense):
        dense = [t.float() if t.dtype in (torch.float16, torch.bfloat16) else t for t in dense]
    fused = torch.stack(torch._foreach_norm(dense))
    vals = fused.tolist()
    if all(1e-18 < v < 1e18 for v in vals):
        return vals, fused.to(torch.float64)
    vals = [v if 1e-18 < v < 1e18 else float(torch.linalg.vector_norm(t.double())) for v, t in zip(vals, dense)]
    return vals, torch.tensor(vals, dtype=torch.float64)


# --------------------------------------------------------------------------- tier 0
class GradientStats(Quantity):
    """Tier 0: ``||g||^2``, the documents' ``C = ||g||^2/(lr/B)`` (``C_sgd``,
    :func:`hhld.observables.consolidation_ratio_sgd`) and ``C = ||g||^2/(D d)``
    (:func:`hhld.observables.consolidation_ratio`), update and parameter norms.

    Per step: the per-parameter norms are computed once by the monitor (``ctx.grad_norms``);
    ``lr/B`` stays a host float. ``param_norm`` and ``update_norm`` are *sampled* at the last step
    of each logging interval (``sample_every`` steps), so the parameter snapshot an update norm
    needs costs one copy per interval. ``D`` for the second form is the monitor's ``D=``, else the
    interval's measured ``D`` (:class:`NoiseScale`); ``None`` when neither is available.
    """

    name = "gradient"
    needs = frozenset({"grad_norms", "params"})
    every_measured_step = True  # ||g||^2 of any step the monitor measures is free: the row's mean takes it

    def __init__(self, every: int = 1, track_update: bool = True, sample_every: int = 1):
        super().__init__(every)
        self.track_update = track_update
        self.sample_every = max(1, int(sample_every))
        self._snap = None
        self._snapped = False

    def _sampled(self, step):
        return (step + 1) % self.sample_every == 0

    def due(self, step: int) -> bool:
        # every ``every``-th step (the monitor's ``tier0_every``), and each interval's last step (the norms); it
        # also takes every step another quantity measures (``every_measured_step``)
        return step % self.every == 0 or (self.track_update and self._sampled(step))

    def pre_step(self, ctx):
        out = {"grad_sq": ctx.grad_sq, "lr_over_B": ctx.lr / ctx.batch_size, "step_lr": ctx.lr}
        self._snapped = False
        if self.track_update and self._sampled(ctx.step):
            ps = [p.detach() for p in ctx.params]
            if self._snap is None or len(self._snap) != len(ps) or any(
                    a.shape != b.shape or a.dtype != b.dtype for a, b in zip(self._snap, ps)):
                self._snap = [p.clone() for p in ps]
            else:
                torch._foreach_copy_(self._snap, ps)
            self._snapped = True
        return out

    def post_step(self, ctx):
        if not self._sampled(ctx.step):
            return {}
        ps = [p.detach() for p in ctx.params]
        pn = robust_norms(ps)
        out = {"param_sq": torch.dot(pn, pn)}
        if self._snapped:
            torch._foreach_sub_(self._snap, ps)
            un = robust_norms(self._snap)
            out["update_sq"] = torch.dot(un, un)
            self._snapped = False
        return out

    def finalize(self, ictx):
        n = ictx.counts.get("grad_sq", 0)
        row = {}
        if n:
            g = ictx.sums["grad_sq"] / n
            row["grad_sq_norm"] = g
            row["grad_sq_steps"] = n  # the measured steps the interval's means are over
            hb = ictx.sums["lr_over_B"] / n
            # the interval's ratio of means: mean ||g||^2 / mean (lr/B), i.e. the documents' form with lr/B averaged
            if not math.isfinite(g):
                row["C_sgd"] = g  # a non-finite gradient: reported (and raised / warned about), never hidden
            else:
                row["C_sgd"] = float(consolidation_ratio_sgd(g, hb, 1)) if hb > 0 else None
            D = ictx.D
            row["D_used"] = D
            row["C"] = (float(consolidation_ratio(g, D, ictx.dim)) if math.isfinite(g) else g) if D else None
        if ictx.counts.get("param_sq", 0):
            row["param_norm"] = math.sqrt(ictx.sums["param_sq"] / ictx.counts["param_sq"])
        if ictx.counts.get("update_sq", 0):
            row["update_norm"] = math.sqrt(ictx.sums["update_sq"] / ictx.counts["update_sq"])
        return row


#: relative size of the rounding in ``mean_t |x_t|^2`` and ``|mean_t x_t|^2`` (float32 norms and sums): a
#: window variance below zero by less than this times ``mean_t |x_t|^2`` is zero within rounding
_VARIANCE_ROUNDING = 1e-5


def _window_variance(sq, mean_sq_norm, n: int):
    """``sum_j Var_t x_j = n/(n-1) (sq/n - |sum_t x_t|^2/n^2)`` as a host float from ``sq = sum_t |x_t|^2`` and
    ``|sum_t x_t|^2``; 0.0 when it is below zero by no more than rounding (:data:`_VARIANCE_ROUNDING` of
    ``sq/n``), None when by more (not a variance, -inf included: an overflowed float32 sum; the caller drops
    the window rather than clamp it)."""
    sq, msq = float(sq), float(mean_sq_norm)
    var = (sq / n - msq / (n * n)) * (n / (n - 1))
    if var >= 0 or math.isnan(var):  # a NaN (or +inf) goes on to the monitor's check, which names it
        return var
    return 0.0 if -var <= _VARIANCE_ROUNDING * (sq / n) else None


class UncertaintyWindow(Quantity):
    """Tier 0: the uncertainty product over a tumbling window of ``window`` steps.

    ``sqrt(sum_j Var_t theta_j) * sqrt(sum_j Var_t g_j)`` over the window (the convention of
    :func:`hhld.observables.uncertainty_product` with time in place of the ensemble), reported
    beside the documents' bound ``lr / 2`` (``Delta theta . Delta grad L >= eta/2``).

    The variances are sample variances over every ``every``-th step of the window
    (``window // every >= 2`` samples; ``every=1`` uses every step), from
    ``sum_j Var_t x_j = n/(n-1) (mean_t |x_t - r|^2 - |mean_t (x_t - r)|^2)``: the squared norms come from
    one fused norm per sample (for the gradients: tier 0's norms, at no cost) and one running vector sum each;
    parameters are taken relative to the window's first sample ``r`` (no cancellation in float32). Cost per
    sampled step: four fused passes over the parameters (difference, its norm, two running sums).
    """

    name = "uncertainty"
    needs = frozenset({"params", "grad_norms"})

    def __init__(self, window: int = 50, every: int = 5):
        super().__init__(every)
        if window < 2:
            raise ValueError(f"window must be >= 2, got {window}")
        if window // every < 2:
            raise ValueError(f"the uncertainty window needs at least 2 samples: window={window} steps sampled "
                             f"every {every} steps gives {window // every}")
        self.window = window
        self.samples = window // every
        self._warned = False
        self._sum_d = self._sum_g = self._ref = None
        self._n = 0
        self._sq_d = self._sq_g = 0.0

    def _restart(self):
        self._sum_d = self._sum_g = self._ref = None
        self._n = 0
        self._sq_d = self._sq_g = 0.0

    def state_dict(self) -> dict:
        """The open window: its samples so far, the reference and the running sums."""
        if not self._n:
            return {"n": 0, "warned": self._warned}
        return {"n": self._n, "warned": self._warned, "sq_d": float(self._sq_d), "sq_g": float(self._sq_g),
                "ref": [t.clone() for t in self._ref], "sum_d": [t.clone() for t in self._sum_d],
                "sum_g": [t.clone() for t in self._sum_g]}

    def load_state_dict(self, state: dict) -> None:
        self._restart()
        self._warned = bool(state.get("warned", False))
        n = int(state.get("n", 0))
        if n:
            self._ref, self._sum_d, self._sum_g = ([t.clone() for t in state[k]] for k in ("ref", "sum_d", "sum_g"))
            self._sq_d, self._sq_g, self._n = float(state["sq_d"]), float(state["sq_g"]), n

    def pre_step(self, ctx):
        ps = [p.detach() for p in ctx.params]
        gs = [g.to_dense() if g.is_sparse else g for g in ctx.grads]
        if self._ref is not None and (len(self._ref) != len(ps) or any(
                a.shape != p.shape for a, p in zip(self._ref, ps))):
            self._restart()  # the parameter set changed: restart the window
        if self._n == 0:
            self._ref = [p.clone() for p in ps]  # the first sample is the reference: zero deviation
            acc = [torch.float32 if p.dtype in (torch.float16, torch.bfloat16) else p.dtype for p in ps]
            self._sum_d = [torch.zeros_like(p, dtype=dt) for p, dt in zip(ps, acc)]
            self._sum_g = [g.to(dt).clone() for g, dt in zip(gs, acc)]
        else:
            d = torch._foreach_sub(ps, self._ref)
            nd = robust_norms(d)
            self._sq_d = self._sq_d + torch.dot(nd, nd)
            torch._foreach_add_(self._sum_d, d)
            torch._foreach_add_(self._sum_g, gs)
        self._sq_g = self._sq_g + ctx.grad_sq
        self._n += 1
        if self._n < self.samples:
            return {}
        n = self._n
        md = robust_norms(self._sum_d)
        mg = robust_norms(self._sum_g)
        var_t = _window_variance(self._sq_d, torch.dot(md, md), n)
        var_g = _window_variance(self._sq_g, torch.dot(mg, mg), n)
        self._restart()
        if var_t is None or var_g is None:
            if not self._warned:
                self._warned = True
                warnings.warn(f"the uncertainty window ending at step {ctx.step} gave a variance below zero by more "
                              "than rounding (sum_j Var_t theta_j or sum_j Var_t g_j): the window is left out of "
                              "its row (uncertainty_product None); this warning is shown once", RuntimeWarning,
                              stacklevel=2)
            return {}
        return {"uncertainty_product": math.sqrt(var_t) * math.sqrt(var_g), "uncertainty_bound": ctx.lr / 2}

    def finalize(self, ictx):
        n = ictx.counts.get("uncertainty_product", 0)
        if not n:
            return {}
        return {"uncertainty_product": ictx.sums["uncertainty_product"] / n,
                "uncertainty_bound": ictx.sums["uncertainty_bound"] / n}


# --------------------------------------------------------------------------- tier 1
class NoiseScale(Quantity):
    """Tier 1: ``tr Sigma``, unbiased ``||G||^2``, ``B_simple``, the SGD diffusion ``D`` and ``C``, over the
    parameters the per-sample engine covers (:mod:`hhld.torch.persample`).

    Per step: from ``mean_i ||g_i||^2`` and ``||gbar||^2`` of the covered parameters
    (:func:`hhld.torch.noise.noise_from_moments`): ``tr Sigma`` and ``||G||^2``; ``D = lr tr Sigma/(2 B d_cov)``
    (:func:`hhld.torch.noise.diffusion_from_noise`, per *covered* coordinate). The row averages the
    steps: ``B_simple = tr Sigma / ||G||^2`` and ``C_measured = ||G||^2/(D d_cov)`` of the averages
    (``None`` with ``noise_note`` when the ``||G||^2`` estimate is not positive: noise dominates).
    ``noise_coverage`` is the covered fraction of the dimension; the clip coefficient and the number of
    clipped steps say how the applied gradient relates to the backward one.
    """

    name = "noise"
    tier = 1
    needs = frozenset({"grad_norms", "per_sample"})

    def pre_step(self, ctx):
        ps = ctx.per_sample
        out = {"ns_steps": 1.0}
        if ctx.clip is not None:
            out["ns_clip_checked"] = 1.0
            out["ns_clip_coef"] = ctx.clip.coef
            out["ns_clipped"] = 1.0 if (ctx.clip.coef < 1 - 1e-6 or not ctx.clip.uniform) else 0.0
        if ps is None or ps.batch_size < 2:
            out["ns_missing"] = 1.0
            return out
        out.update({"ns_mean_sq": ps.mean_sq, "ns_gbar_sq": ps.gbar_sq, "ns_B": float(ps.batch_size),
                    "ns_lr": ctx.lr, "ns_dims": float(ps.covered_dim)})
        return out

    @staticmethod
    def per_step(values: dict):
        """Host-side ``(tr Sigma, ||G||^2 unbiased, D)`` of each measured step."""
        out = []
        for m, g, B, lr, d in zip(values["ns_mean_sq"], values["ns_gbar_sq"], values["ns_B"], values["ns_lr"],
                                  values["ns_dims"]):
            tr, gu = noise_from_moments(m, g, B)
            out.append((tr, gu, diffusion_from_noise(tr, lr, B, d) if d > 0 else float("nan")))
        return out

    def finalize(self, ictx):
        vals, sums, counts = ictx.values, ictx.sums, ictx.counts
        row = {}
        if counts.get("ns_clip_checked"):
            row["clip_coef"] = sums["ns_clip_coef"] / counts["ns_clip_checked"]
            row["clipped_steps"] = int(sums.get("ns_clipped", 0))
        if not counts.get("ns_mean_sq", 0):
            if counts.get("ns_steps"):
                row.update({"tr_sigma": None, "noise_coverage": 0.0,
                            "noise_note": ictx.extra.get("per_sample_note") or
                            "no per-sample measurement this interval (see Monitor.uncovered_parameters())"})
            return row
        steps = self.per_step(vals)
        n = len(steps)
        tr = sum(s[0] for s in steps) / n
        gu = sum(s[1] for s in steps) / n
        D = sum(s[2] for s in steps) / n
        dcov = sums["ns_dims"] / n
        if n > 1 and D > 0:
            var = sum((s[2] - D) ** 2 for s in steps) / (n - 1)
            ictx.extra["D_rel_se"] = math.sqrt(var / n) / D
        row.update({
            "tr_sigma": tr,
            "grad_sq_norm_unbiased": gu,
            "D": D,
            "noise_coverage": dcov / ictx.dim,
            "noise_steps": n,
        })
        if gu > 0:  # B_simple does not depend on lr: defined at lr = 0 too (a warm-up's first steps)
            row["b_simple"] = tr / gu
            if D > 0:
                row["C_measured"] = gu / (D * dcov)
            else:
                row["C_measured"] = None
                row["noise_note"] = "D = 0 this interval (lr = 0): C_measured = ||G||^2/(D d) is undefined"
        else:
            row["b_simple"] = None
            row["C_measured"] = None
            row["noise_note"] = (f"the unbiased ||G||^2 estimate is {gu:.3g} <= 0 this interval: gradient noise "
                                 "dominates, B_simple and C_measured are undefined (log over more steps)")
        if counts.get("ns_missing"):
            row["noise_note"] = (row.get("noise_note", "") + f" {int(sums['ns_missing'])} of "
                                 f"{int(sums['ns_steps'])} tier-1 steps had no per-sample measurement").strip()
        return row


# --------------------------------------------------------------------------- tier 2
def _with_l2_decay(hvp, params, ctx):
    """``hvp`` of the objective whose gradient the optimizer applies when it adds an L2 weight decay ``a p`` to
    ``p.grad`` (``ctx.l2_decay``): ``(H + diag(a)) v``. Hutchinson's Rademacher probes then add exactly
    ``sum_p a_p numel(p)`` to ``Tr H``, and the power iteration finds the top eigenvalue of ``H + diag(a)``."""
    by_id = {id(p): ctx.l2_decay[nm] for nm, p in zip(ctx.names, ctx.params) if nm in ctx.l2_decay}
    alphas = [by_id.get(id(p), 0.0) for p in params]

    def hvp_decayed(vs):
        return [h.add(v, alpha=a) if a else h for h, v, a in zip(hvp(vs), vs, alphas)]

    return hvp_decayed


class Curvature(Quantity):
    """Tier 2: Hutchinson ``Tr H`` (``n_probes`` probes, with its standard error), the top
    Hessian eigenvalue (power iteration warm-started from the previous eigenvector,
    ``power_iters`` products per call), the documents' ``eta_opt = sqrt(D Tr H / N)`` with its
    error bar, and the classical stability bound ``2 / lambda_max`` beside it.

    Needs a fixed probe batch ``(inputs, targets)`` and ``loss_fn``. ``D`` is the monitor's
    ``D`` or the last measured one (tier 1); ``N`` is ``eta_opt_n`` (default: the number of
    trainable parameters ``d``; the documents do not define ``N``). Probes and the power
    iteration's start draw from the quantity's own generator (``seed``).
    """

    name = "curvature"
    tier = 2
    needs = frozenset({"model", "l2_decay"})

    def __init__(self, loss_fn, batch, every: int = 250, n_probes: int = 4, power_iters: int = 3,
                 eta_opt_n: float | None = None, seed: int = 0):
        super().__init__(every)
        if loss_fn is None or batch is None:
            raise ValueError("Curvature needs loss_fn and batch=(inputs, targets)")
        self.loss_fn = loss_fn
        self.batch = batch
        self.n_probes = n_probes
        self.power_iters = power_iters
        self.eta_opt_n = eta_opt_n
        self.gen = torch.Generator().manual_seed(seed)
        self._vec = None

    def state_dict(self) -> dict:
        """The probes' generator and the power iteration's warm start."""
        return {"generator": self.gen.get_state(), "vec": None if self._vec is None else [v.clone() for v in self._vec]}

    def load_state_dict(self, state: dict) -> None:
        self.gen.set_state(state["generator"])
        self._vec = None if state.get("vec") is None else [v.clone() for v in state["vec"]]

    def post_step(self, ctx):
        model = ctx.model
        x, y = self.batch
        hvp, params = make_hvp(model, self.loss_fn, x, y)
        if ctx.l2_decay:
            hvp = _with_l2_decay(hvp, params, ctx)
        tr, se = hutchinson_trace(model, self.loss_fn, x, y, self.n_probes, self.gen, hvp=hvp, params=params)
        if self._vec is not None and any(a.shape != p.shape for a, p in zip(self._vec, params)):
            self._vec = None
        eig = top_eigenvalue(model, self.loss_fn, x, y, n_iter=self.power_iters if self._vec is not None
                             else max(self.power_iters, 10), tol=1e-3, init=self._vec, hvp=hvp, params=params,
                             generator=self.gen)
        self._vec = eig.eigenvector
        return {"hessian_trace": float(tr), "hessian_trace_se2": float(se * se), "lambda_max": float(eig.eigenvalue)}

    def finalize(self, ictx):
        n = ictx.counts.get("hessian_trace", 0)
        if not n:
            return {}
        tr = ictx.sums["hessian_trace"] / n
        se = math.sqrt(ictx.sums["hessian_trace_se2"]) / n
        lam = ictx.sums["lambda_max"] / n
        row = {"hessian_trace": tr, "hessian_trace_se": se, "lambda_max": lam}
        if lam > 0:
            row["lr_stability_bound"] = 2.0 / lam
        else:
            row["lr_stability_bound"] = None
            row["lr_stability_note"] = f"top Hessian eigenvalue {lam:.3g} is not > 0: 2/lambda_max undefined"
        D = ictx.D_given if ictx.D_given is not None else ictx.D_last
        N = self.eta_opt_n if self.eta_opt_n is not None else ictx.dim
        if D is not None and D > 0 and tr > 0:
            eta = _eta_opt(D, tr, N)
            rel_D = ictx.D_last_rel_se or 0.0
            row["eta_opt"] = eta
            row["eta_opt_se"] = 0.5 * eta * math.sqrt((se / tr) ** 2 + rel_D ** 2)
            row["eta_opt_n"] = N
        else:
            row["eta_opt"] = None
            row["eta_opt_note"] = ("needs D > 0 (give D= or enable tier 1)" if not (D and D > 0) else
                                   f"Hutchinson trace {tr:.3g} +- {se:.2g} is not > 0: eta_opt undefined")
        return row


class ProbeNoise(Quantity):
    """Tier 2: exact gradient-noise statistics of *every* parameter on a fixed probe batch
    (:func:`hhld.torch.noise.gradient_noise_stats`), for when the per-sample engine cannot cover some
    parameters of the training steps (``noise_coverage < 1``: e.g. layers upstream of a train-mode batch
    norm, whose per-sample gradients it then defines with the batch statistics held fixed; a custom autograd
    Function). Columns ``probe_*``: ``tr_sigma``, ``grad_sq_norm_unbiased``, ``b_simple``, ``D``, ``C`` and
    ``probe_estimators`` (which estimator served how many parameters). One forward/backward of the probe
    batch per evaluation, plus a ``torch.func`` pass for the uncovered parameters.
    """

    name = "probe_noise"
    tier = 2
    needs = frozenset({"model", "l2_decay"})

    def __init__(self, loss_fn, batch, every: int = 250):
        super().__init__(every)
        if loss_fn is None or batch is None:
            raise ValueError("ProbeNoise needs loss_fn and batch=(inputs, targets)")
        self.loss_fn = loss_fn
        self.batch = batch

    def state_dict(self) -> dict:
        """Which estimators the interval's last evaluation used (its row says so)."""
        return {"last": getattr(self, "_last", None)}

    def load_state_dict(self, state: dict) -> None:
        if state.get("last") is not None:
            self._last = str(state["last"])

    def post_step(self, ctx):
        from .noise import gradient_noise_stats

        x, y = self.batch
        st = gradient_noise_stats(ctx.model, self.loss_fn, x, y, lr=ctx.lr, l2_decay=ctx.l2_decay)
        counts: dict = {}
        for v in st.estimator.values():
            counts[v] = counts.get(v, 0) + 1
        self._last = "; ".join(f"{k}={n}" for k, n in sorted(counts.items()))
        out = {"probe_tr_sigma": st.tr_sigma, "probe_grad_sq_norm_unbiased": st.grad_sq_norm_unbiased,
               "probe_D": st.D}
        if st.b_simple is not None:
            out["probe_b_simple"] = st.b_simple
        if st.C is not None:
            out["probe_C"] = st.C
        return out

    def finalize(self, ictx):
        n = ictx.counts.get("probe_tr_sigma", 0)
        if not n:
            return {}
        row = {k: ictx.sums[k] / ictx.counts[k] for k in ("probe_tr_sigma", "probe_grad_sq_norm_unbiased",
                                                          "probe_D", "probe_b_simple", "probe_C")
               if ictx.counts.get(k)}
        row["probe_estimators"] = getattr(self, "_last", "")
        return row


def _eta_opt(D, tr, n):
    from ..theory import eta_opt

    return float(eta_opt(D, tr, n))


# --------------------------------------------------------------------------- on finished rows
class RegimeTracker:
    """Regime labels with hysteresis: a new label is adopted only after it has been the
    raw label for ``patience`` consecutive logging intervals."""

    def __init__(self, thresholds: RegimeThresholds | None = None, patience: int = 2):
        self.thresholds = thresholds or RegimeThresholds()
        self.patience = max(1, int(patience))
        self.current = None
        self._cand = None
        self._count = 0

    def state_dict(self) -> dict:
        return {"current": self.current, "candidate": self._cand, "count": self._count}

    def load_state_dict(self, state: dict) -> None:
        self.current, self._cand, self._count = state["current"], state["candidate"], int(state["count"])

    def update(self, C) -> tuple[str | None, bool]:
        if C is None or not math.isfinite(C):
            return self.current, False
        raw = classify_regime(C, self.thresholds)
        if self.current is None:
            self.current = raw
            return raw, True
        if raw == self.current:
            self._cand, self._count = None, 0
            return self.current, False
        if raw == self._cand:
            self._count += 1
        else:
            self._cand, self._count = raw, 1
        if self._count >= self.patience:
            self.current, self._cand, self._count = raw, None, 0
            return self.current, True
        return self.current, False


class PhaseTransitionDetector:
    """A phase-transition event when ``C`` falls by more than ``drop_factor`` below its
    maximum over the last ``lookback`` logging intervals (the documents: "sharp drops")."""

    def __init__(self, drop_factor: float = 3.0, lookback: int = 5):
        if not (drop_factor > 1 and math.isfinite(drop_factor)):
            raise ValueError(f"drop_factor must be > 1 and finite, got {drop_factor}")
        self.drop_factor = drop_factor
        self.lookback = lookback
        self._hist: list = []

    def state_dict(self) -> dict:
        return {"history": [float(c) for c in self._hist]}

    def load_state_dict(self, state: dict) -> None:
        self._hist = [float(c) for c in state["history"]][-self.lookback:]

    def update(self, step, C):
        if C is None or not math.isfinite(C) or C <= 0:
            return None
        ev = None
        if self._hist:
            ref = max(self._hist)
            if C < ref / self.drop_factor:
                ev = {"step": step, "event": "phase_transition", "C_before": ref, "C_after": C,
                      "drop_factor": ref / C}
                self._hist = []
        self._hist.append(C)
        self._hist = self._hist[-self.lookback:]
        return ev


#: every built-in quantity with a valid construction (drives the contract tests)
QUANTITY_TABLE = {
    "gradient": (GradientStats, {}),
    "uncertainty": (UncertaintyWindow, {"window": 4, "every": 1}),
    "noise": (NoiseScale, {}),
    "curvature": (Curvature, {"loss_fn": None, "batch": None}),  # filled by the tests with a real batch
    "probe_noise": (ProbeNoise, {"loss_fn": None, "batch": None}),
}
