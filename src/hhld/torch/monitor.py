"""The training monitor: HHLD quantities of a real PyTorch training run.

Usage (plain loop; with AMP pass ``scaler=``; clipping and gradient accumulation need nothing)::

    mon = Monitor(model, optimizer)
    for x, y in loader:
        optimizer.zero_grad(); loss = loss_fn(model(x), y); loss.backward(); optimizer.step()
        mon.step(loss)
    mon.to_dataframe()

The monitor never changes the model or its numbers. It registers a forward pre-hook and a forward
hook on the model (they find the batch size, count backward passes and samples, and, on tier-1
steps, let the per-sample engine of :mod:`hhld.torch.persample` watch the forward pass) and step
pre/post hooks on the optimizer (the gradients are read in the step pre-hook, i.e. after
``GradScaler`` unscaled them and after any clipping; a step that ``GradScaler`` skips never reaches
it and is recorded as skipped). Values stay device tensors, summed over the logging interval; the
host synchronises once per interval (on CPU the gradient norms are checked at once, which costs
nothing there).

Which gradient a row describes: **the one ``optimizer.step()`` applies.** When the loop clips
(``clip_grad_norm_`` between ``backward()`` and ``step()``, Lightning's ``gradient_clip_val``), the
applied gradient is ``c gbar``; the per-sample gradients it is the mean of are ``c g_i``, so
``tr Sigma``, ``||G||^2`` and ``D`` carry ``c^2`` while ``B_simple`` and ``C`` do not depend on
``c``. The row records ``clip_coef`` (mean over the interval's tier-1 steps) and ``clipped_steps``.
A gradient changed non-uniformly between backward and step (``clip_grad_value_``) has no per-sample
decomposition: that step's noise statistics are left out and the row says so.

Quantities and schedules (:mod:`hhld.torch.quantities`): tier 0 every step
(:class:`GradientStats`, :class:`UncertaintyWindow`), tier 1 every ``tier1_every`` steps
(:class:`NoiseScale`), tier 2 every ``tier2_every`` steps when ``loss_fn`` and
``hessian_batch`` are given (:class:`Curvature`).

Loss conventions: ``loss_reduction`` says whether each micro-batch loss is a mean (default) or
a sum over its samples; ``accumulation="mean"`` (default) that the micro-batch losses of one step
are divided by their number (the usual accumulation pattern, Lightning's and Hugging Face's),
``"sum"`` that they are not, ``"shares"`` that each is its samples' share of the step's loss (their
losses summed and divided by the step's count, as the Hugging Face Trainer does with
``num_items_in_batch``: micro-batches of unequal sizes are then a mean over all the step's samples).
"""
from __future__ import annotations

import contextlib
import math
import numbers
import warnings
from typing import NamedTuple

import torch
from torch import nn

from .._validation import NonFiniteError
from ..observables import RegimeThresholds
from .noise import gradient_noise_stats
from .persample import PerSampleSqNorms, declared_batch_first
from .backward_kind import AccumulationProbe, builds_graph, inside_transform
from .copy_inert import CopyInert
from .persample.engine import HIGHER_ORDER_NOTE, _first_tensor, _output_tensors
from .quantities import (ClipInfo, Curvature, GradientStats, IntervalContext, NoiseScale, PerSampleStats,
                         PhaseTransitionDetector, ProbeNoise, Quantity, RegimeTracker, StepContext,
                         UncertaintyWindow, robust_norm_pair, robust_norm_values, robust_norms)

__all__ = ["Monitor", "unwrap_model", "DEFAULT_TIER1_EVERY", "ADAPTIVE_OPTIMIZERS"]

#: the default tier-1 schedule (and logging interval: one tier-1 step per row), chosen from
#: benchmarks/bench_monitor_overhead.py (docs/benchmarks/monitor.md): a tier-1 step costs about one to two and a half
#: plain steps on the MLP / CNN / nanoGPT / LSTM workloads
DEFAULT_TIER1_EVERY = 25

