"""The quantities the :class:`~hhld.torch.monitor.Monitor` computes, one object each.

A quantity has a schedule (``every`` steps) and three hooks, all called by the monitor:

* ``pre_step(ctx)`` -- inside ``optimizer.step`` before the update (the gradients are final,
  unscaled under AMP); returns a dict of *additive* values, 0-d tensors (kept on the device;
  the monitor only appends them to a list, and converts all of an interval's values with one
  host synchronisation) or host floats;
* ``post_step(ctx)`` -- after the update (same return convention);
* ``finalize(sums, counts, monitor)`` -- once per logging interval, on host floats:
  turns the interval sums into the row's values. Ratios are formed from the separately
  averaged numerator and denominator (never an average of per-step ratios). The per-step
  values of the interval are in ``monitor.interval_values`` (key -> list of floats) for
  quantities that need per-step nonlinear combinations.

Tier 0 (every step): :class:`GradientStats`, :class:`UncertaintyWindow`;
tier 1: :class:`NoiseScale`; tier 2 (amortised): :class:`Curvature`.
Regime and phase-transition tracking work on the finished rows
(:class:`RegimeTracker`, :class:`PhaseTransitionDetector`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ..observables import RegimeThresholds, classify_regime
from .hessian import hutchinson_trace, make_hvp, top_eigenvalue

__all__ = ["StepContext", "Quantity", "GradientStats", "UncertaintyWindow", "NoiseScale", "Curvature",
           "RegimeTracker", "PhaseTransitionDetector"]


@dataclass
class StepContext:
    step: int
    names: list
    params: list
    grads: list            # final (unscaled) gradients, None entries removed
    lr: float
    batch_size: int
    n_micro: int
    dim: int
    extra: dict = field(default_factory=dict)


class Quantity:
    name = "quantity"
    tier = 0

    def __init__(self, every: int = 1):
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"{type(self).__name__}: every must be an integer >= 1, got {every!r}")
        self.every = every

    def due(self, step: int) -> bool:
        return step % self.every == 0

    def attach(self, monitor) -> None:  # noqa: D401 - optional
        pass

    def detach(self) -> None:
        pass

    def pre_step(self, ctx: StepContext) -> dict:
        return {}

    def post_step(self, ctx: StepContext) -> dict:
        return {}

    def finalize(self, sums: dict, counts: dict, monitor) -> dict:
        return {}


def _sq(ts):
    if not ts:
        return torch.zeros(())
    return torch.stack(torch._foreach_norm(ts)).double().pow(2)


def _norms(ts):
    """Per-tensor 2-norms as one ``(P,)`` tensor: one fused foreach pass (float32 for half types)."""
    if any(t.dtype in (torch.float16, torch.bfloat16) for t in ts):
        ts = [t.float() for t in ts]
    return torch.stack(torch._foreach_norm(ts))


class GradientStats(Quantity):
    """Tier 0: loss, ``||g||^2``, the documents' ``C = ||g||^2/(lr/B)`` and ``C = ||g||^2/(D d)``,
    update and parameter norms.

    Per step: one fused ``_foreach_norm`` over the gradients (the per-parameter norms are kept
    for the non-finite report) and one float64 dot product; ``lr/B`` stays a host float.
    ``param_norm`` and ``update_norm`` are *sampled*: taken at the last step of each logging
    interval (``sample_every`` steps, set by the monitor to ``log_every``), so the parameter
    snapshot an update norm needs costs one copy per interval, not per step.

    ``D`` for the second form is ``D`` given to the monitor, else the interval's measured
    ``D`` of :class:`NoiseScale` (``None`` when neither is available).
    """

    name = "gradient"

    def __init__(self, every: int = 1, track_update: bool = True, sample_every: int = 1):
        super().__init__(every)
        self.track_update = track_update
        self.sample_every = max(1, int(sample_every))
        self._snap = None
        self._snapped = False

    def _sampled(self, step):
        return (step + 1) % self.sample_every == 0

    def pre_step(self, ctx):
        per = _norms(ctx.grads)
        ctx.extra["per_param_norm"] = per
        p64 = per.double()
        out = {"grad_sq": torch.dot(p64, p64), "hbar_sq": ctx.lr / ctx.batch_size}
        ctx.extra["grad_sq"] = out["grad_sq"]
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
        pn = _norms(ps).double()
        out = {"param_sq": torch.dot(pn, pn)}
        if self._snapped:
            torch._foreach_sub_(self._snap, ps)
            un = _norms(self._snap).double()
            out["update_sq"] = torch.dot(un, un)
            self._snapped = False
        return out

    def finalize(self, sums, counts, monitor):
        n = counts.get("grad_sq", 0)
        row = {}
        if n:
            g = sums["grad_sq"] / n
            row["grad_sq_norm"] = g
            row["C_sgd"] = sums["grad_sq"] / sums["hbar_sq"] if sums["hbar_sq"] > 0 else math.inf
            D = monitor.D if monitor.D is not None else monitor._interval_D
            row["D_used"] = D
            row["C"] = g / (D * monitor.dim) if D else None
        if counts.get("param_sq", 0):
            row["param_norm"] = math.sqrt(sums["param_sq"] / counts["param_sq"])
        if counts.get("update_sq", 0):
            row["update_norm"] = math.sqrt(sums["update_sq"] / counts["update_sq"])
        return row


class UncertaintyWindow(Quantity):
    """Tier 0: the uncertainty product over a tumbling window of ``window`` steps.

    ``sqrt(sum_j Var_t theta_j) * sqrt(sum_j Var_t g_j)`` over the window (the convention of
    :func:`hhld.observables.uncertainty_product` with time in place of the ensemble), reported
    beside the documents' bound ``lr / 2`` (``Delta theta . Delta grad L >= eta/2``).

    The variances are sample variances over every ``every``-th step of the window
    (``window // every >= 2`` samples; ``every=1`` uses every step). Parameters are taken
    relative to the window's first sample (no cancellation in float32). Cost per sampled step:
    five fused foreach passes over the parameters, i.e. ``5 / every`` passes per step.
    """

    name = "uncertainty"

    def __init__(self, window: int = 50, every: int = 5):
        super().__init__(every)
        if window < 2:
            raise ValueError(f"window must be >= 2, got {window}")
        if window // every < 2:
            raise ValueError(f"the uncertainty window needs at least 2 samples: window={window} steps sampled "
                             f"every {every} steps gives {window // every}")
        self.window = window
        self.samples = window // every
        self._s = None
        self._ref = None
        self._n = 0

    def pre_step(self, ctx):
        ps = [p.detach() for p in ctx.params]
        gs = ctx.grads
        if self._s is not None and (len(self._s[0]) != len(ps) or any(
                a.shape != p.shape for a, p in zip(self._s[0], ps))):
            self._s, self._n = None, 0  # the parameter set changed: restart the window
        if self._s is None:
            acc = [torch.float32 if p.dtype in (torch.float16, torch.bfloat16) else p.dtype for p in ps]
            self._s = [[torch.zeros_like(p, dtype=dt) for p, dt in zip(ps, acc)] for _ in range(4)]
        st, st2, sg, sg2 = self._s
        if self._n == 0:
            self._ref = [p.clone() for p in ps]
            # the first sample is the reference: its parameter deviation is zero
        else:
            d = torch._foreach_sub(ps, self._ref)
            torch._foreach_add_(st, d)
            torch._foreach_addcmul_(st2, d, d)
        torch._foreach_add_(sg, gs)
        torch._foreach_addcmul_(sg2, gs, gs)
        self._n += 1
        if self._n < self.samples:
            return {}
        n = self._n

        def var_sum(s, s2):
            m = torch._foreach_div(s, n)
            tot = sum(((b / n - a * a).sum().double() for a, b in zip(m, s2)), torch.zeros((), dtype=torch.float64))
            return tot.clamp_min(0) * (n / (n - 1))

        prod = torch.sqrt(var_sum(st, st2)) * torch.sqrt(var_sum(sg, sg2))
        for lst in self._s:
            torch._foreach_zero_(lst)
        self._n = 0
        self._ref = None
        return {"uncertainty_product": prod, "uncertainty_bound": ctx.lr / 2}

    def finalize(self, sums, counts, monitor):
        n = counts.get("uncertainty_product", 0)
        if not n:
            return {}
        return {"uncertainty_product": sums["uncertainty_product"] / n,
                "uncertainty_bound": sums["uncertainty_bound"] / n}


class NoiseScale(Quantity):
    """Tier 1: ``tr Sigma``, unbiased ``||G||^2``, ``B_simple``, the SGD diffusion ``D`` and ``C``.

    Uses the monitor's per-sample hooks (see :mod:`hhld.torch.noise` for the formulas).
    Parameters without a hook estimator use the micro-batch estimator when the step
    accumulated ``k >= 2`` micro-batches (the variance of the micro-batch means; the
    two-half-batch estimator for ``k = 2``), else they are left out of ``tr Sigma`` and
    ``||G||^2`` and the row says so (``noise_coverage`` < 1).

    Per step only two 0-d device tensors are recorded (the sum of the per-sample squared
    norms and the covered ``||g||^2``) together with host floats (scale factors, ``B``,
    ``lr``); ``tr Sigma``, ``||G||^2`` and ``D`` of each step are formed on the host at the
    interval's single synchronisation (:meth:`finalize`).
    """

    name = "noise"
    tier = 1

    def pre_step(self, ctx):
        ps_sum = ctx.extra.get("per_sample_sum")  # sum_i ||g_i||^2 (true per-sample scale), 0-d
        if ps_sum is None:
            return {"ns_none": 1.0}
        B = ctx.batch_size
        if B < 2:
            return {}
        out = {"ns_ps": ps_sum, "ns_cov": ctx.extra["covered_sq"], "ns_gs2": ctx.extra["gscale_sq"],
               "ns_B": float(B), "ns_lr": ctx.lr, "ns_dims": float(ctx.extra["covered_dim"])}
        micro = ctx.extra.get("micro_grads")
        unc_sq = ctx.extra.get("uncovered_sq")
        if unc_sq is not None and micro is not None and len(micro) >= 2:
            k = len(micro)
            b = B / k
            means = [torch.cat([g.double().reshape(-1) for g in mg]) for mg in micro]
            mbar = torch.stack(means).mean(0)
            var_means = sum(((m - mbar) ** 2).sum() for m in means) / (k - 1)
            out["ns_tru"] = var_means * b
            out["ns_usq"] = unc_sq
            out["ns_dims"] = float(ctx.dim)
        else:
            out["ns_tru"] = 0.0
            out["ns_usq"] = 0.0
        return out

    @staticmethod
    def per_step(vals: dict, dim: int):
        """Host-side ``(tr Sigma, ||G||^2 unbiased, D)`` of each recorded step."""
        out = []
        for ps, cov, gs2, B, lr, tru, usq in zip(vals["ns_ps"], vals["ns_cov"], vals["ns_gs2"], vals["ns_B"],
                                                 vals["ns_lr"], vals["ns_tru"], vals["ns_usq"]):
            cov_sq = cov * gs2
            tr = (ps / B - cov_sq) * (B / (B - 1))
            gu = cov_sq - tr / B
            tr, gu = tr + tru, gu + usq * gs2 - tru / B
            out.append((tr, gu, lr * tr / (2.0 * B * dim)))
        return out

    def finalize(self, sums, counts, monitor):
        vals = monitor.interval_values
        if not counts.get("ns_ps", 0):
            if counts.get("ns_none", 0):
                return {"tr_sigma": None, "noise_coverage": 0.0,
                        "noise_note": "no per-sample estimate this interval: no parameter is covered by a hook "
                                      "estimator or the hooks saw a different batch size (see "
                                      "Monitor.uncovered_parameters()); tr_sigma needs >= 2 micro-batches then"}
            return {}
        steps = self.per_step(vals, monitor.dim)
        n = len(steps)
        tr = sum(s[0] for s in steps) / n
        gu = sum(s[1] for s in steps) / n
        D = sum(s[2] for s in steps) / n
        if n > 1 and D > 0:
            var = sum((s[2] - D) ** 2 for s in steps) / (n - 1)
            monitor.last_measured_D_rel_se = math.sqrt(var / n) / D
        return {
            "tr_sigma": tr,
            "grad_sq_norm_unbiased": gu,
            "b_simple": tr / gu if gu > 0 else math.inf,
            "D": D,
            "C_measured": gu / (D * monitor.dim) if D > 0 else math.inf,
            "noise_coverage": sums["ns_dims"] / n / monitor.dim,
            "noise_estimator": monitor.noise_estimator_summary(),
        }


class Curvature(Quantity):
    """Tier 2: Hutchinson ``Tr H`` (``n_probes`` probes, with its standard error), the top
    Hessian eigenvalue (power iteration warm-started from the previous eigenvector,
    ``power_iters`` products per call), the documents' ``eta_opt = sqrt(D Tr H / N)`` with its
    error bar, and the classical stability bound ``2 / lambda_max`` beside it.

    Needs a fixed probe batch ``(inputs, targets)`` and ``loss_fn``. ``D`` is the monitor's
    ``D`` or the measured one (tier 1); ``N`` is ``eta_opt_n`` (default: the number of
    trainable parameters ``d``; the documents do not define ``N``).
    """

    name = "curvature"
    tier = 2

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
        self._last = None

    def post_step(self, ctx):
        model = ctx.extra["model"]
        x, y = self.batch
        hvp, params = make_hvp(model, self.loss_fn, x, y)
        tr, se = hutchinson_trace(model, self.loss_fn, x, y, self.n_probes, self.gen, hvp=hvp, params=params)
        if self._vec is not None and any(a.shape != p.shape for a, p in zip(self._vec, params)):
            self._vec = None
        eig = top_eigenvalue(model, self.loss_fn, x, y, n_iter=self.power_iters if self._vec is not None
                             else max(self.power_iters, 10), tol=1e-3, init=self._vec, hvp=hvp, params=params)
        self._vec = eig.eigenvector
        self._last = (tr, se, eig.eigenvalue, eig.converged)
        return {"hessian_trace": float(tr), "hessian_trace_se2": float(se * se), "lambda_max": float(eig.eigenvalue)}

    def finalize(self, sums, counts, monitor):
        n = counts.get("hessian_trace", 0)
        if not n:
            return {}
        tr = sums["hessian_trace"] / n
        se = math.sqrt(sums["hessian_trace_se2"]) / n
        lam = sums["lambda_max"] / n
        row = {"hessian_trace": tr, "hessian_trace_se": se, "lambda_max": lam,
               "lr_stability_bound": 2.0 / lam if lam > 0 else math.inf}
        D = monitor.D if monitor.D is not None else monitor.last_measured_D
        N = self.eta_opt_n if self.eta_opt_n is not None else monitor.dim
        if D is not None and D > 0 and tr > 0:
            eta = _eta_opt(D, tr, N)
            rel_D = monitor.last_measured_D_rel_se or 0.0
            row["eta_opt"] = eta
            row["eta_opt_se"] = 0.5 * eta * math.sqrt((se / tr) ** 2 + rel_D ** 2)
            row["eta_opt_n"] = N
        else:
            row["eta_opt"] = None
            row["eta_opt_note"] = ("needs D > 0 (give D= or enable tier 1)" if not (D and D > 0) else
                                   f"Hutchinson trace {tr:.3g} +- {se:.2g} is not > 0: eta_opt undefined")
        return row


def _eta_opt(D, tr, n):
    try:
        from ..theory import eta_opt
        return float(eta_opt(D, tr, n))
    except ImportError:  # pragma: no cover - hhld.theory not present: same formula
        return math.sqrt(D * tr / n)


class RegimeTracker:
    """Regime labels with hysteresis: a new label is adopted only after it has been the
    raw label for ``patience`` consecutive logging intervals."""

    def __init__(self, thresholds: RegimeThresholds | None = None, patience: int = 2):
        self.thresholds = thresholds or RegimeThresholds()
        self.patience = max(1, int(patience))
        self.current = None
        self._cand = None
        self._count = 0

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
        if drop_factor <= 1:
            raise ValueError(f"drop_factor must be > 1, got {drop_factor}")
        self.drop_factor = drop_factor
        self.lookback = lookback
        self._hist: list = []

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