#: optimizers whose step is preconditioned per coordinate: the SGD forms of D and C are labelled
ADAPTIVE_OPTIMIZERS = tuple(getattr(torch.optim, n) for n in ("Adam", "AdamW", "Adamax", "NAdam", "RAdam", "Adagrad",
                                                              "RMSprop", "Adadelta", "SparseAdam", "Adafactor")
                            if hasattr(torch.optim, n))


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain module inside ``torch.compile`` (``_orig_mod``) and DDP (``module``) wrappers."""
    while True:
        if hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        elif isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


def _is_compiled(model):
    m = model
    while True:
        if hasattr(m, "_orig_mod") and isinstance(m._orig_mod, nn.Module):
            return True
        if isinstance(m, nn.parallel.DistributedDataParallel):
            m = m.module
            continue
        return False


def _is_ddp(model):
    m = model
    while True:
        if isinstance(m, nn.parallel.DistributedDataParallel):
            return True
        if hasattr(m, "_orig_mod") and isinstance(m._orig_mod, nn.Module):
            m = m._orig_mod
            continue
        return False


class _Pass(NamedTuple):
    """One backward pass measured by the per-sample engine (or the functional recomputation)."""

    total: object          # (b,) float64 per-sample squared norms summed over ``covered``, or None
    covered: set
    per: dict              # name -> (b,) per-sample squared norms
    error: str | None


def _sum(values):
    try:
        return math.fsum(values)
    except (ValueError, OverflowError):  # inf + -inf, or an intermediate overflow: plain summation (nan / inf)
        return sum(values, 0.0)


def loss_reduction_of(loss, batch: int | None) -> str | None:
    """How a scalar ``loss`` reduced its batch, read from its last autograd operation: ``"sum"``, ``"mean"``, or
    ``None`` when that operation does not say (a division, an added regulariser, label smoothing...).
    ``reduction=`` of torch's losses (``cross_entropy``, ``mse_loss``, ...) is read directly; a plain
    ``.sum()`` / ``.mean()`` counts when the reduced tensor has an axis of length ``batch``."""
    fn = getattr(loss, "grad_fn", None)
    if fn is None:
        return None
    red = getattr(fn, "_saved_reduction", None)
    if red in (1, 2) and not isinstance(red, bool):
        return "mean" if red == 1 else "sum"
    name = type(fn).__name__
    if name in ("SumBackward0", "MeanBackward0") and batch:
        try:
            sizes = tuple(int(v) for v in fn._saved_self_sym_sizes)
        except Exception:  # noqa: BLE001 - not readable: unknown
            return None
        if batch in sizes:
            return "sum" if name == "SumBackward0" else "mean"
    return None


def _l1_norms(grads) -> list:
    """Per-tensor L1 norms as host floats; sparse tensors by their values. One ``abs().sum()`` per
    tensor in its dtype (float32 for half types; torch's cascade summation: relative error about
    1e-7 at 2e5 entries, against the 1e-4 the clipping test allows), redone in float64 for a sum
    outside ``[1e-18, 1e18]``: measured 3x faster than ``_foreach_norm(.., 1, dtype=float64)``,
    which does not vectorise the widening."""
    dense = [g.coalesce().values() if g.is_sparse else g for g in grads]
    dense = [v.float() if v.dtype in (torch.float16, torch.bfloat16) else v for v in dense]
    if not dense:
        return []
    vals = torch.stack([v.abs().sum().double() for v in dense]).tolist()  # one synchronisation
    return [s if 1e-18 < s < 1e18 or s == 0.0 else float(v.double().abs().sum()) for s, v in zip(vals, dense)]


def _unwrapped_optimizer(optimizer):
    """The optimizer inside wrappers that keep it as ``.optimizer`` (accelerate's ``AcceleratedOptimizer``,
    Lightning's ``LightningOptimizer``)."""
    while isinstance(getattr(optimizer, "optimizer", None), torch.optim.Optimizer) and optimizer.optimizer is not optimizer:
        optimizer = optimizer.optimizer
    return optimizer


#: optimizers whose ``weight_decay`` is an L2 decay added to the gradient inside ``step()`` (``p.grad +
#: weight_decay * p`` is what the update uses), unless the group sets ``decoupled_weight_decay=True``
L2_DECAY_OPTIMIZERS = tuple(getattr(torch.optim, n) for n in ("SGD", "Adam", "Adamax", "NAdam", "RAdam", "Adagrad",
                                                              "RMSprop", "ASGD", "Adadelta") if hasattr(torch.optim, n))
#: optimizers whose ``weight_decay`` shrinks the weights apart from the gradient (decoupled decay)
DECOUPLED_DECAY_OPTIMIZERS = tuple(getattr(torch.optim, n) for n in ("AdamW", "Adafactor") if hasattr(torch.optim, n))


def l2_weight_decay(optimizer) -> tuple[dict, list]:
    """``(alphas, unknown)``. ``alphas[id(p)] = a`` for every parameter whose gradient the optimizer's ``step()``
    turns into ``p.grad + a p`` (an L2 weight decay: ``torch.optim.SGD``, Adam without decoupling, Adagrad,
    RMSprop, ... and :class:`hhld.torch.HeisenbergSGD`): ``a = weight_decay``, or ``-weight_decay`` with
    ``maximize=True`` (whose step ascends ``-p.grad + weight_decay p``, the same norm as ``p.grad - weight_decay
    p``). ``unknown``: the nonzero ``weight_decay`` values of an optimizer the monitor does not know, which may or
    may not add them to the gradient. AdamW's (decoupled) decay is not part of the gradient: neither."""
    from .optim import HeisenbergSGD

    optimizer = _unwrapped_optimizer(optimizer)
    alphas: dict = {}
    unknown: list = []
    for g in optimizer.param_groups:
        wd = g.get("weight_decay", 0.0)
        try:
            wd = float(wd)
        except (TypeError, ValueError):
            unknown.append(wd)
            continue
        if wd == 0.0 or isinstance(optimizer, DECOUPLED_DECAY_OPTIMIZERS) or g.get("decoupled_weight_decay", False):
            continue
        if not isinstance(optimizer, L2_DECAY_OPTIMIZERS + (HeisenbergSGD,)):
            unknown.append(wd)
            continue
        a = -wd if g.get("maximize", False) else wd
        for p in g["params"]:
            alphas[id(p)] = a
    return alphas, unknown


def _dense(g):
    """A gradient's values (a sparse one's stored values)."""
    return g.coalesce().values() if g.is_sparse else g


def _first_lr(optimizer) -> float:
    """The learning rate of the optimizer's first parameter group that holds a trainable parameter (an empty group,
    or one of frozen parameters, trains nothing: a linear probe's filtered-out backbone group); the first group's
    when none does."""
    groups = optimizer.param_groups
    for g in groups:
        if any(p.requires_grad for p in g["params"]):
            return float(g["lr"])
    return float(groups[0]["lr"])


def _norms_and_sq(grads):
    """``(per-tensor norms, ||g||^2)``: on the CPU ``||g||^2`` as a host float (no device to wait for), elsewhere a
    float64 tensor on the device (no synchronisation per step)."""
    if grads[0].device.type == "cpu":
        vals, norms = robust_norm_pair(grads)
        return norms, sum(v * v for v in vals)
    norms = robust_norms(grads)
    return norms, torch.dot(norms, norms)


def optimizer_kind(optimizer) -> str:
    """``"adaptive"`` (Adam-like preconditioning), ``"sgd_momentum"``, ``"sgd"`` or ``"other"`` (an optimizer the
    monitor does not know: Lion, a sign or an orthogonalised update, an optimizer from another library). A wrapper
    that keeps the optimizer as ``.optimizer`` (accelerate's ``AcceleratedOptimizer``, Lightning's
    ``LightningOptimizer``) is classified by what it wraps."""
    optimizer = _unwrapped_optimizer(optimizer)
    if isinstance(optimizer, ADAPTIVE_OPTIMIZERS) or any(
            isinstance(k, str) and k.startswith("exp_avg_sq") for s in optimizer.state.values() for k in s):
        return "adaptive"
    from .optim import HeisenbergSGD  # SGD's step plus Langevin noise: the gradient part is SGD's

    if isinstance(optimizer, (torch.optim.SGD, HeisenbergSGD)):
        return "sgd_momentum" if any(g.get("momentum", 0) for g in optimizer.param_groups) else "sgd"
    return "other"


class Monitor:
    """HHLD training monitor for any ``nn.Module`` + ``torch.optim.Optimizer``.

    Parameters (all keyword except the first two):
      ``log_every`` steps per history row (one host sync per row); ``batch_size`` (per optimizer
      step on this worker; default: counted from the model's first tensor argument, keyword
      arguments included); ``batch_axis`` (0 or 1: where the batch is in that argument; default: found,
      see :mod:`hhld.torch.persample`); ``scaler`` a ``torch.amp.GradScaler``; ``D`` a known diffusion
      (e.g. injected noise) for ``C = ||g||^2/(D d)``, default the measured SGD diffusion of tier 1;
      ``tier1_every`` (default :data:`DEFAULT_TIER1_EVERY`; ``None`` disables tier 1); ``tier0_every`` (default 1:
      the exact ``||g||^2`` of every step) measures tier 0 on every ``k``-th step and each row's last, and the
      row's ``||g||^2``, ``C_sgd`` and ``C`` are means over the measured steps (those, and the steps tier 1 and
      the uncertainty window measure; ``grad_sq_steps`` of them): cheaper on small
      models, at the price of rows averaged over fewer steps and a non-finite gradient seen at the next
      measured step (the loss is recorded every step);
      ``window`` (steps, default 100) of the uncertainty product, sampled every ``uncertainty_every`` steps
      (default ``min(10, window // 2)``: 10 samples per window; ``window=None`` switches it off); ``loss_fn`` +
      ``hessian_batch=(inputs, targets)`` enable tier 2 (``tier2_every``, ``n_probes``, ``power_iters``,
      ``eta_opt_n``, ``seed`` for its probes); ``thresholds`` (:class:`hhld.observables.RegimeThresholds`),
      ``regime_patience``, ``drop_factor`` for regimes and phase-transition events; ``on_nonfinite`` in
      ``{"raise", "warn"}``; ``sinks`` objects with ``write(row)`` / ``close()`` (:mod:`hhld.torch.sinks`);
      ``extra_quantities`` more :class:`Quantity` objects; ``track_update`` the update norm (sampled at
      each interval's last step); ``conv_estimator`` (``"exact"`` default, ``"sketch"``, ``"auto"``) and
      ``conv_probes``; ``coverage_warning`` the covered fraction below which one warning is given;
      ``check_every`` the per-sample sum check's schedule in tier-1 steps (:class:`PerSampleSqNorms`);
      ``probe_every`` (with ``loss_fn`` and ``hessian_batch``): exact noise statistics of every parameter on
      that fixed probe batch every so many steps (:class:`ProbeNoise`), for when ``noise_coverage < 1``.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, *, log_every: int = DEFAULT_TIER1_EVERY,
                 batch_size: int | None = None, batch_axis: int | None = None, scaler=None, D: float | None = None,
                 loss_reduction: str = "mean", accumulation: str = "mean",
                 tier1_every: int | None = DEFAULT_TIER1_EVERY, tier0_every: int = 1,
                 window: int | None = 100,
                 uncertainty_every: int | None = None, loss_fn=None, hessian_batch=None, tier2_every: int = 250,
                 n_probes: int = 4, power_iters: int = 3, eta_opt_n: float | None = None, seed: int = 0,
                 thresholds: RegimeThresholds | None = None, regime_patience: int = 2, drop_factor: float = 3.0,
                 on_nonfinite: str = "raise", sinks=(), extra_quantities=(), track_update: bool = True,
                 conv_estimator: str = "exact", conv_probes: int = 1, coverage_warning: float = 0.9,
                 check_every: int | None = 10, probe_every: int | None = None):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
        if loss_reduction not in ("mean", "sum"):
            raise ValueError(f"loss_reduction must be 'mean' or 'sum', got {loss_reduction!r}")
        if accumulation not in ("mean", "sum", "shares"):
            raise ValueError(f"accumulation must be 'mean', 'sum' or 'shares', got {accumulation!r}")
        if on_nonfinite not in ("raise", "warn"):
            raise ValueError(f"on_nonfinite must be 'raise' or 'warn', got {on_nonfinite!r}")
        for name, v in (("log_every", log_every), ("tier2_every", tier2_every)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        if tier1_every is not None and (isinstance(tier1_every, bool) or not isinstance(tier1_every, int)
                                        or tier1_every < 1):
            raise ValueError(f"tier1_every must be an integer >= 1 or None, got {tier1_every!r}")
        if isinstance(tier0_every, bool) or not isinstance(tier0_every, int) or tier0_every < 1:
            raise ValueError(f"tier0_every must be an integer >= 1 (1: the exact ||g||^2 of every step), "
                             f"got {tier0_every!r}")
        if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int)
                                       or batch_size < 1):
            raise ValueError(f"batch_size must be an integer >= 1 or None, got {batch_size!r}")
        if batch_axis not in (None, 0, 1):
            raise ValueError(f"batch_axis must be 0, 1 or None, got {batch_axis!r}")
        if D is not None and not (D > 0 and math.isfinite(D)):
            raise ValueError(f"D must be > 0 and finite, got D={D!r}")
        if probe_every is not None and (isinstance(probe_every, bool) or not isinstance(probe_every, int)
                                        or probe_every < 1):
            raise ValueError(f"probe_every must be an integer >= 1 or None, got {probe_every!r}")
        if not (0 <= coverage_warning <= 1):
            raise ValueError(f"coverage_warning must be in [0, 1], got {coverage_warning!r}")
        self.model = model
        self.inner = unwrap_model(model)
        self.optimizer = optimizer
        self._watch_parameters()
        self.log_every = log_every
        self.batch_size = batch_size
        self.batch_axis = batch_axis
        self.scaler = scaler
        self.D = D
        self.loss_reduction = loss_reduction
        self.accumulation = accumulation
        self.on_nonfinite = on_nonfinite
        self.coverage_warning = coverage_warning
        self._warned_unmeasured = False
        self._warned_reduction = False
        self._warned_views = False
        self._warned_no_step = False
        self._warned_micro = False
        # a mon.step() after a backward that the optimizer did not apply: a skipped step (GradScaler found inf) or a
        # micro-batch of gradient accumulation (mon.step() called per micro-batch); which one is known at the next
        # backward pass or optimizer step: the gradients reset in between (a skip) or still accumulating (carried)
        self._pending: dict | None = None
        self._misordered = False  # mon.step() seen between backward() and optimizer.step()
        self._warned_auto = False
        self._warned_decay = False
        self._warned_stale = False
        self._warned_zero = False
        self._batch_checked = False
        self._warned_unscale = False
        self._decay_by_name = None
        self._cap_sig = None
        self._tier1_owed = False
        self._tier1_now = False
        self.sinks = list(sinks)
        self.thresholds = thresholds or RegimeThresholds()
        # regimes and phase-transition events follow C; until a row first has C (no D yet: tier 1 has not measured,
        # or measured D = 0 at lr = 0 in a warm-up) they follow C_sgd with trackers of their own, so that the two
        # quantities (C_sgd / C = tr Sigma / 2) never meet in one tracker
        self.regime = RegimeTracker(self.thresholds, regime_patience)
        self.transitions = PhaseTransitionDetector(drop_factor)
        self._sgd_regime = RegimeTracker(self.thresholds, regime_patience)
        self._sgd_transitions = PhaseTransitionDetector(drop_factor)
        self.regime_source: str | None = None  # "C_sgd" until the first row with C, then "C" for good
        self.compiled = _is_compiled(model)
        self.ddp = _is_ddp(model)
        self.world_size = 1
        if self.ddp and torch.distributed.is_available() and torch.distributed.is_initialized():
            self.world_size = torch.distributed.get_world_size()
        if isinstance(optimizer, torch.optim.LBFGS):
            raise ValueError("Monitor does not support torch.optim.LBFGS: its step() re-evaluates the closure several "
                             "times (a line search over several points), so a step has no one stochastic gradient for "
                             "lr/B, D or C to describe; use a first-order optimizer (SGD, Adam, ...)")
        bad_lr = [i for i, g in enumerate(optimizer.param_groups)
                  if not isinstance(g.get("lr"), (numbers.Real, torch.Tensor)) or isinstance(g.get("lr"), bool)]
        if bad_lr:
            raise ValueError(f"{type(optimizer).__name__}'s parameter group(s) {bad_lr} have no numeric 'lr' (keys: "
                             f"{sorted(optimizer.param_groups[bad_lr[0]])}): the monitor reads the learning rate from "
                             "param_groups[...]['lr'] for lr/B, D and C_sgd")
        self.optimizer_kind = optimizer_kind(optimizer)
        if self.optimizer_kind == "adaptive":
            warnings.warn(f"{type(optimizer).__name__} preconditions each coordinate: the monitor's D = lr tr Sigma/(2 B d) "
                          "and C_sgd = ||g||^2/(lr/B) are the SGD-equivalent quantities (as if the step were plain "
                          "SGD with this lr); rows carry lr_kind='sgd_equivalent' (docs/monitor.md)",
                          RuntimeWarning, stacklevel=2)
        injected = [float(g.get("D_inject") or 0.0) for g in optimizer.param_groups]
        if self.optimizer_kind != "other" and max(injected, default=0.0) > 0 and D is None:
            warnings.warn(f"{type(optimizer).__name__} injects Langevin noise (D_inject={max(injected):g}) beside the "
                          "gradient noise: the monitor's measured D is the gradient noise's alone, and C = ||g||^2/(D d) "
                          "uses it; pass Monitor(..., D=<total diffusion>) for C with the injected noise included",
                          RuntimeWarning, stacklevel=2)
        elif self.optimizer_kind == "other":
            warnings.warn(f"{type(optimizer).__name__} is not torch.optim.SGD nor an optimizer the monitor knows, so it "
                          "cannot tell how a gradient becomes a step: D = lr tr Sigma/(2 B d) and C_sgd = "
                          "||g||^2/(lr/B) are the SGD-equivalent quantities (as if the step were plain SGD with this "
                          "lr); rows carry lr_kind='sgd_equivalent' (docs/monitor.md)", RuntimeWarning, stacklevel=2)
        self._lr_groups_warned = False
        self._check_group_lrs(stacklevel=3)  # the warning points at the Monitor(...) line

        self.tier0_every = tier0_every
        self.quantities: list[Quantity] = [GradientStats(self.tier0_every, track_update=track_update,
                                                         sample_every=log_every)]
        if window is not None:
            if uncertainty_every is None:
                uncertainty_every = max(1, min(10, int(window) // 2))
            self.quantities.append(UncertaintyWindow(window, uncertainty_every))
        self.noise = NoiseScale(tier1_every) if tier1_every else None
        if self.noise is not None:
            self.quantities.append(self.noise)
        self.curvature = None
        if loss_fn is not None and hessian_batch is not None:
            self.curvature = Curvature(loss_fn, hessian_batch, tier2_every, n_probes, power_iters, eta_opt_n, seed)
            self.quantities.append(self.curvature)
        elif (loss_fn is None) != (hessian_batch is None):
            raise ValueError("tier 2 needs both loss_fn and hessian_batch=(inputs, targets)")
        self.probe = None
        if probe_every is not None:
            if loss_fn is None or hessian_batch is None:
                raise ValueError("probe_every needs loss_fn= and hessian_batch=(inputs, targets): the probe batch")
            self.probe = ProbeNoise(loss_fn, hessian_batch, probe_every)
            self.quantities.append(self.probe)
        for q in extra_quantities:
            if not isinstance(q, Quantity):
                raise TypeError(f"extra_quantities must be hhld.torch.Quantity objects, got {type(q).__name__}")
        self.quantities.extend(extra_quantities)
        self._needs_per_sample = any("per_sample" in q.needs for q in self.quantities)
        self._finalize_arity: dict = {}  # id(quantity) -> number of parameters of its finalize (read once)

        self.history: list[dict] = []
        self.events: list[dict] = []
        self.step_count = 0
        self.last_measured_D = None
        self.last_measured_D_rel_se = None
        self.interval_values: dict = {}
        self._warned_coverage = False
        self._last_covered = frozenset()
        self._reset_interval()
        self._reset_step()
        self._measure = self._measured(0)
        self._handles = []
        self._engine_kw = {"conv_estimator": conv_estimator, "conv_probes": conv_probes, "check_every": check_every}
        self.engine = self._make_engine()
        if self.engine is not None:
            self.engine.enabled = self._tier1_due(0)
        # the root hooks go on the outermost module that runs eagerly (the compiled wrapper itself)
        root = model if self.compiled else self.inner
        # hooks a copy of the model or optimizer does not carry (copy.deepcopy(model) for the best model or an EMA)
        self._handles.append(root.register_forward_pre_hook(CopyInert(self._forward_pre_hook), with_kwargs=True))
        self._handles.append(root.register_forward_hook(CopyInert(self._forward_hook), with_kwargs=True))
        self._handles.append(optimizer.register_step_pre_hook(CopyInert(self._opt_pre_hook)))
        self._handles.append(optimizer.register_step_post_hook(CopyInert(self._opt_post_hook)))
        self._declared = declared_batch_first(self.inner)
        self._internal = False
        self._closed = False

    # ------------------------------------------------------------------ state
    def _reset_interval(self):
        self._vals: dict = {}
        self._per_param_steps: list = []
        self._skipped = 0
        self._steps_in_interval = 0
        self._notes: list = []

    def _reset_step(self):
        self._versions = None  # the parameters' versions at the step's first backward pass
        self._grads_stale = False  # the step's backward passes add to the previous optimizer step's gradients
        self._grads_written = False  # the gradients were changed between two backward passes (not reset)
        self._pass_end_sig = None  # the gradients' signature when the step's last backward pass ended
        self._blind = False  # the step holds micro-batches of earlier mon.step() calls that nothing counted
        self._split_step = False  # closed by the next optimizer step (no mon.step() between)
        self._cap_mark = (0, 0, 0, 0)
        self._n_micro = 0
        self._n_samples = 0
        self._captured = False
        self._ctx = None
        self._pass_norms: list = []
        self._bw_norms = None
        self._bw_l1 = None
        self._bw_scale = None
        self._fwd_b = None
        self._fn_inputs = None
        self._model_losses: list = []
        self._count_tasks: list = []  # the backward pass (graph task) that counted each forward

    def _tier1_active(self) -> bool:
        """Whether this optimizer step is a tier-1 step: the per-sample engine watches its backward passes (the
        schedule's step, or with mon.step() per micro-batch the optimizer step whose first micro-batch was on
        it, or the one after a missed one); the compiled path follows the schedule."""
        return self.engine.enabled if self.engine is not None else self._tier1_due(self.step_count)

    def _tier1_due(self, step):
        return self.noise is not None and self.noise.due(step)

    def _measured(self, step):
        """Whether step ``step`` is measured: some quantity is due (tier 0 every ``tier0_every`` steps, the
        uncertainty window, tier 1, tier 2, ...); a measured step also runs the quantities that take every measured
        step (tier 0's ``||g||^2``). Other steps record the loss and whether the optimizer stepped."""
        return any(q.due(step) for q in self.quantities)

    def _add(self, vals: dict):
        # append only (no device op): the interval's values are reduced in flush()
        store = self._vals
        for k, v in vals.items():
            if v is None:
                continue
            lst = store.get(k)
            if lst is None:
                store[k] = [v]
            else:
                lst.append(v)

    def _watch_parameters(self):
        """The parameters the monitor watches: every parameter of the model the optimizer holds (read again when
        the optimizer's parameter set changes, e.g. a param group added to unfreeze layers)."""
        # every parameter of the model the optimizer holds, frozen ones included (progressive unfreezing: a
        # parameter enters a step's statistics when it gets a gradient, and d counts the trainable ones)
        named = dict(self.inner.named_parameters())
        if not any(p.requires_grad for p in named.values()):
            raise ValueError(f"model {type(self.inner).__name__} has no trainable parameters "
                             "(no parameter with requires_grad=True); nothing to monitor")
        by_id = {id(p): n for n, p in named.items()}
        opt_params = [p for g in self.optimizer.param_groups for p in g["params"]]
        foreign = [p for p in opt_params if id(p) not in by_id]
        if foreign:
            shapes = ", ".join(str(tuple(p.shape)) for p in foreign[:3])
            raise ValueError(f"the optimizer holds {len(foreign)} parameter(s) that are not parameters of "
                             f"the model (shapes {shapes}{', ...' if len(foreign) > 3 else ''}); build the optimizer "
                             "over model.parameters()")
        opt_ids = {id(p) for p in opt_params}
        self.names = [n for n, p in named.items() if id(p) in opt_ids]
        if not any(named[n].requires_grad for n in self.names):
            raise ValueError(f"model {type(self.inner).__name__} has no trainable parameters in the optimizer "
                             "(no parameter with requires_grad=True); nothing to monitor")
        self.params = [named[n] for n in self.names]
        lazy = [n for n, p in zip(self.names, self.params) if isinstance(p, nn.parameter.UninitializedParameter)]
        if lazy:
            raise ValueError(f"{len(lazy)} parameter(s) of the model are not initialised yet (lazy modules: "
                             f"{lazy[:3]}{', ...' if len(lazy) > 3 else ''}); run one forward pass (a dummy batch) to "
                             "initialise them, then build the optimizer and the monitor")
        self.not_optimized = [n for n, p in named.items() if p.requires_grad and id(p) not in opt_ids]
        self.dim = sum(p.numel() for p in self.params)
        self._step_dim = sum(p.numel() for p in self.params if p.requires_grad)
        self._accumulates = AccumulationProbe(self.params)  # inside a hook: does this backward write .grad?
        self._all_idx = list(range(len(self.params)))
        self._names_t, self._params_t = tuple(self.names), tuple(self.params)
        self._opt_count = self._optimizer_param_count()

    def _optimizer_param_count(self) -> int:
        return sum(len(g["params"]) for g in self.optimizer.param_groups)

    def _make_engine(self):
        """The per-sample engine over the watched parameters (None when nothing needs per-sample norms, or for a
        compiled model, whose per-sample norms come from the functional recomputation)."""
        if not self._needs_per_sample or self.compiled:
            return None
        kw = self._engine_kw
        engine = PerSampleSqNorms(self.inner, dict(zip(self.names, self.params)), on_pass_end=self._on_pass_end,
                                  conv_estimator=kw["conv_estimator"], conv_probes=kw["conv_probes"],
                                  batch_axis=self.batch_axis, check_every=None if self.ddp else kw["check_every"],
                                  passes="accumulating")
        engine.shared_terms = not self.ddp  # DDP's gradients are all-reduced: no split against them
        engine.attach()
        return engine

    def _parameters_changed(self):
        """The optimizer's parameter set changed (``add_param_group``): watch the new set from this step on, with a
        new per-sample engine (its per-sample statistics start at the next tier-1 step), and say so."""
        old = set(self.names)
        self._watch_parameters()
        added = [n for n in self.names if n not in old]
        removed = sorted(old - set(self.names))
        self.events.append({"step": self.step_count, "event": "parameters_changed", "added": len(added),
                            "removed": len(removed), "dim": self.dim})
        warnings.warn(f"the optimizer's parameters changed before step {self.step_count} ({len(added)} added, e.g. "
                      f"{added[:3]}; {len(removed)} removed): the monitor watches its {len(self.names)} parameters "
                      f"(d = {self.dim}) from this step on; their per-sample statistics start at the next tier-1 "
                      "step", RuntimeWarning, stacklevel=5)
        if self.engine is not None:
            old_engine = self.engine
            old_engine.detach()
            self.engine = new = self._make_engine()
            new._learned_axis, new.enabled = old_engine._learned_axis, old_engine.enabled
            keep = set(self.names)  # what the old engine learned of the parameters still watched
            new.covered_ever = {n for n in old_engine.covered_ever if n in keep}
            new.coupled = {n for n in old_engine.coupled if n in keep}
            new.estimator = {n: v for n, v in old_engine.estimator.items() if n in keep}
            new.reasons = {n: v for n, v in old_engine.reasons.items() if n in keep}

    # ------------------------------------------------------------------ hooks
    def _input_axis(self):
        if self.batch_axis is not None:
            return self.batch_axis
        if self.engine is not None and self.engine._learned_axis is not None:
            return self.engine._learned_axis
        return {True: 0, False: 1}.get(self._declared, 0) if self._declared != "mixed" else 0

    def _forward_pre_hook(self, module, args, kwargs):
        if self._internal or not torch.is_grad_enabled() or inside_transform():
            return None  # a forward inside torch.func.grad / vmap: that function's, not the step's
        x = args[0] if args and isinstance(args[0], torch.Tensor) and args[0].dim() > 0 else _first_tensor(args, kwargs)
        ax = self._input_axis()
        self._fwd_b = int(x.shape[ax]) if x is not None and x.dim() > ax else None
        if x is not None and not (args and x is args[0]):
            ps = next((a for a in tuple(args) + tuple(kwargs.values()) if isinstance(a, nn.utils.rnn.PackedSequence)),
                      None)
            if ps is not None and x is ps.data:  # a packed batch (its rows are steps): B is its first batch size
                self._fwd_b = int(ps.batch_sizes[0])
        if self.compiled and self._needs_per_sample and self._tier1_due(self.step_count):
            self._fn_inputs = (args, kwargs, self._fwd_b)
        return None

    def _forward_hook(self, module, args, kwargs, output):
        # count micro-batches and samples only for forward passes that are backpropagated
        if self._internal or not torch.is_grad_enabled() or inside_transform():
            return None
        n = self._fwd_b
        if not self._batch_checked:
            self._check_batch_in_output(args, kwargs, output, n)
        if isinstance(output, torch.Tensor) and self._fn_inputs is None:  # the common case, cheaply (every step)
            if output.requires_grad and self._measure:
                self._count_on_backward((output,), n)
            return None
        loss = output.get("loss") if isinstance(output, dict) else getattr(output, "loss", None)
        if isinstance(loss, torch.Tensor) and loss.dim() == 0:
            self._check_reduction(loss)
            self._model_losses.append(loss.detach())  # e.g. a Hugging Face model's own loss
        if not self._measure:
            return None
        outs = [o for o in _output_tensors(output) if o.requires_grad]
        if not outs:
            return None
        self._count_on_backward(outs, n)
        if self.compiled and self._fn_inputs is not None:
            self._watch_functional(_output_tensors(output))
        return None

    def _check_batch_in_output(self, args, kwargs, output, n):
        """Once, at the first counted forward: when no output of the model has the batch size ``n`` taken from its
        first tensor argument, but another tensor argument's first axis is an output's first axis, the batch is
        probably that argument. ``model(mask, x)`` with a ``(T, T)`` mask first, or ``model(t, x)`` with a ``(1,)``
        time first, gave B = T or 1 silently (C_sgd 2x / 16x off); now one warning says what to pass."""
        self._batch_checked = True
        if self.batch_size or not n:
            return
        outs = [o for o in _output_tensors(output) if o.dim() > 0]
        if not outs or any(n in o.shape for o in outs):
            return
        heads = {int(o.shape[0]) for o in outs}
        others = [a for a in tuple(args) + tuple(kwargs.values()) if isinstance(a, torch.Tensor) and a.dim() > 0
                  and int(a.shape[0]) != n and int(a.shape[0]) in heads]
        if not others:
            return
        b = int(others[0].shape[0])
        warnings.warn(f"the monitor takes the batch size B = {n} from axis {self._input_axis()} of the model's first "
                      f"tensor argument, but the model's output has {b} rows, as has another of its arguments (shape "
                      f"{tuple(others[0].shape)}): if that is the batch (model(mask, x), model(t, x)), pass "
                      f"batch_size={b} (lr/B and C_sgd use it), and put the batch first for per-sample statistics",
                      RuntimeWarning, stacklevel=4)

    def _check_reduction(self, loss):
        """One warning when the loss says it reduced the batch otherwise than ``loss_reduction`` (read on the first
        step and the tier-1 steps: a few attribute reads)."""
        if self._warned_reduction or not (self.step_count == 0 or self._tier1_due(self.step_count)):
            return
        b = self._fwd_b or self.batch_size
        found = loss_reduction_of(loss, b)
        if found is None or found == self.loss_reduction:
            return
        self._warned_reduction = True
        factor = f"B^2 = {b * b}" if b else "B^2"
        warnings.warn(f"the loss looks like a {found} over the batch (its last operation is "
                      f"{type(loss.grad_fn).__name__}), but the monitor was told loss_reduction="
                      f"{self.loss_reduction!r}: the per-sample statistics (tr_sigma, ||G||^2, D) would be off by "
                      f"a factor {factor}; "
                      f"pass Monitor(..., loss_reduction={found!r})", RuntimeWarning, stacklevel=3)

    def _count_on_backward(self, outs, n):
        """Count this forward's ``n`` samples once a backward pass reaches one of its outputs ``outs``, and only
        once: a forward backpropagated twice (``retain_graph``, two losses, a gradient penalty's
        ``create_graph=True`` pass before the backward) still holds ``n`` samples of the step."""
        counted = [False]

        def count(*_, n=n):
            if not counted[0] and self._accumulates():  # not in a torch.autograd.grad() call
                counted[0] = True
                self._count_pass(n)  # returns None: the gradients pass unchanged

        for out in outs:
            node = out.grad_fn
            if node is None:  # the output is a leaf: a tensor hook
                out.register_hook(count)
            else:  # a hook on the output's node: cheaper to register than a tensor hook, fires at the same moment
                node.register_prehook(count)

    def _grad_signature(self):
        """Which gradient tensors the parameters hold, and their versions: unchanged when nothing reset or
        wrote them (``zero_grad()`` sets them to None or zeroes them in place, a new version)."""
        return [None if (g := p.grad) is None else (id(g), g._version) for p in self.params]

    def _record_pass_end(self):
        self._pass_end_sig = self._grad_signature()

    def _stale_gradients(self) -> bool:
        """At a step's first backward pass: the gradients are those the previous optimizer step applied, untouched
        (no ``zero_grad()`` in between), so this pass adds to them."""
        prev = getattr(self, "_cap_sig", None)
        if prev is None:
            return False
        sig = self._grad_signature()
        if sig != prev or all(s is None for s in sig):
            return False
        # untouched since the optimizer applied them; all zero (zeroed before that step): nothing to add to
        return not all(not bool(_dense(p.grad).any()) for p in self.params if p.grad is not None)

    def _reset_since_last_pass(self) -> bool:
        """At a later backward pass of one step: were the gradients reset since the previous pass ended? Set to None,
        or zeroed in place (``zero_grad(set_to_none=False)``: new versions, every gradient zero). Changed otherwise
        (clipped or unscaled between micro-batches): not a reset, but the step's gradient is then no sum of per-sample
        gradients (``_grads_written``)."""
        sig = self._grad_signature()
        if all(s is None for s in sig):
            return True
        prev = self._pass_end_sig
        if prev is None or sig == prev:
            return False
        present = [p.grad for p in self.params if p.grad is not None]
        if all(not bool(_dense(g).any()) for g in present):
            return True
        self._grads_written = True
        return False

    def _engine_next_step(self):
        """The per-sample engine starts a new optimizer step: its sums start again, and it watches the step if tier
        1 is due (or owed: it fell due in the middle of an optimizer step whose first micro-batch it had not seen)."""
        self.engine.step_done()
        self.engine.enabled = self._tier1_due(self.step_count) or self._tier1_owed
        self._tier1_owed = False

    def _maybe_micro_step(self) -> bool:
        """A ``mon.step()`` after a backward pass that no optimizer step applied: could it be one micro-batch of
        gradient accumulation? Not when the gradients are gone or non-finite (GradScaler skips those), nor when
        the parameters changed since the step's first backward pass (another optimizer, e.g. SAM's base
        optimizer, applied the gradients): those are skipped steps at once."""
        grads = [p.grad for p in self.params]
        if all(g is None for g in grads) or self._versions is None:
            return False
        if [p._version for p in self.params] != self._versions:
            return False
        vals = robust_norm_values([g for g in grads if g is not None])
        return all(math.isfinite(v) for v in vals)

    def _record_skip(self, step, n_micro):
        self._skipped += 1
        self.events.append({"step": step, "event": "skipped_step",
                            "reason": "optimizer.step did not run (e.g. GradScaler found inf/NaN gradients)"})
        if n_micro and self.scaler is None and not self._warned_no_step:
            self._warned_no_step = True
            warnings.warn(f"backward() ran in step {step} but the monitored optimizer "
                          f"({type(self.optimizer).__name__}) took no step, and the gradients were reset before the "
                          "next one: the step is recorded as skipped. If another optimizer applies the gradients "
                          "(SAM's base_optimizer, a wrapper), give that one to Monitor; with a GradScaler, pass "
                          "scaler=; a zero_grad() between backward() and optimizer.step() also does this",
                          RuntimeWarning, stacklevel=4)

    def _resolve_pending(self, at_capture: bool = False):
        """The step left pending by a ``mon.step()`` whose backward the optimizer did not apply: if the gradients are
        as that step left them, its micro-batches are part of the coming optimizer step (gradient accumulation with
        ``mon.step()`` called per micro-batch) and are carried into it; otherwise it was a skipped step. Carried at
        the optimizer step with no backward pass since (``at_capture``): ``mon.step()`` is called between
        ``backward()`` and ``optimizer.step()``, which the monitor cannot follow (see :meth:`step`)."""
        pend, self._pending = self._pending, None
        if pend is None:
            return
        if self._grad_signature() != pend["sig"]:
            self._record_skip(pend["step"], pend["n_micro"])
            if self.engine is not None:
                self._engine_next_step()
            return
        if pend["blind"]:
            self._blind = True  # micro-batches of this optimizer step that were not counted: not measured
        if self._versions is None:  # no backward pass since: the parameters' versions of the carried one
            self._versions = pend["versions"]
        self._n_micro += pend["n_micro"]
        self._n_samples += pend["n_samples"]
        self._count_tasks = pend["tasks"] + self._count_tasks
        self._pass_norms = pend["passes"] + self._pass_norms
        if at_capture and self._n_micro == pend["n_micro"]:  # nothing counted since: not accumulation, misordered
            self._misordered = True
            warnings.warn(f"mon.step() was called at step {pend['step']} after backward() but before "
                          "optimizer.step(): the monitor closes a step at mon.step(), so it cannot pair the next "
                          "steps' backward passes with their updates; this update is measured, the later ones are not "
                          "(their losses are still recorded). Call mon.step() after optimizer.step() (and "
                          "scaler.update())", RuntimeWarning, stacklevel=5)  # the optimizer.step() call
        elif not self._warned_micro:
            self._warned_micro = True
            warnings.warn(f"mon.step() was called at step {pend['step']} between the backward passes of one optimizer "
                          "step (gradient accumulation): its micro-batches are pooled into the step optimizer.step() "
                          "applies (that call records no step of its own). Call mon.step() once per optimizer step, after "
                          "optimizer.step()", RuntimeWarning, stacklevel=4)

    def _count_pass(self, n):
        """A backward pass reaches a counted forward's output (before it writes any ``.grad``)."""
        new_pass = self._accumulates.task not in self._count_tasks
        if not self._n_micro:  # the first pass of a step, before it touches .grad
            if self._pending is not None:
                self._resolve_pending()
            self._versions = [p._version for p in self.params]  # what an optimizer step would change
            self._grads_stale = self._stale_gradients()
            self._grads_written = False
        elif new_pass and self._reset_since_last_pass():
            # the gradients were reset (zero_grad, to None or zeroed in place) since this step's earlier backward
            # passes (SAM's second pass at the perturbed weights; a GAN's generator step through the discriminator,
            # then the discriminator's own): step() applies this pass's gradient, so the earlier ones leave the row
            self._n_micro = self._n_samples = 0
            self._count_tasks, self._pass_norms = [], []
            self._cap_mark = (0, 0, 0, 0)
            self._grads_stale = self._grads_written = False  # what the earlier passes found leaves with them
            if self.engine is not None:
                self.engine.gradients_reset()
        if new_pass:  # the gradients' signature once this pass has ended (behind DDP's all-reduce callback)
            engine = torch.autograd.Variable._execution_engine
            engine.queue_callback(lambda: engine.queue_callback(self._record_pass_end))
        self._n_micro += 1
        self._n_samples += n or 0
        self._count_tasks.append(self._accumulates.task)

    def _check_views(self):
        """One warning when one backward pass went through several forwards: their samples are counted as
        different samples (``B`` is their sum), which is wrong when they are views of the same samples."""
        tasks = self._count_tasks
        if self._warned_views or self.batch_size or len(tasks) == len(set(tasks)):
            return
        self._warned_views = True
        most = max(tasks.count(t) for t in set(tasks))
        warnings.warn(f"one backward pass went through {most} forwards of the model ({self._n_samples} samples in "
                      "this step, counted as that many different samples for lr/B, C_sgd and D): if the forwards are "
                      "views of the same samples (two augmentations, R-Drop, a consistency loss), pass batch_size= the "
                      "number of samples; if they hold different samples, this is right (or call backward() once per "
                      "forward)", RuntimeWarning, stacklevel=3)

    def _watch_functional(self, outs):
        """A compiled model on a tier-1 step: keep the output gradients, and once the backward pass ends
        compute the per-sample norms by the functional recomputation of the plain module."""
        args, kwargs, b = self._fn_inputs
        self._fn_inputs = None
        grads = [None] * len(outs)
        state = {"queued": False}

        def finish():
            from .persample.functional import functional_sq_norms
            if state.get("higher_order"):
                self._pass_norms.append(_Pass(None, set(), {}, HIGHER_ORDER_NOTE))
                torch.autograd.Variable._execution_engine.queue_callback(self._record_backward_norms)
                return
            try:
                per = functional_sq_norms(self.inner, dict(zip(self.names, self.params)), args, kwargs, outs, grads,
                                          b, self._input_axis())
                total = sum(per.values())
                self._pass_norms.append(_Pass(total, set(per), per, None))
            except Exception as exc:  # noqa: BLE001 - refused recomputation: this pass is not measured
                why = f"functional per-sample recomputation refused: {exc}"
                self._pass_norms.append(_Pass(None, set(), {}, why))
            torch.autograd.Variable._execution_engine.queue_callback(self._record_backward_norms)

        def make(k):
            def hook(g):
                if builds_graph():
                    state["higher_order"] = True
                if not self._accumulates():  # a torch.autograd.grad() call: not the step's gradient
                    return
                grads[k] = g.detach()
                if not state["queued"]:
                    state["queued"] = True
                    torch.autograd.Variable._execution_engine.queue_callback(finish)
            return hook

        for k, o in enumerate(outs):
            if o.requires_grad:
                o.register_hook(make(k))

    def _on_pass_end(self, engine):
        # one backward pass watched by the per-sample engine: keep its per-sample norms and the gradient norms
        # right after backward (before any clipping / unscaling: what the step applies is compared with them)
        if self._internal:
            return
        self._pass_norms.append(_Pass(engine.passes[-1] if engine.passes else None, set(engine.covered_last),
                                      dict(engine.last_reduced), engine.last_error))
        # the gradient norms once the backward pass has fully ended: queued behind the callbacks already queued
        # (DDP's, which writes the all-reduced gradients), so they are the gradients the step starts from
        torch.autograd.Variable._execution_engine.queue_callback(self._record_backward_norms)

    def _record_backward_norms(self):
        grads = [p.grad for p in self.params]
        if all(g is not None for g in grads):
            # host floats (one synchronisation off the CPU); on the CPU straight from the fused pass
            cpu = grads[0].device.type == "cpu"
            self._bw_norms = robust_norm_values(grads) if cpu else robust_norms(grads).tolist()
            self._bw_scale = self._scaler_scale()
            # on a tier-1 step also the L1 norms: a parameter's gradient only rescaled before step() keeps the
            # ratio of its two norms (per-group clipping), any other change (clip_grad_value_) does not
            self._bw_l1 = _l1_norms(grads) if self._tier1_active() else None

    def _scaler_scale(self):
        s = self.scaler
        if s is None or not getattr(s, "is_enabled", lambda: True)():
            return None
        sc = getattr(s, "_scale", None)
        return float(sc) if sc is not None else None

    def _opt_pre_hook(self, optimizer, args, kwargs):
        if self._internal:
            return None
        if self.engine is not None:
            self.engine.end_trailing()  # the backward passes are done: the loss-side watch can leave at once
        closure = kwargs.get("closure") if kwargs else None
        i0 = 1 if args and args[0] is optimizer else 0  # torch passes (self, closure, ...) as args
        in_args = closure is None and len(args) > i0 and callable(args[i0])
        if in_args:
            closure = args[i0]
        if closure is None:
            self._capture(optimizer)
            return None

        # step(closure): the gradients exist only once the closure has run (Lightning's automatic
        # optimisation, LBFGS): read them right after its first call, before the update. Once per step() call: a
        # second step(closure) before mon.step() is a second optimizer step (closed by _capture), not a second
        # evaluation (until 2026-12-02 it was taken for one: two optimizer steps merged into one row, silently)
        captured = []

        def wrapped():
            out = closure()
            if not captured:
                captured.append(True)
                self._capture(optimizer)
            return out

        if in_args:
            return tuple(args[:i0]) + (wrapped,) + tuple(args[i0 + 1:]), kwargs
        kwargs = dict(kwargs)
        kwargs["closure"] = wrapped
        return args, kwargs

    def _auto_close(self):
        """``optimizer.step()`` again with no ``mon.step()`` since the last one: close that step now (no loss), and
        keep what was counted since its capture (this step's forwards and backward passes) for this one."""
        n0, s0, t0, p0 = self._cap_mark
        new = (max(self._n_micro - n0, 0), max(self._n_samples - s0, 0), self._count_tasks[t0:], self._pass_norms[p0:])
        if not self._warned_auto:
            self._warned_auto = True
            warnings.warn(f"optimizer.step() ran again (step {self.step_count + 1}) with no mon.step() since the last "
                          "one: the monitor closes each optimizer step itself, without its loss, and measures no "
                          "per-sample statistics for a step it closed so (its backward passes ran before the previous "
                          "step was closed). Call mon.step(loss) after every optimizer.step(); log_every= sets how "
                          "often a row is written", RuntimeWarning, stacklevel=5)
        self._finish_step(None, auto=True)
        self._n_micro, self._n_samples, self._count_tasks, self._pass_norms = new
        self._split_step = True

    def _capture(self, optimizer):
        if self._captured:  # a second optimizer step since mon.step(): the first is closed now
            self._auto_close()
        if self._optimizer_param_count() != self._opt_count:  # add_param_group since the last step
            self._parameters_changed()
        if self._pending is not None:  # the optimizer applies the gradients: a pending micro-step is part of them
            self._resolve_pending(at_capture=True)
        if not self._measure or self._blind:  # a step not measured: only whether the optimizer stepped
            self._captured = any(p.grad is not None for p in self.params)
            self._mark_capture()
            return
        # a frozen parameter (requires_grad=False) is not part of the step, even with a gradient left from before it
        # was frozen (zeroed in place by zero_grad(set_to_none=False)): it would count in d and against coverage
        grads = tuple(p.grad if p.requires_grad else None for p in self.params)
        if any(g is None for g in grads):
            idx = [i for i, g in enumerate(grads) if g is not None]
            if not idx:
                return
            names = tuple(self.names[i] for i in idx)
            params = tuple(self.params[i] for i in idx)
            grads = tuple(grads[i] for i in idx)
            # d: the trainable parameters (one unused in this step counts, with its zero gradient; a frozen one not)
            self._step_dim = sum(p.numel() for p in self.params if p.requires_grad)
        else:  # every parameter has a gradient (the common case): no per-step bookkeeping
            idx, names, params = self._all_idx, self._names_t, self._params_t
            self._step_dim = self.dim
        B_local = self.batch_size or self._n_samples
        if not B_local and self._pass_norms:
            # the model's own forward hook did not fire (e.g. a LightningModule whose training_step calls a
            # submodule): the per-sample engine saw the micro-batches
            B_local = sum(int(p.total.shape[0]) for p in self._pass_norms if p.total is not None)
            self._n_micro = len(self._pass_norms)
        if not B_local and (self._misordered or self._split_step):
            # this update's backward passes went with the previous mon.step(), or were not counted (a step closed by
            # the next optimizer step, whose forwards ran under the previous step's schedule): not measured
            self._captured = True
            self._mark_capture()
            return
        if not B_local:
            raise ValueError("Monitor could not find the batch size (the model's first tensor argument, keyword "
                             "arguments included, has no batch axis, or the model's forward was not called): pass "
                             "batch_size= (and batch_axis=)")
        B = B_local * self.world_size
        self._check_views()
        lr = _first_lr(optimizer)
        # tier 1 when the per-sample engine watched the step's backward passes: the schedule's step, or (mon.step()
        # called per micro-batch) the optimizer step whose first micro-batch it was, or the one after a missed one
        tier1 = self._tier1_active()
        # an L2 weight decay the optimizer adds inside step() (torch.optim.SGD's weight_decay): the gradient it applies
        # is p.grad + a p, the one every quantity describes (tier 1's clipping check compares p.grad itself)
        applied = self._with_l2_decay(optimizer, params, grads)
        if applied is None:
            norms, grad_sq = _norms_and_sq(grads)
            applied, applied_norms, applied_sq = grads, norms, grad_sq
        else:
            applied_norms, applied_sq = _norms_and_sq(applied)
            norms = _norms_and_sq(grads)[0] if tier1 else None
        self._tier1_now = tier1
        clip = per_sample = note = None
        if isinstance(applied_sq, float) and applied_sq == 0.0 and self._n_micro and not self._warned_zero:
            # (CPU: a host float at no cost; on a device a tensor, not synchronised for this)
            self._warned_zero = True
            warnings.warn(f"the gradient optimizer.step() applied at step {self.step_count} is exactly zero although "
                          "a backward pass ran (zero_grad() between backward() and optimizer.step()?): the step's "
                          "row says ||g||^2 = 0", RuntimeWarning, stacklevel=4)
        if self._grads_stale and not self._warned_stale:
            self._warned_stale = True
            warnings.warn(f"the gradients were not reset since the previous optimizer step (no zero_grad() before the "
                          f"backward pass of step {self.step_count}): this step's gradient is the earlier steps' plus "
                          "this batch's, so training applies the sum (probably not what you meant) and its per-sample "
                          "statistics are not measured. Call optimizer.zero_grad() before each step's first "
                          "backward()", RuntimeWarning, stacklevel=4)
        if tier1 and self._split_step:
            note = ("optimizer.step() ran twice with no mon.step() between: this step's backward passes ran before the "
                    "previous step was closed, so its per-sample statistics are not measured; call mon.step() after "
                    "every optimizer.step()")
            self._notes.append(note)
        elif tier1 and (self._grads_stale or self._grads_written):
            note = ("the gradients were not reset since the previous optimizer step (no zero_grad()): the applied "
                    "gradient holds earlier steps' gradients, so it has no per-sample decomposition over this batch"
                    if self._grads_stale else
                    "the gradients were changed between two backward passes of this step (neither reset nor only "
                    "accumulated: e.g. clipped or unscaled per micro-batch): the applied gradient has no per-sample "
                    "decomposition")
            self._notes.append(note)
        elif tier1:
            clip = self._clip_info(idx, norms, grads)
            self._check_unscaled(clip)
            per_sample, note = self._per_sample_stats(names, params, idx, norms, B_local, B, clip, applied_norms)
            if note:
                self._notes.append(note)
        ctx = StepContext(step=self.step_count, names=names, params=params, grads=applied, lr=lr, batch_size=B,
                          n_micro=max(self._n_micro, 1), dim=self._step_dim, grad_norms=applied_norms,
                          grad_sq=applied_sq, model=self.inner, per_sample=per_sample, per_sample_note=note,
                          clip=clip, l2_decay=self._decay_by_name)
        for q in self.quantities:
            if q.tier == 2 or not (q.every_measured_step or q.due(self.step_count) or (q.tier == 1 and tier1)):
                continue
            self._add(q.pre_step(ctx))
        self._per_param_steps.append((self.step_count, names, applied_norms))
        self._ctx = ctx
        self._captured = True
        self._mark_capture()

    def _with_l2_decay(self, optimizer, params, grads):
        """The gradients ``optimizer.step()`` applies, ``p.grad + a p``, when it adds an L2 weight decay to some of
        ``params`` (:func:`l2_weight_decay`; computed as torch's SGD does, ``grad.add(p, alpha=a)``), else None.
        An optimizer the monitor does not know with a nonzero ``weight_decay``: one warning, rows of ``p.grad``."""
        self._decay_by_name = None
        if not any(g.get("weight_decay") for g in optimizer.param_groups):  # the common case: one check per step
            return None
        alphas, unknown = l2_weight_decay(optimizer)
        if unknown and not self._warned_decay:
            self._warned_decay = True
            warnings.warn(f"the optimizer {type(_unwrapped_optimizer(optimizer)).__name__} has weight_decay="
                          f"{unknown[0]!r}, and the monitor does not know whether its step adds it to the gradient "
                          "(an L2 decay, as torch.optim.SGD) or shrinks the weights apart from it (decoupled, as "
                          "AdamW): its rows describe p.grad alone, without the decay", RuntimeWarning, stacklevel=4)
        by_alpha: dict = {}
        for j, p in enumerate(params):
            a = alphas.get(id(p))
            if a:
                by_alpha.setdefault(a, []).append(j)
        if not by_alpha:
            return None
        out = list(grads)
        for a, js in by_alpha.items():
            dense = [j for j in js if not grads[j].is_sparse]
            if dense:
                for j, t in zip(dense, torch._foreach_add([grads[j] for j in dense],
                                                          [params[j].detach() for j in dense], alpha=a)):
                    out[j] = t
            for j in js:
                if grads[j].is_sparse:  # torch adds a dense parameter to a sparse gradient as dense + sparse
                    out[j] = params[j].detach().mul(a).add_(grads[j])
        names = {id(p): nm for p, nm in zip(self.params, self.names)}
        self._decay_by_name = {names[id(params[j])]: a for a, js in by_alpha.items() for j in js}
        return tuple(out)

    def _mark_capture(self):
        """What was counted up to this optimizer step (a later one before mon.step() keeps only what follows), and
        the per-sample engine's gradient sums start again: a backward pass after this optimizer step belongs to the
        next one, whether or not mon.step() comes first."""
        self._cap_mark = (self._n_micro, self._n_samples, len(self._count_tasks), len(self._pass_norms))
        self._cap_sig = self._grad_signature()  # the gradients the optimizer applied: a reset must change them
        if self.engine is not None:
            self.engine.step_done()

    def _check_unscaled(self, clip):
        """One warning when the gradients were divided by a power of two between backward() and step() with no
        ``scaler=`` given: a GradScaler's ``unscale_`` (read as clipping: every row ``clipped_steps`` 1 and a
        ``clipped`` event, ``clip_coef`` 1/scale). The statistics stay right; the labels are not."""
        if clip is None or not clip.uniform or self.scaler is not None or self._warned_unscale or not 0 < clip.coef < 1:
            return
        e = round(math.log2(clip.coef))
        if e <= -4 and abs(clip.coef - 2.0 ** e) <= 1e-6 * clip.coef:
            self._warned_unscale = True
            warnings.warn(f"the gradients were divided by 2^{-e} between backward() and optimizer.step(), as a "
                          "GradScaler's unscale_ does: pass Monitor(..., scaler=scaler), or the rows read it as "
                          "clipping (clip_coef, clipped_steps, 'clipped' events)", RuntimeWarning, stacklevel=4)

    def _clip_info(self, idx, norms, grads):
        """Compare the applied gradient with the one right after backward (per parameter; a handful of numbers,
        compared on the host: one synchronisation on a tier-1 step)."""
        bw = self._bw_norms
        if bw is None or len(bw) != len(self.params):
            return None
        scale = self._bw_scale or 1.0
        bw = [bw[i] / scale for i in idx] if isinstance(bw, list) else (bw[idx] / scale).tolist()
        ap = norms.tolist()
        ratios = [a / b for a, b in zip(ap, bw) if b > 0]
        if not ratios:
            return ClipInfo(1.0, True)
        c = sum(ratios) / len(ratios)
        # rescaling a gradient in its own dtype rounds each entry (relative error <= eps/2), which moves a norm
        # ratio by at most eps/2: bfloat16 gradients (pure bf16 training) rescaled by one factor stay "uniform"
        eps = max((torch.finfo(g.dtype).eps for g in grads if g.is_floating_point()), default=0.0)
        if all(abs(r - c) <= max(1e-5, eps) * max(c, 1e-30) for r in ratios):
            return ClipInfo(c, True)
        l1_bw = self._bw_l1
        if l1_bw is None or len(l1_bw) != len(self.params):
            return ClipInfo(c, False)
        l1_ap = _l1_norms(grads)
        scales = []
        for j, i in enumerate(idx):  # each parameter only rescaled: both norms by one factor
            b2, a2, b1, a1 = bw[j], ap[j], l1_bw[i] / scale, l1_ap[j]
            if b2 <= 0 or b1 <= 0:
                if a2 > 0:
                    return ClipInfo(c, False)
                scales.append(1.0)
                continue
            r2, r1 = a2 / b2, a1 / b1
            if abs(r1 - r2) > max(1e-4, 2 * eps) * max(r2, 1e-30):
                return ClipInfo(c, False)
            scales.append(r2)
        return ClipInfo(c, False, tuple(scales))

    def _per_sample_stats(self, names, params, idx, norms, B_local, B, clip, applied_norms=None):
        """The step's :class:`PerSampleStats` at the true per-sample scale of the applied gradient, or
        ``(None, reason)``. ``norms``: of the gradients (``p.grad``); ``applied_norms``: of what the step applies
        when it adds an L2 weight decay ``a p`` to them. Under DDP every worker takes part in one small all-reduce
        (also a worker that could not measure its step: then nobody uses the step)."""
        local = self._local_per_sample(names, norms, B_local, clip)
        tot, cov, note = local if isinstance(local, tuple) else (None, None, local)
        n_local = B_local
        if self.world_size > 1:
            ok = tot is not None
            t = torch.stack([torch.as_tensor(tot if ok else 0.0, dtype=torch.float64).reshape(()).to(norms.device),
                             torch.tensor(float(B_local if ok else 0), dtype=torch.float64, device=norms.device),
                             torch.tensor(1.0 if ok else 0.0, dtype=torch.float64, device=norms.device)])
            torch.distributed.all_reduce(t)
            if int(round(float(t[2]))) != self.world_size:
                return None, note or "another DDP worker could not measure this step's per-sample statistics"
            tot, n_local = t[0], int(round(float(t[1])))
        if tot is None:
            return None, note
        mean_red = self.loss_reduction == "mean"
        c2 = (clip.coef ** 2) if clip is not None and clip.uniform else 1.0  # per-parameter factors: applied above
        # the applied gradient is the batch mean (loss "mean") or the batch sum ("sum") of the per-sample gradients
        gmul = 1.0 if mean_red else 1.0 / B
        pos = {nm: i for i, nm in enumerate(names)}
        sel = torch.tensor([pos[nm] for nm in cov], device=norms.device)
        gbar_sq = (norms[sel] ** 2).sum() * (gmul * gmul)
        mean_sq = tot * c2 / n_local
        if applied_norms is not None and applied_norms is not norms:
            # an L2 weight decay adds the same R = a p to every sample's gradient (in the mean's units):
            # mean_i |g_i + R|^2 = mean_i |g_i|^2 + (|gbar + R|^2 - |gbar|^2), and tr Sigma does not change
            shift = ((applied_norms[sel] ** 2).sum() - (norms[sel] ** 2).sum()) * (gmul * gmul)
            gbar_sq, mean_sq = gbar_sq + shift, mean_sq + shift
        # a trainable parameter without a gradient this step (a branch not taken) has per-sample gradients that are all
        # exactly zero: covered (it counts in d)
        cov = list(cov) + [nm for nm, p in zip(self.names, self.params) if p.requires_grad and p.grad is None]
        numel = {nm: p.numel() for nm, p in zip(self.names, self.params)}
        covered_dim = sum(numel[nm] for nm in cov)
        self._last_covered = frozenset(cov)
        return PerSampleStats(mean_sq=mean_sq, gbar_sq=gbar_sq, batch_size=B, n_samples=n_local,
                              covered_dim=covered_dim, covered=frozenset(cov)), None

    def _local_per_sample(self, names, norms, B_local, clip):
        """``(sum_i ||g_i||^2 over this worker's samples at the true scale, covered names, None)`` or a reason."""
        passes = self._pass_norms
        if self.engine is None and not self.compiled:
            return "per-sample engine off"
        if not passes:
            return "the per-sample engine saw no backward pass in this step"
        errors = [p.error for p in passes if p.error]
        if errors:
            return "a backward pass of this step could not be measured: " + errors[-1]
        if any(p.total is None for p in passes):
            return "no parameter is covered by the per-sample engine (see Monitor.uncovered_parameters())"
        n = sum(int(p.total.shape[0]) for p in passes)
        if n != B_local:
            if self._n_micro > len(passes) and not self.batch_size:
                return (f"{len(passes)} backward pass(es) went through {self._n_micro} forwards of {B_local} samples "
                        f"in all, and their per-sample gradients line up {n} rows: if the forwards are views of the "
                        f"same samples (two augmentations, R-Drop, a consistency loss), pass batch_size={n} (this "
                        "also corrects lr/B and C_sgd); if they hold different samples, call backward() once per "
                        "forward (gradient accumulation)")
            return (f"the per-sample engine saw {n} samples but the step has {B_local} (batch not on the "
                    "assumed axis? pass batch_size= and batch_axis=)")
        sizes = [int(p.total.shape[0]) for p in passes]
        if self.loss_reduction == "mean" and len(set(sizes)) > 1 and self.accumulation != "shares":
            return (f"micro-batches of unequal sizes {sizes}, each loss a mean over its own samples: the step weights "
                    "its samples unequally, so its gradient is no mean of per-sample gradients (this step is not "
                    "measured; equal micro-batches, e.g. drop_last=True, keep every step measured)")
        if clip is not None and not clip.uniform and clip.scales is None:
            return ("the gradients were changed non-uniformly between backward() and step() (e.g. "
                    "clip_grad_value_): the applied gradient has no per-sample decomposition")
        # per-parameter factors of the applied gradient (per-group clipping): each parameter's per-sample
        # gradients rescaled alike (a uniform factor is applied to the total by the caller)
        w2 = {nm: f * f for nm, f in zip(names, clip.scales)} if clip is not None and clip.scales else None
        common = set.intersection(*[p.covered for p in passes])
        cov = [nm for nm in names if nm in common]
        if not cov:
            return "no parameter is covered by the per-sample engine (see Monitor.uncovered_parameters())"
        k = len(passes)
        mean_red = self.loss_reduction == "mean"
        acc = (1.0 / k) if self.accumulation == "mean" else 1.0
        scale = self._bw_scale
        tot = None
        for sq, _, per, _ in passes:
            b = int(sq.shape[0])
            s = sum(w2[nm] * per[nm] for nm in cov) if w2 is not None else (
                sum(per[nm] for nm in cov) if len(cov) != len(per) else sq)
            # shares: every micro-batch loss is divided by the step's n samples, whatever its own size
            alpha = (1.0 / (n if self.accumulation == "shares" else b) if mean_red else 1.0) * \
                (1.0 if self.accumulation == "shares" else acc) * (scale or 1.0)
            v = s.sum() / (alpha * alpha)
            tot = v if tot is None else tot + v
        shared = self.engine.shared_last if self.engine is not None else {}
        if any(nm in shared for nm in cov):
            # a loss term of the parameters alone (a regulariser) adds the same R to every sample's gradient:
            # sum_i |g_i + R|^2 = sum_i |g_i|^2 + n (2 R.gbar - |R|^2), gbar the step's mean gradient (R in the
            # gradients' units: a mean over micro-batches, GradScaler's scale divided out)
            if not mean_red:
                return ("a loss term of the parameters alone (a regulariser) with loss_reduction='sum': its share of "
                        "each sample's gradient is not defined")
            m = (1.0 if self.accumulation in ("mean", "shares") else 1.0 / k) / (scale or 1.0)
            tot = tot + n * m * m * sum((w2[nm] if w2 is not None else 1.0) * (2.0 * shared[nm][0] - shared[nm][1])
                                        for nm in cov if nm in shared)
        return tot, cov, None

    def _opt_post_hook(self, optimizer, args, kwargs):
        if self._internal or self._ctx is None:
            return
        for q in self.quantities:
            if q.tier == 2 or not (q.every_measured_step or q.due(self.step_count) or (q.tier == 1 and self._tier1_now)):
                continue
            self._add(q.post_step(self._ctx))

    # ------------------------------------------------------------------ API
    def step(self, loss=None) -> dict | None:
        """Close the current training step (call after ``optimizer.step()`` / ``scaler.update()``).

        ``loss`` (a scalar tensor or a float) is recorded as the step's loss; ``None`` uses the loss the
        model returned itself (e.g. a Hugging Face model's ``outputs.loss``), if any. Returns the history
        row when this step ends a logging interval, else ``None``.
        """
        if self._closed:
            raise RuntimeError("Monitor is closed")
        if loss is not None:
            if isinstance(loss, torch.Tensor):
                if loss.numel() != 1:
                    raise ValueError(f"Monitor.step(loss): loss must be a scalar (a 0-d tensor or a float), got a "
                                     f"tensor of shape {tuple(loss.shape)}; reduce it first (e.g. loss.mean())")
                self._check_reduction(loss)
                loss = loss.detach() if loss.dim() == 0 else loss.detach().reshape(())
            else:
                try:
                    loss = float(loss)
                except (TypeError, ValueError) as exc:
                    raise TypeError(f"Monitor.step(loss): loss must be a scalar tensor or a float, got "
                                    f"{type(loss).__name__}") from exc
        elif self._model_losses:
            loss = torch.stack(self._model_losses).mean() if len(self._model_losses) > 1 else self._model_losses[0]
        return self._finish_step(loss)

    def _finish_step(self, loss, auto: bool = False):
        """Close the step (what :meth:`step` does once ``loss`` is checked). ``auto``: closed by the next
        ``optimizer.step()`` (no ``mon.step()`` between two optimizer steps): no loss, and tier 2 waits for a step
        closed by ``mon.step()`` (not evaluated inside the optimizer's hook)."""
        deferred = False
        if not self._captured:
            if self._pending is not None:  # two mon.step() calls with no backward between: decide the earlier one
                self._resolve_pending()
            if self._n_micro and self._maybe_micro_step():
                # decided at the next backward pass / optimizer step (_resolve_pending)
                self._pending = {"step": self.step_count, "n_micro": self._n_micro, "n_samples": self._n_samples,
                                 "tasks": list(self._count_tasks), "passes": list(self._pass_norms),
                                 "sig": self._grad_signature(), "blind": self._blind, "versions": self._versions}
                deferred = True
            elif not self._n_micro and not self._measure and any(p.grad is not None for p in self.params):
                # an unmeasured step (nothing counted) whose gradients the optimizer did not apply: if they are
                # still accumulating, the optimizer's step holds samples nobody counted, and is left unmeasured
                self._pending = {"step": self.step_count, "n_micro": 0, "n_samples": 0, "tasks": [], "passes": [],
                                 "sig": self._grad_signature(), "blind": True, "versions": None}
                deferred = True
            else:
                self._record_skip(self.step_count, self._n_micro)
        else:
            if loss is not None:
                self._add({"loss": loss})
            for q in (self.curvature, self.probe):
                if q is None or auto or not q.due(self.step_count):
                    continue
                with self._aside():
                    self._add(q.post_step(self._ctx))
            self._steps_in_interval += 1
        self.step_count += 1
        if deferred and self.engine is not None and not self.engine.enabled and self._tier1_due(self.step_count):
            self._tier1_owed = True  # tier 1 falls due in the middle of an optimizer step: taken at the next one
        # a deferred step: the rest of the optimizer's step is measured (counted), so that it is complete or known not
        # to be
        self._measure = self._measured(self.step_count) or deferred or self._tier1_owed
        if self.engine is not None:
            self.engine.reset()
            if not deferred:  # a deferred step's gradient sums go on (the gradients may still be accumulating)
                self._engine_next_step()
        self._reset_step()
        if self.step_count % self.log_every == 0:
            return self.flush()
        return None

    def _gather(self):
        """The interval's values as host floats, with one synchronisation."""
        tens, slots = [], []
        out = {}
        for k, lst in self._vals.items():
            out[k] = list(lst)
            for j, v in enumerate(lst):
                if isinstance(v, torch.Tensor):
                    tens.append(v if v.dim() == 0 else v.reshape(()))
                    slots.append((k, j))
                else:
                    out[k][j] = float(v)
        if tens:
            groups: dict = {}
            for i, t in enumerate(tens):
                groups.setdefault((t.device, t.dtype), []).append(i)
            order = [i for ids in groups.values() for i in ids]
            parts = [torch.stack([tens[i] for i in ids]).detach().to("cpu", torch.float64) for ids in groups.values()]
            flat = (parts[0] if len(parts) == 1 else torch.cat(parts)).tolist()
            for i, v in zip(order, flat):
                k, j = slots[i]
                out[k][j] = v
        return out

    def _check_group_lrs(self, stacklevel=4):
        """One warning, the first time the optimizer's parameter groups that train something hold different
        learning rates (at construction, or later: a scheduler with one factor per group), since lr/B, D and C_sgd
        use one of them (:func:`_first_lr`: the first group with a trainable parameter)."""
        if self._lr_groups_warned:
            return
        lrs = {float(g["lr"]) for g in self.optimizer.param_groups if any(p.requires_grad for p in g["params"])}
        if len(lrs) > 1:
            self._lr_groups_warned = True
            steps = getattr(self, "step_count", 0)
            when = f"in the row ending at step {steps - 1}" if steps else "at construction"
            warnings.warn(f"the optimizer's parameter groups have different learning rates {sorted(lrs)} ({when}): "
                          f"lr/B, D and C_sgd use {_first_lr(self.optimizer):g}, the first group's that trains a "
                          "parameter", RuntimeWarning, stacklevel=stacklevel)

    def flush(self) -> dict | None:
        """Synchronise once, finish the interval's row, write it to the sinks."""
        if not self._vals and not self._skipped:
            return None
        self._check_group_lrs()  # from step(): the warning points at the mon.step(...) line
        vals = self._gather()
        sums = {k: _sum(v) for k, v in vals.items()}
        counts = {k: len(v) for k, v in vals.items()}
        self.interval_values = vals
        grads_bad = "grad_sq" in sums and not math.isfinite(sums["grad_sq"])
        if grads_bad:
            self._report_nonfinite()  # raises, or warns once naming the parameter
        row = {"step": self.step_count - 1, "steps": self._steps_in_interval, "skipped_steps": self._skipped,
               "lr": (sums["step_lr"] / counts["step_lr"] if counts.get("step_lr") else _first_lr(self.optimizer)),
               "lr_kind": "sgd_equivalent" if self.optimizer_kind in ("adaptive", "other") else self.optimizer_kind}
        if counts.get("loss"):
            row["loss"] = sums["loss"] / counts["loss"]
        ictx = IntervalContext(step=row["step"], sums=sums, counts=counts, values=vals, dim=self._step_dim,
                               D_given=self.D, D_last=self.last_measured_D,
                               D_last_rel_se=self.last_measured_D_rel_se, optimizer_kind=self.optimizer_kind,
                               extra={"per_sample_note": self._notes[-1] if self._notes else None})
        # tier 1 first: its D enters C (tier 0) and eta_opt (tier 2)
        ordered = sorted(self.quantities, key=lambda q: 0 if q is self.noise else 1)
        for q in ordered:
            part = self._finalize(q, ictx)
            if q is self.noise:
                if part.get("D") is not None and part["D"] > 0:
                    ictx.D_measured = part["D"]
                    self.last_measured_D = part["D"]
                    ictx.D_last = part["D"]
                    self.last_measured_D_rel_se = ictx.extra.get("D_rel_se")
                    ictx.D_last_rel_se = self.last_measured_D_rel_se
                if part:
                    part["noise_estimator"] = self.noise_estimator_summary()
                    if part.get("clipped_steps"):
                        self.events.append({"step": row["step"], "event": "clipped",
                                            "clip_coef": part.get("clip_coef"), "steps": part["clipped_steps"]})
            row.update(part)
        cov = row.get("noise_coverage")
        unc = self.uncovered_parameters() if cov is not None and cov < self.coverage_warning else {}
        if cov is not None and cov < self.coverage_warning and not unc and row.get("noise_note"):
            # every parameter is coverable, but this interval's measured step could not be measured: say why once
            if not self._warned_unmeasured:
                self._warned_unmeasured = True
                warnings.warn(f"no per-sample statistics in the interval ending at step {row['step']}: "
                              f"{row['noise_note']}", RuntimeWarning, stacklevel=3)
        elif cov is not None and cov < self.coverage_warning and not self._warned_coverage:
            self._warned_coverage = True
            why = "; ".join(f"{n}: {r}" for n, r in list(unc.items())[:3])
            warnings.warn(f"the monitor's per-sample statistics cover {100 * cov:.1f}% of the parameters' dimension "
                          f"(below {100 * self.coverage_warning:.0f}%): tr_sigma, B_simple, D and C are over the "
                          f"covered parameters only ({len(unc)} uncovered; {why}; see mon.uncovered_parameters(); "
                          "probe_every= with loss_fn= and hessian_batch= gives exact statistics of every parameter "
                          "on a fixed probe batch)", RuntimeWarning, stacklevel=3)
        if not grads_bad:
            self._check_row(row)
        self._update_regime(row)
        self.history.append(row)
        for s in self.sinks:
            s.write(row)
        self._reset_interval()
        return row

    def _update_regime(self, row):
        """The row's regime and phase-transition event, from one quantity: ``C_sgd`` until a row first has a finite
        ``C``, then ``C`` for good (``regime_from`` says which). A row without a value of its source (no tier-1 step in
        it, ``D = 0`` at ``lr = 0``) carries the regime and adds nothing to the drop detector: ``C_sgd`` and ``C``
        differ by the factor ``tr Sigma / 2``, so a tracker fed both would see drops and regimes that are only the
        change of quantity."""
        C = row.get("C")
        if self.regime_source != "C" and C is not None and math.isfinite(C):
            self.regime_source = "C"
        elif self.regime_source is None and row.get("C_sgd") is not None:
            self.regime_source = "C_sgd"
        src = self.regime_source
        row["regime_from"] = src
        if src is None:
            row.update(regime=None, regime_changed=False, phase_transition=False)
            return
        reg, det = (self.regime, self.transitions) if src == "C" else (self._sgd_regime, self._sgd_transitions)
        value = row.get(src)
        first = reg.current is None
        regime, changed = reg.update(value)
        row["regime"] = regime
        row["regime_changed"] = changed and not first
        ev = det.update(row["step"], value)
        row["phase_transition"] = ev is not None
        if ev is not None:
            ev["source"] = src
            # C = ||g||^2/(D d) with D = lr tr Sigma/(2 B d), and C_sgd = ||g||^2 B/lr, fall as 1/lr: a drop that comes
            # with lr rising (a warm-up) is partly the schedule's; the event carries both learning rates
            before = next((r for r in reversed(self.history) if r.get(src) == ev["C_before"]), None)
            ev["lr_before"] = before.get("lr") if before is not None else None
            ev["lr_after"] = row.get("lr")
            self.events.append(ev)
        if changed:
            ev = {"step": row["step"], "event": "regime", "regime": regime, "C": value, "source": src}
            if first:
                ev["initial"] = True  # the first label from this source (the first label, or C taking over), not a change
            self.events.append(ev)

    def _finalize(self, q, ictx):
        """``q.finalize(ictx)``; quantities written for the former ``finalize(sums, counts, monitor)`` still work
        (with a one-time DeprecationWarning)."""
        n = self._finalize_arity.get(id(q))
        if n is None:
            import inspect

            try:
                n = len(inspect.signature(q.finalize).parameters)
            except (TypeError, ValueError):
                n = 1
            self._finalize_arity[id(q)] = n
        if n == 3:
            warnings.warn(f"{type(q).__name__}.finalize(sums, counts, monitor) is the former signature: write "
                          "finalize(ictx) (an hhld.torch.quantities.IntervalContext)", DeprecationWarning, stacklevel=3)
            return q.finalize(ictx.sums, ictx.counts, self)
        return q.finalize(ictx)

    def _check_row(self, row):
        """No silent NaN or inf: a non-finite value in the row raises (``on_nonfinite="raise"``) or warns and
        is recorded (the loss included)."""
        bad = [k for k, v in row.items() if isinstance(v, float) and not math.isfinite(v)]
        if not bad:
            return
        msg = (f"non-finite monitor values {bad} in the interval ending at step {row['step']} "
               "(a non-finite loss, or an overflow in a custom quantity?)")
        if self.on_nonfinite == "raise":
            raise NonFiniteError(msg, step=row["step"], quantity=bad[0])
        warnings.warn(msg, RuntimeWarning, stacklevel=3)
        self.events.append({"step": row["step"], "event": "nonfinite_value", "keys": bad})

    def _report_nonfinite(self):
        for step, names, per in self._per_param_steps:
            bad = (~torch.isfinite(per)).nonzero()
            if len(bad):
                name = names[int(bad[0])]
                msg = f"non-finite gradient in parameter {name!r} at step {step}"
                if self.on_nonfinite == "raise":
                    raise NonFiniteError(msg, step=step, quantity=name)
                warnings.warn(msg + "; the interval's statistics are NaN/inf", RuntimeWarning, stacklevel=3)
                self.events.append({"step": step, "event": "nonfinite_gradient", "parameter": name})
                return

    # ------------------------------------------------------------------ introspection
    def noise_estimator_summary(self) -> str:
        """Which per-sample rule serves which parameters, e.g. ``"linear=4; embedding=1; uncovered=2"``."""
        if self.engine is None:
            return "off" if not self.compiled else f"functional recomputation (compiled model)={len(self.names)}"
        counts: dict = {}
        for n in self.names:
            k = self.engine.estimator.get(n) if n in self.engine.covered_ever else None
            k = k or "uncovered"
            counts[k] = counts.get(k, 0) + 1
        return "; ".join(f"{k}={v}" for k, v in sorted(counts.items()))

    def covered_parameters(self) -> list[str]:
        """The parameters the per-sample statistics covered in the last measured step."""
        return [n for n in self.names if n in self._last_covered]

    def uncovered_parameters(self) -> dict[str, str]:
        """Parameters without exact per-sample gradients and why (coupled, not seen, ...). A frozen parameter
        (``requires_grad=False``) is not part of the steps (nor of ``d``): named as such."""
        frozen = {n for n, p in zip(self.names, self.params) if not p.requires_grad}
        if self.engine is None:
            if self.compiled:
                return {n: "not covered in the last tier-1 step (functional recomputation refused: see the row's "
                           "noise_note)" for n in self.names if n not in self._last_covered and n not in frozen}
            return {n: "tier 1 is off" for n in self.names if n not in frozen}
        out = {}
        for n in self.names:
            if n in frozen:
                out[n] = "frozen (requires_grad=False): not part of the steps, nor of the dimension d"
            elif n in self._last_covered:  # covered in the last tier-1 step (also: no gradient there, all zeros)
                continue
            elif n in self.engine.reasons:
                out[n] = self.engine.reasons[n]
            elif n not in self.engine.covered_ever:
                out[n] = "not seen yet (no tier-1 step has run)"
        return out

    @contextlib.contextmanager
    def _aside(self):
        """An evaluation beside training (tier 2, the probe, :meth:`noise_stats`): the monitor's hooks and the
        per-sample engine stand aside. Their forward passes (:func:`~hhld.torch.hessian.make_hvp`'s,
        :func:`~hhld.torch.noise.gradient_noise_stats`') leave training as it was themselves
        (:func:`hhld.torch.untouched.untouched`; until 2026-12-02 they updated BatchNorm's running statistics and
        moved every later dropout mask)."""
        self._internal = True
        enabled = self.engine.enabled if self.engine else None
        if self.engine:
            self.engine.enabled = False
        try:
            yield
        finally:
            self._internal = False
            if self.engine:
                self.engine.enabled = enabled

    def noise_stats(self, loss_fn, inputs, targets, **kw):
        """On-demand :func:`hhld.torch.noise.gradient_noise_stats` on a batch (exact fallbacks)."""
        with self._aside():
            kw.setdefault("lr", _first_lr(self.optimizer))
            kw.setdefault("loss_reduction", self.loss_reduction)
            kw.setdefault("l2_decay", self.l2_decay())
            return gradient_noise_stats(self.inner, loss_fn, inputs, targets, **kw)

    def l2_decay(self) -> dict:
        """``{parameter name: a}`` for the monitored parameters whose gradient the optimizer's step turns into
        ``p.grad + a p`` (an L2 weight decay, :func:`l2_weight_decay`): what the rows, :meth:`noise_stats` and the
        probe columns add to ``p.grad``."""
        alphas, _ = l2_weight_decay(self.optimizer)
        return {nm: alphas[id(p)] for nm, p in zip(self.names, self.params) if alphas.get(id(p))}

    def to_dataframe(self):
        import pandas as pd

        return pd.DataFrame(self.history)

    def plot(self, path=None, **kw):
        """A multi-panel figure of the history (:func:`hhld.torch.plotting.plot_monitor`)."""
        from .plotting import plot_monitor

        return plot_monitor(self, path=path, **kw)

    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran (no hooks; :meth:`step` and :meth:`state_dict` refuse)."""
        return self._closed

    # ------------------------------------------------------------------ checkpoints
    #: the flags of the one-time warnings a resumed monitor keeps (a warning given before the checkpoint is not given
    #: again)
    _WARNED = ("_warned_unmeasured", "_warned_reduction", "_warned_views", "_warned_no_step", "_warned_micro",
               "_warned_auto", "_warned_coverage", "_lr_groups_warned", "_warned_decay",
               "_warned_stale", "_warned_zero", "_warned_unscale")
    STATE_FORMAT = "hhld.torch.Monitor/1"

    def state_dict(self) -> dict:
        """The monitor's state between two optimizer steps (after ``mon.step()``), so that a training run resumed
        from a checkpoint continues the same rows, events, regimes and open windows as if it had never stopped:
        the history and events, the step count, the open logging interval's values, the regime and
        phase-transition trackers, each quantity's :meth:`~hhld.torch.Quantity.state_dict` (the uncertainty
        window's running sums, the curvature probes' generator, ...), the per-sample engine's learned batch axis,
        check cadence and which rule served which parameter, and which one-time warnings were given.

        Plain Python values and tensors only: ``torch.save(mon.state_dict(), f)`` and
        ``torch.load(f, weights_only=True)`` (no pickled objects). Restore it with :meth:`load_state_dict` on a
        monitor built the same way for the restored model and optimizer. Raises ``RuntimeError`` in the middle
        of an optimizer step (``backward()`` or ``optimizer.step()`` ran since the last ``mon.step()``)."""
        if self._closed:
            raise RuntimeError("Monitor is closed: take state_dict() before close()")
        if self._captured or self._n_micro or self._pending is not None:
            raise RuntimeError("Monitor.state_dict() is taken between optimizer steps, after mon.step(): this "
                               f"monitor is in the middle of step {self.step_count} (backward() or optimizer.step() "
                               "ran since the last mon.step()); call mon.step() first")
        eng = None
        if self.engine is not None:
            e = self.engine
            eng = {"learned_axis": e._learned_axis, "step_idx": int(e._step_idx), "covered_ever": sorted(e.covered_ever),
                   "coupled": sorted(e.coupled), "estimator": dict(e.estimator), "reasons": dict(e.reasons),
                   "notes": list(e.notes), "sum_failed": dict(e._sum_failed)}
        return {
            "format": self.STATE_FORMAT,
            "names": list(self.names),
            "step_count": int(self.step_count),
            "history": [dict(r) for r in self.history],
            "events": [dict(e) for e in self.events],
            "last_measured_D": self.last_measured_D,
            "last_measured_D_rel_se": self.last_measured_D_rel_se,
            "regime_source": self.regime_source,
            "last_covered": sorted(self._last_covered),
            "interval": {"values": self._gather(), "steps": int(self._steps_in_interval),
                         "skipped": int(self._skipped), "notes": list(self._notes),
                         "per_param": [[int(s), list(n), v.detach().clone()] for s, n, v in self._per_param_steps]},
            "trackers": {k: getattr(self, k).state_dict()
                         for k in ("regime", "transitions", "_sgd_regime", "_sgd_transitions")},
            "quantities": [{"name": q.name, "type": type(q).__name__, "state": q.state_dict()}
                           for q in self.quantities],
            "engine": eng,
            "tier1_owed": bool(self._tier1_owed),
            "misordered": bool(self._misordered),
            "warned": {k: bool(getattr(self, k)) for k in self._WARNED},
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from :meth:`state_dict` (see there). The monitor must watch the same parameters (by name) with
        the same quantities, and must not have taken a step yet; ``log_every`` may differ (rows are then written
        on the new cadence)."""
        if not isinstance(state, dict) or state.get("format") != self.STATE_FORMAT:
            got = state.get("format") if isinstance(state, dict) else type(state).__name__
            raise ValueError(f"not a Monitor state_dict (format {self.STATE_FORMAT!r}), got {got!r}")
        if self.step_count or self.history or self._captured or self._n_micro:
            raise RuntimeError("Monitor.load_state_dict() goes on a new monitor, before its first step; this one has "
                               f"taken {self.step_count} step(s)")
        if list(state["names"]) != list(self.names):
            missing = sorted(set(state["names"]) - set(self.names))
            extra = sorted(set(self.names) - set(state["names"]))
            raise ValueError("the checkpointed monitor watched other parameters: "
                             f"{len(state['names'])} then, {len(self.names)} now (missing now: {missing[:5]}, new: "
                             f"{extra[:5]}); build the monitor for the same model and optimizer")
        qs = [(q["name"], q["type"]) for q in state["quantities"]]
        here = [(q.name, type(q).__name__) for q in self.quantities]
        if qs != here:
            raise ValueError(f"the checkpointed monitor had the quantities {qs}, this one {here}: build it with the "
                             "same window=, tier1_every=, loss_fn=/hessian_batch= and extra_quantities=")
        for q, qs_ in zip(self.quantities, state["quantities"]):
            q.load_state_dict(qs_["state"])
        for k, v in state["trackers"].items():
            getattr(self, k).load_state_dict(v)
        self.step_count = int(state["step_count"])
        self.history = [dict(r) for r in state["history"]]
        self.events = [dict(e) for e in state["events"]]
        self.last_measured_D = state["last_measured_D"]
        self.last_measured_D_rel_se = state["last_measured_D_rel_se"]
        self.regime_source = state["regime_source"]
        self._last_covered = frozenset(state["last_covered"])
        iv = state["interval"]
        self._reset_interval()
        self._vals = {k: list(v) for k, v in iv["values"].items()}
        self._steps_in_interval, self._skipped = int(iv["steps"]), int(iv["skipped"])
        self._notes = list(iv["notes"])
        self._per_param_steps = [(int(s), tuple(n), v) for s, n, v in iv["per_param"]]
        for k, v in state["warned"].items():
            if k in self._WARNED:
                setattr(self, k, bool(v))
        self._tier1_owed, self._misordered = bool(state["tier1_owed"]), bool(state["misordered"])
        if self.engine is not None and state["engine"] is not None:
            e, es = self.engine, state["engine"]
            e._learned_axis, e._step_idx = es["learned_axis"], int(es["step_idx"])
            e.covered_ever, e.coupled = set(es["covered_ever"]), set(es["coupled"])
            e.estimator, e.reasons, e._sum_failed = dict(es["estimator"]), dict(es["reasons"]), dict(es["sum_failed"])
            e.notes = list(es["notes"])
        self._reset_step()
        self._measure = self._measured(self.step_count) or self._tier1_owed
        if self.engine is not None:
            self.engine.enabled = self._tier1_due(self.step_count) or self._tier1_owed

    def close(self):
        """Flush the last partial interval, remove every hook, close the sinks."""
        if self._closed:
            return
        self.flush()
        for h in self._handles:
            h.remove()
        if self.engine is not None:
            self.engine.detach()
        for s in self.sinks:
            s.close()
        self._closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
