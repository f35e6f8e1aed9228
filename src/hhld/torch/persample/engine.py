"""Exact per-sample squared gradient norms of any model, without per-sample backward passes.

:class:`PerSampleSqNorms` watches a model's forward pass at the level of the functional ops that
consume its parameters (a ``torch.overrides.TorchFunctionMode`` pushed by a forward pre-hook of the
model and popped by its forward hook, only while ``enabled``). Every use of a parameter is
recorded with the op's inputs; a hook on the op's output receives ``dL/d(output)`` in the backward
pass, and the rules of :mod:`hhld.torch.persample.rules` turn the two into the per-sample
gradient contributions of :mod:`hhld.torch.persample.factors` (outer-product factors, no
per-sample gradient formed for Linear / conv / embedding weights). At the end of the backward pass
(an autograd end-of-graph callback) the contributions of every parameter are combined and the
per-sample squared norms ``||g_i||^2`` summed over the covered parameters are appended to
:attr:`PerSampleSqNorms.passes` as one ``(B,)`` float64 tensor per backward pass.

What is covered, and how:

* ``F.linear`` (``nn.Linear``, the projections inside ``nn.MultiheadAttention`` and any module
  that calls ``F.linear`` on its parameters), ``x @ P`` with a 2-D parameter ``P``, ``F.conv1d`` /
  ``F.conv2d`` (any groups, any padding mode), ``F.embedding`` (also ``sparse=True``), the affine
  parameters of layer / RMS / group / instance / batch norm, ``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU``
  (an exact recomputation, :mod:`hhld.torch.persample.rnn`), and a parameter used by several ops
  (tied weights, a layer called twice): all of them exact.
* Tensors without a batch axis that depend on parameters ("unbatched": a raw ``nn.Parameter``
  such as a ViT position table or class token, an embedding of ``torch.arange(T)``, a cast or
  slice of a weight) are followed through the forward pass; where such a tensor meets batched
  data (``+``, ``-``, ``*``, ``expand``, ``F.linear``, ...) the per-sample gradient of the
  unbatched tensor is the per-sample slice of that op's output gradient, mapped back to the
  parameters. Any other deterministic op that mixes parameters with batched data gets exact
  per-sample vector-Jacobian products through ``torch.func.vmap`` (checked against the op's
  output).
* The batch axis: ``batch_axis`` if given, else declared by the model's layers (``batch_first``
  of the recurrent / attention layers), else axis 0 of the model's first tensor argument (keyword
  arguments included); layers see it where their input has that size (a sequence-first input is
  found through the recurrent layers' ``batch_first=False``). A transpose or a reshape that merges
  the batch axis with the next one (``x.view(-1, E)``) is tracked. When the layers disagree about
  the batch size the pass is refused with an error that says to pass ``batch_size=``/``batch_axis=``.
* Couplings across samples are detected: a train-mode batch norm (the parameters upstream of it),
  ``scale_grad_by_freq`` embeddings, and any reduction over the batch axis whose result is combined
  with batched data again. Per-sample gradients of those parameters are not defined; they are
  *coupled* and left out of the sum (their reason says so). The batch norm's own affine parameters
  are covered with the batch statistics held fixed.
* Not covered (with the reason in :attr:`PerSampleSqNorms.reasons`): parameters used outside the
  model's forward (e.g. a regulariser in the loss), random ops on unbatched tensors, packed
  sequences and projections in recurrent layers, ops ``vmap`` cannot batch.

The norms are those of ``d(loss)/d(theta)`` restricted to one sample, i.e. they still carry the
loss's reduction factor (``1/B`` for a mean); the caller rescales.
"""
from __future__ import annotations

import contextlib
import math
import types
import warnings
import weakref
from collections import defaultdict

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from ..backward_kind import AccumulationProbe, builds_graph, inside_transform
from ..copy_inert import CopyInert
from .factors import Dense, Outer, SqNorm, per_sample_sq_norms
from .rnn import RNN_OPS, RecomputeMismatch, rnn_contribs
from .rules import (conv_contribs, conv_sketch_contribs, embedding_contribs, linear_contribs, matmul_contribs,
                    norm_contribs, sum_of_contribs)
from .sketch import ConvSketch

__all__ = ["PerSampleSqNorms", "BatchAxisError", "declared_batch_first", "HIGHER_ORDER_NOTE", "LOST_NOTE"]

#: why a parameter whose op reads rows of unknown samples is not covered
LOST_NOTE = ("its input's batch axis was lost (advanced indexing or an index_select/gather over the batch, e.g. "
             "mixture-of-experts token routing): its rows may be any samples', so per-sample gradients are not "
             "formed (the batch size is never guessed from a shape)")

#: why a step with a ``create_graph=True`` backward pass is not measured
HIGHER_ORDER_NOTE = ("create_graph=True in this step (a gradient penalty, an input-gradient regulariser, a "
                     "physics-informed loss): the parameters' gradients then hold terms through the backward graph, "
                     "which have no per-sample factors here")


class BatchAxisError(ValueError):
    """The batch axis could not be determined unambiguously."""


def declared_batch_first(model: nn.Module):
    """``True`` / ``False`` when every layer of ``model`` with a ``batch_first`` flag says so, ``None``
    when there is none, ``"mixed"`` when they disagree."""
    flags = {bool(m.batch_first) for m in model.modules() if isinstance(getattr(m, "batch_first", None), bool)}
    if not flags:
        return None
    return flags.pop() if len(flags) == 1 else "mixed"


def _first_tensor(args, kwargs):
    for a in list(args) + list(kwargs.values()):
        if isinstance(a, torch.Tensor) and a.dim() > 0:
            return a
        if isinstance(a, (list, tuple)):
            for b in a:
                if isinstance(b, torch.Tensor) and b.dim() > 0:
                    return b
        if isinstance(a, dict):
            for b in a.values():
                if isinstance(b, torch.Tensor) and b.dim() > 0:
                    return b
    return None


def _flat_tensors(x):
    if isinstance(x, torch.Tensor):
        return [x]
    if isinstance(x, (list, tuple)):
        return [t for t in x if isinstance(t, torch.Tensor)]
    return []


_RANDOM = {F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout, F.feature_alpha_dropout,
           torch.bernoulli, torch.rand_like, torch.randn_like, torch.randint_like, torch.multinomial,
           torch.normal, torch.poisson, F.gumbel_softmax, F.rrelu}
_RANDOM_NAMES = {"bernoulli_", "uniform_", "normal_", "exponential_", "geometric_", "log_normal_", "random_",
                 "cauchy_", "native_dropout", "dropout", "feature_dropout", "alpha_dropout"}
_ADD = {torch.add, torch.Tensor.add, torch.Tensor.__add__, torch.Tensor.__radd__, torch.Tensor.__iadd__,
        torch.Tensor.add_}
_SUB = {torch.sub, torch.Tensor.sub, torch.Tensor.__sub__, torch.Tensor.__isub__, torch.Tensor.sub_,
        torch.subtract}
_RSUB = {torch.Tensor.__rsub__}
_MUL = {torch.mul, torch.Tensor.mul, torch.Tensor.__mul__, torch.Tensor.__rmul__, torch.Tensor.__imul__,
        torch.Tensor.mul_, torch.multiply}
_EXPAND = {torch.Tensor.expand, torch.Tensor.expand_as, torch.broadcast_to, torch.Tensor.repeat}
_MATMUL = {torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__, torch.mm, torch.Tensor.mm}
_ADDMM = {torch.addmm, torch.Tensor.addmm}
_TRANSPOSE = {torch.transpose, torch.Tensor.transpose, torch.swapaxes, torch.Tensor.swapaxes, torch.swapdims,
              torch.Tensor.swapdims, torch.t, torch.Tensor.t, torch.permute, torch.Tensor.permute, torch.movedim,
              torch.Tensor.movedim}
_T_GET, _MT_GET = torch.Tensor.T.__get__, torch.Tensor.mT.__get__  # x.T, x.mT (properties: method wrappers)
_TRANSPOSE |= {_T_GET, _MT_GET}
_RESHAPE = {torch.reshape, torch.Tensor.reshape, torch.Tensor.view, torch.flatten, torch.Tensor.flatten,
            torch.Tensor.unflatten, torch.unflatten, torch.squeeze, torch.Tensor.squeeze, torch.unsqueeze,
            torch.Tensor.unsqueeze, torch.Tensor.view_as, torch.Tensor.reshape_as}
_REDUCE = {torch.mean, torch.Tensor.mean, torch.sum, torch.Tensor.sum, torch.var, torch.Tensor.var, torch.std,
           torch.Tensor.std, torch.var_mean, torch.std_mean, torch.amax, torch.Tensor.amax, torch.amin,
           torch.Tensor.amin, torch.logsumexp, torch.Tensor.logsumexp, torch.Tensor.max, torch.max,
           torch.Tensor.min, torch.min, torch.norm, torch.Tensor.norm, torch.prod, torch.Tensor.prod,
           torch.cumsum, torch.Tensor.cumsum, torch.linalg.vector_norm}
_RNN = {getattr(torch._C._VariableFunctions, k): k for k in RNN_OPS}
#: ops along one axis that keep its length but mix its entries: along the batch axis they mix the samples
_ALONG = {F.softmax, F.log_softmax, torch.softmax, torch.log_softmax, torch.Tensor.softmax, torch.Tensor.log_softmax,
          torch.cumsum, torch.Tensor.cumsum, torch.cumprod, torch.Tensor.cumprod, torch.cummax, torch.Tensor.cummax,
          torch.cummin, torch.Tensor.cummin, torch.logcumsumexp, torch.Tensor.logcumsumexp, torch.sort,
          torch.Tensor.sort, torch.roll, torch.Tensor.roll, torch.flip, torch.Tensor.flip}
_BATCH_MATMUL = _MATMUL | {torch.bmm, torch.Tensor.bmm}
#: elementwise ops that broadcast their tensor operands against each other (right-aligned): two batched operands
#: whose batch axes land on different axes of the broadcast shape pair every sample with every other
#: (``e[:, None] - e[None]``, ``cosine_similarity(a[:, None], b[None], dim=-1)``)
_BROADCASTING = (_ADD | _SUB | _RSUB | _MUL | {
    torch.div, torch.Tensor.div, torch.Tensor.__truediv__, torch.Tensor.__rtruediv__, torch.true_divide,
    torch.Tensor.div_, torch.pow, torch.Tensor.pow, torch.Tensor.__pow__, torch.Tensor.__rpow__, torch.maximum,
    torch.minimum, torch.fmax, torch.fmin, torch.atan2, torch.hypot, torch.where, torch.lerp, torch.Tensor.lerp,
    torch.addcmul, torch.addcdiv, torch.Tensor.addcmul, torch.Tensor.addcdiv, F.cosine_similarity,
    F.pairwise_distance, torch.dist, torch.Tensor.dist, torch.clamp, torch.Tensor.clamp,
    torch.clip, torch.Tensor.clip})
#: ops linear in a statistic over the batch (a sum, a mean, a rescaling, a rearrangement): the statistic's
#: gradient reaches every sample with a weight that does not depend on the batch
_LINEAR_IN_STAT = (_ADD | _SUB | _RSUB | _MUL | _RESHAPE | _TRANSPOSE | _EXPAND | {
    torch.Tensor.__getitem__, torch.neg, torch.Tensor.neg, torch.Tensor.__neg__, torch.div, torch.Tensor.div,
    torch.Tensor.__truediv__, torch.true_divide, torch.sum, torch.Tensor.sum, torch.mean, torch.Tensor.mean,
    torch.cat, torch.concat, torch.stack, torch.Tensor.clone, torch.Tensor.contiguous, torch.Tensor.to,
    torch.Tensor.float, torch.Tensor.double, torch.Tensor.type_as, torch.Tensor.detach})
#: ops that pair the rows of their operands by construction (a distance or inner-product matrix, an outer product)
_PAIRING = {torch.cdist, torch.inner, torch.Tensor.inner, torch.outer, torch.Tensor.outer, torch.ger,
            torch.Tensor.ger, F.pdist, torch.tensordot, torch.einsum}

#: ops that gather entries along one axis by an index tensor: along the batch axis the rows are of unknown samples
_GATHER = {getattr(owner, name) for owner in (torch, torch.Tensor)
           for name in ("index_select", "gather", "take_along_dim") if hasattr(owner, name)}
_TAKE_ALONG = {f for f in _GATHER if f.__name__ == "take_along_dim"}
#: ops that put rows back in place by an index or a mask (``out.index_add(0, idx, y)``, ``out[m] = y``, ``scatter``):
#: token routing writes each routed row back where it came from, so their rows of unknown samples are not a mixing
_PLACING = {getattr(owner, name) for owner in (torch, torch.Tensor)
            for name in ("index_add", "index_add_", "index_copy", "index_copy_", "index_put", "index_put_", "scatter",
                         "scatter_", "scatter_add", "scatter_add_", "scatter_reduce", "scatter_reduce_",
                         "masked_scatter", "masked_scatter_", "__setitem__") if hasattr(owner, name)}

_NO_TENSOR_OUT = {torch.Tensor.dim, torch.Tensor.size, torch.Tensor.numel, torch.Tensor.__len__,
                  torch.Tensor.stride, torch.Tensor.is_contiguous, torch.Tensor.element_size, torch.Tensor.item,
                  torch.Tensor.tolist, torch.Tensor.__bool__, torch.Tensor.data_ptr}


class _PerForward:
    counter = 0


def _flat_all(xs):
    out = []
    for a in xs:
        if isinstance(a, torch.Tensor):
            out.append(a)
        elif isinstance(a, (list, tuple)):
            out.extend(_flat_all(a))
        elif isinstance(a, dict):
            out.extend(_flat_all(list(a.values())))
    return out
_NORMS = {F.layer_norm: "layer_norm", F.group_norm: "group_norm", F.instance_norm: "instance_norm",
          F.batch_norm: "batch_norm"}
if hasattr(F, "rms_norm"):
    _NORMS[F.rms_norm] = "rms_norm"


def _mha_body():
    """``F.multi_head_attention_forward`` with its own torch-function dispatch disabled, so that the
    functional ops inside it (the in/out projections) reach the mode. Same code, same numbers."""
    f = F.multi_head_attention_forward
    g = dict(f.__globals__)
    g["has_torch_function"] = lambda *a: False
    body = types.FunctionType(f.__code__, g, f.__name__, f.__defaults__, f.__closure__)
    body.__kwdefaults__ = f.__kwdefaults__
    return body


# --------------------------------------------------------------------------- targets and tags
class _Target:
    """Where a contribution goes: a parameter (``name``) or a tag (an unbatched tensor that maps per-sample
    gradients back to parameters)."""

    __slots__ = ("name", "tag")

    def __init__(self, name=None, tag=None):
        self.name, self.tag = name, tag


class _Tag:
    """An unbatched tensor that depends on parameters. ``backprop(contrib)`` maps a contribution for
    this tensor (per-sample gradients w.r.t. it) to contributions for its sources."""

    __slots__ = ("tensor", "backprop", "params", "poison")

    def __init__(self, tensor, backprop, params, poison=None):
        self.tensor, self.backprop, self.params, self.poison = tensor, backprop, params, poison


class _Use:
    """One recorded op whose output gradient gives contributions."""

    __slots__ = ("kind", "inputs", "targets", "outputs", "grads", "extra", "n_out", "done")

    def __init__(self, kind, inputs, targets, outputs, extra=None):
        self.kind, self.inputs, self.targets = kind, inputs, targets
        self.outputs = outputs
        self.n_out = len(outputs)
        self.grads = [None] * self.n_out
        self.extra = extra or {}
        self.done = False


class _Mode(TorchFunctionMode):
    """The engine's function mode: on from the model's forward until the backward pass starts.

    ``trailing``: the forward has returned and the loss is being computed from its outputs (only batch
    mixing is looked for); ``live`` False: the backward pass has started, every call passes through until the
    engine takes the mode off the stack at a safe point (it is never taken off out of order)."""

    def __init__(self, engine):
        super().__init__()
        self.engine = engine
        self.trailing = False
        self.live = True

    def __torch_function__(self, func, types_, args=(), kwargs=None):
        kwargs = kwargs or {}
        if not self.live:
            return func(*args, **kwargs)
        if self.trailing:
            return self.engine._dispatch_trailing(self, func, args, kwargs)
        return self.engine._dispatch(func, args, kwargs)


_STACK_LEN = getattr(torch._C, "_len_torch_function_stack", None)


def _pop_inert_modes() -> None:
    """Take the engines' inert function modes (their backward pass has started) off the top of this thread's
    mode stack; a mode pushed after one and still open keeps it there (passing every call through)."""
    if _STACK_LEN is not None and _STACK_LEN() == 0:  # the common case, every step: no mode at all
        return
    try:
        stack = torch.overrides._get_current_function_mode_stack()
    except Exception:  # noqa: BLE001 - a torch without the accessor: they stay inert
        return
    while stack and isinstance(stack[-1], _Mode) and not stack[-1].live:
        top = stack[-1]
        top.__exit__(None, None, None)
        top.trailing = False
        stack = torch.overrides._get_current_function_mode_stack()


#: calls that start a backward pass: the loss is complete, the trailing watch ends
_BACKWARD_CALLS = {torch.Tensor.backward, torch.autograd.backward, torch.autograd.grad}


# ------------------------------------------------------------ reentrant activation checkpointing
# ``torch.utils.checkpoint.checkpoint(fn, *args, use_reentrant=True)`` (torch's default when use_reentrant is not
# given, and Hugging Face's gradient checkpointing) runs ``fn`` under no_grad and again inside the backward pass,
# where no forward hook or function mode of the engine sees it: its parameters would be uncovered. While an
# enabled engine watches a forward (its function mode is on this thread's mode stack), the segment is run
# directly instead: the same operations, the same random numbers (one forward), the same gradients; the
# difference is memory (the segment's activations are kept until the backward pass, as the engine keeps every
# covered layer's input anyway). Anywhere else the call goes to torch unchanged.
_CKPT_APPLY: list = []  # [torch's CheckpointFunction.apply] once the bypass is installed


def _watching_engine():
    try:
        stack = torch.overrides._get_current_function_mode_stack()
    except Exception:  # noqa: BLE001 - a torch without it: no bypass
        return None
    for m in reversed(stack):
        if isinstance(m, _Mode) and m.engine._enabled and m.engine._in_mode:
            return m.engine
    return None


def _checkpoint_apply(*args):
    """``CheckpointFunction.apply(run_function, preserve_rng_state, *inputs)``, bypassed under a watching engine
    when the segment would be differentiated at all (an input that requires grad, gradients enabled)."""
    eng = _watching_engine()
    if (eng is not None and torch.is_grad_enabled() and len(args) >= 2
            and any(isinstance(a, torch.Tensor) and a.requires_grad for a in args[2:])):
        eng.checkpoint_segments += 1
        return args[0](*args[2:])
    return _CKPT_APPLY[0](*args)


def _install_checkpoint_bypass() -> None:
    if _CKPT_APPLY:
        return
    try:
        from torch.utils import checkpoint as ck
        cls = ck.CheckpointFunction
        orig = cls.apply
    except Exception:  # noqa: BLE001 - no reentrant checkpoint in this torch: nothing to do
        return
    _CKPT_APPLY.append(orig)
    cls.apply = staticmethod(_checkpoint_apply)


# --------------------------------------------------------------------------- the engine
class PerSampleSqNorms:
    """Per-sample squared gradient norms of ``params`` (default: the trainable parameters of ``model``).

    Use as a context manager or call :meth:`attach` / :meth:`detach`. After each backward pass the
    per-sample squared norms of that pass, summed over the covered parameters, are appended to
    :attr:`passes` as a ``(B,)`` float64 tensor (``None`` when the pass could not be measured, with the
    reason in :attr:`notes`); :attr:`covered_last` names the parameters they include, :attr:`reasons`
    says why any other parameter is not covered, :attr:`estimator` names the rule of each covered
    parameter, :attr:`coupled` the parameters whose samples are coupled (train-mode batch norm).

    ``conv_estimator``: ``"exact"`` (default), ``"sketch"`` (:mod:`hhld.torch.persample.sketch`) or
    ``"auto"`` (the sketch when the exact form costs more than about the sketch,
    ``p q > max(k, 2) (p + q)`` for ``p = in*kernel``, ``q = out``). ``batch_axis``: the batch axis of the
    model's first tensor argument (``None``: found, see the module doc). ``check_every``: on every
    ``check_every``-th step (see :meth:`step_done`) the per-sample gradients' sum is compared with the
    gradient autograd accumulated for each covered parameter; a parameter that fails (e.g. also used by a
    regulariser in the loss) is dropped with that reason. ``passes``: which backward passes are measured,
    ``"all"`` (default: ``loss.backward()`` and ``torch.autograd.grad(loss, params)`` alike) or
    ``"accumulating"`` (only passes that write the parameters' ``.grad``, as the monitor needs: a
    ``torch.autograd.grad`` call in the training step, such as a saliency map, leaves the step's forward
    to its ``backward()``). Either way a step with a ``create_graph=True`` pass is not measured
    (:data:`HIGHER_ORDER_NOTE`).
    """

    def __init__(self, model: nn.Module, params: dict | None = None, on_pass_end=None,
                 conv_estimator: str = "exact", conv_probes: int = 4, seed: int = 0, batch_axis: int | None = None,
                 check_every: int | None = 10, passes: str = "all"):
        if passes not in ("all", "accumulating"):
            raise ValueError(f"passes must be 'all' or 'accumulating', got {passes!r}")
        if conv_estimator not in ("exact", "sketch", "auto"):
            raise ValueError(f"conv_estimator must be 'exact', 'sketch' or 'auto', got {conv_estimator!r}")
        if isinstance(conv_probes, bool) or int(conv_probes) < 1:
            raise ValueError(f"conv_probes must be an integer >= 1, got {conv_probes!r}")
        if batch_axis not in (None, 0, 1):
            raise ValueError(f"batch_axis must be 0, 1 or None, got {batch_axis!r}")
        if check_every is not None and (isinstance(check_every, bool) or int(check_every) < 1):
            raise ValueError(f"check_every must be an integer >= 1 or None, got {check_every!r}")
        self.model = model
        self.on_pass_end = on_pass_end
        if params is None:
            params = {n: p for n, p in model.named_parameters() if p.requires_grad}
        self.params = dict(params)
        self._pid = {id(p): n for n, p in self.params.items()}
        self.conv_estimator = conv_estimator
        self.conv_probes = int(conv_probes)
        self.sketch = ConvSketch(self.conv_probes, seed)
        self.batch_axis = batch_axis
        self.check_every = check_every
        declared = declared_batch_first(model)
        self._declared_axis = {True: 0, False: 1}.get(declared) if declared != "mixed" else None
        self._learned_axis = None
        self._probe = AccumulationProbe(self.params.values()) if passes == "accumulating" else (lambda: True)
        self._attached = False
        self.checkpoint_segments = 0  # reentrant checkpoint segments run directly while watched (see above)
        self._handles: list = []
        self._depth = 0
        self._enabled = True
        self.passes: list = []
        self.covered_last: set[str] = set()
        self.covered_ever: set[str] = set()
        self.coupled: set[str] = set()
        self.reasons: dict[str, str] = {}
        self.estimator: dict[str, str] = {}
        self.notes: list[str] = []
        self.last_reduced: dict = {}
        #: a parameter also in a loss term of its own (``loss = ce + lam * sum(p.pow(2).sum() ...)``, computed after
        #: the forward from the parameters alone): every sample's gradient holds that term's gradient ``R`` (the
        #: same for all), which is what autograd's gradient has beyond the per-sample pieces. ``shared_last``:
        #: ``{name: (R . grad, |R|^2)}`` for the step so far (what a sum over the samples of ``|g_i + R|^2`` needs;
        #: the per-sample entries in ``passes`` are without it). ``shared_terms=False``: such a parameter fails the
        #: sum check instead (the monitor under DDP, whose gradients are all-reduced)
        self.shared_last: dict = {}
        self.shared_terms = True
        self.last_error = None
        self._mode = _Mode(self)
        self._in_mode = False
        self._step_idx = 0
        self._measured_in_step = False
        self._sum_acc: dict = {}
        self._sum_failed: dict = {}  # name -> why, from the last sum check that failed (kept until one passes)
        self._mha = None
        self._reset_pass()

    # ------------------------------------------------------------------ plumbing
    def attach(self) -> "PerSampleSqNorms":
        """Hook the model, and its direct children too: a training step that calls a submodule itself (a
        LightningModule's ``training_step`` calling ``self.net(x)``) is watched from that call. The hooks are
        in place only while :attr:`enabled` (a disabled engine costs the model's forward nothing)."""
        self._attached = True
        _install_checkpoint_bypass()
        if self._enabled:
            self._hook()
        return self

    def _hook(self):
        if not self._handles:
            for m in [self.model] + [c for c in self.model.children() if any(True for _ in c.parameters())]:
                self._handles.append(m.register_forward_pre_hook(CopyInert(self._pre), with_kwargs=True))
                self._handles.append(m.register_forward_hook(CopyInert(self._post), with_kwargs=True,
                                                             always_call=True))

    def _unhook(self):
        for h in self._handles:
            h.remove()
        self._handles = []

    @property
    def enabled(self) -> bool:
        """Whether forward passes are watched (the monitor's tier-1 schedule switches this per step)."""
        return self._enabled

    @enabled.setter
    def enabled(self, on: bool) -> None:
        self._enabled = bool(on)
        if not self._attached:
            return
        if self._enabled:
            self._hook()
        elif self._depth == 0:  # not inside a watched forward: its closing hook has run
            self._unhook()

    def detach(self) -> None:
        self._attached = False
        self._unhook()
        if self._in_mode:
            self._mode.__exit__(None, None, None)
            self._in_mode = False
        self.end_trailing()
        self._reset_pass()

    def end_trailing(self) -> None:
        """Stop watching the loss computed after the forward (the monitor calls this when the optimizer steps;
        the next forward and :meth:`reset` do too): the function mode leaves the stack if it is on top (never
        out of order: a mode pushed after it, still open, keeps it there, passing every call through)."""
        if self._mode.trailing:
            self._mode.live = False
        _pop_inert_modes()

    def __enter__(self):
        return self.attach()

    def __exit__(self, *exc):
        self.detach()

    def reset(self) -> None:
        """Forget the passes of the current step."""
        self.end_trailing()
        self.passes = []
        self.covered_last = set()
        self._reset_pass()

    def step_done(self) -> None:
        """The optimizer step ended (called by the monitor): the sum check starts again. ``check_every``
        counts the steps in which the engine measured a backward pass."""
        if self._measured_in_step:
            self._step_idx += 1
        self._measured_in_step = False
        self._higher_order = False
        self._sum_acc = {}
        self.shared_last = {}

    @property
    def _checking(self) -> bool:
        return self.check_every is not None and self._step_idx % self.check_every == 0

    def _reset_pass(self):
        self._higher_order = False
        # a recorded use and the hook on its output refer to each other through the output tensor (a cycle
        # Python's collector cannot see through autograd's hooks): break it, or every pass would keep its
        # activations alive
        for use in getattr(self, "_uses", ()):
            use.inputs = use.outputs = None
            use.grads = [None] * use.n_out
        self._uses: list[_Use] = []
        self._contribs: dict[str, list] = defaultdict(list)
        self._expected: dict[str, int] = defaultdict(int)
        self._reduced: dict[str, torch.Tensor] = {}
        self._failed: dict[str, str] = {}
        self._coupled_now: set[str] = set()
        self._used: set[str] = set()
        self._watch: dict = {}          # id -> _Tag: unbatched tensors derived from parameters
        self._mixed: dict = {}          # id -> tensor reduced over the batch axis
        self._keep: list = []           # strong references for the ids above
        self._callback_queued = False
        self._B = None
        self._pref_axis = 0
        self._observed_B: set = set()
        self._hint = None
        self._pass_error = None
        self._visited: set = set()
        self._maybe: dict = {}
        self._lowp: set = set()
        self._x_dim = 0
        self._fid = -1
        self._ordered = False  # a tensor of this pass holds its samples in another order (see _order_of)
        self._shared_use: set = set()   # parameters in ops after the forward with no batched operand (a regulariser)
        self._outside_use: set = set()  # parameters in ops after the forward with batched data
        self._derived: dict = {}        # id -> (tensor, parameter names): made after the forward from those alone
        self._use_orders: dict = defaultdict(set)  # parameter -> the orders of the rows its ops read

    # ------------------------------------------------------------------ forward hooks
    def _pre(self, module, args, kwargs):
        if not self.enabled or not torch.is_grad_enabled() or inside_transform():
            return None  # (a forward inside torch.func.grad / vmap is that transform's, not the step's)
        self._depth += 1
        if self._depth > 1:
            return None
        x = _first_tensor(args, kwargs)
        axis = self.batch_axis if self.batch_axis is not None else (
            self._learned_axis if self._learned_axis is not None else (self._declared_axis or 0))
        self._pref_axis = axis
        self._observed_B = set()
        ps = next((a for a in tuple(args) + tuple(kwargs.values()) if isinstance(a, nn.utils.rnn.PackedSequence)),
                  None)
        packed = ps is not None and x is ps.data  # a packed batch: its rows are steps of every sample
        if not packed and (x is None or x.dim() <= axis):
            self._B = None
            self._pass_error = ("the model's first argument is not a tensor with a batch axis: pass batch_size= "
                                "(and batch_axis=)")
            return None
        self.end_trailing()  # the loss of an earlier forward was never backpropagated
        # what the loss after an earlier forward did with the parameters is that loss's (a forward without backward:
        # an evaluation under grad mode); a term computed before this forward is not seen (its parameters fail the
        # sum check, as any use the engine does not see)
        self._shared_use, self._outside_use, self._derived = set(), set(), {}
        self._B = int(ps.batch_sizes[0]) if packed else int(x.shape[axis])
        self._x_dim = x.dim()
        _PerForward.counter += 1
        self._fid = _PerForward.counter
        for t in _flat_all(args) + _flat_all(list(kwargs.values())):
            if t is x:
                self._set_axis(t, _LOST if packed else axis)
            elif not self._is_watched(t):
                self._set_axis(t, self._shape_axis(t))
        if packed and ps.sorted_indices is not None:  # the packed order: the samples sorted by length
            self._set_order(x, tuple(ps.sorted_indices.tolist()))
        self._mode = _Mode(self)
        self._mode.__enter__()
        self._in_mode = True
        return None

    def _post(self, module, args, kwargs, output):
        if self._depth == 0 or inside_transform():  # its _pre did not count it either
            return None
        self._depth -= 1
        if self._depth > 0:
            return None
        trail = False
        if self._in_mode:
            self._in_mode = False
            # the loss is often computed outside the model (a contrastive or triplet loss over the batch of
            # outputs): keep watching, for batch mixing only, until the backward pass starts
            trail = self._may_trail(output)
            if not trail:
                self._mode.__exit__(None, None, None)
            else:
                self._mode.trailing = True
        try:
            return self._post_checks(args, kwargs, output)
        except BaseException:
            if trail:
                self.end_trailing()
            raise

    def _post_checks(self, args, kwargs, output):
        # every backward pass through the model's outputs ends with the pass bookkeeping
        for o in _output_tensors(output):
            if o.requires_grad:
                o.register_hook(self._queue_hook)
        obs = self._observed_B
        if len(obs) > 1:
            self._pass_error = (f"layers of the model see different batch sizes {sorted(obs)}: the batch axis is "
                                "ambiguous; pass batch_size= and batch_axis= to the monitor")
            raise BatchAxisError(self._pass_error)
        if obs and self._B is not None:
            b = next(iter(obs))
            if b != self._B:
                x = _first_tensor(args, kwargs)
                axes = [a for a in range(x.dim()) if x.shape[a] == b] if x is not None else []
                if len(axes) != 1 and self.batch_axis is None:
                    raise BatchAxisError(f"the recurrent/attention layers see batch size {b}, but the model's first "
                                         f"argument {tuple(x.shape) if x is not None else None} has it on "
                                         f"{'no' if not axes else 'several'} axes: pass batch_size= and batch_axis=")
                if self.batch_axis is None:
                    self._learned_axis = axes[0]
                self._pass_error = (f"the batch axis of the model's input was taken as {self._pref_axis}, but its "
                                    f"layers see batch size {b} (axis {axes[0] if axes else '?'}): this pass is not "
                                    "measured; later passes use the learned axis")
        self._maybe = {}
        return None

    def _may_trail(self, output) -> bool:
        """Whether the mode may stay on after the forward: an output with a gradient, the batch known, and no
        function mode under the engine's (a ``with torch.device(...)`` block around the forward could close
        before the backward pass and would then take the engine's mode off instead of its own)."""
        if self._B is None or not any(o.requires_grad for o in _output_tensors(output)):
            return False
        try:
            stack = torch.overrides._get_current_function_mode_stack()
        except Exception:  # noqa: BLE001
            return False
        return bool(stack) and stack[-1] is self._mode and all(isinstance(m, _Mode) and not m.live
                                                                for m in stack[:-1])

    def _dispatch_trailing(self, mode, func, args, kwargs):
        """An op after the forward, while the loss is computed: look for batch mixing (pairs of samples, a
        statistic over the batch recombined) among the outputs' descendants. Parameters used here are not
        per-sample-tracked (the sum check catches their gradient); a backward pass ends the watch."""
        if func in _BACKWARD_CALLS or torch._C._current_graph_task_id() != -1:
            mode.live = False
            return func(*args, **kwargs)
        if not torch.is_grad_enabled() or func in _NO_TENSOR_OUT:
            return func(*args, **kwargs)
        tensors = [t for a in tuple(args) + tuple(kwargs.values()) for t in _flat_tensors(a)]
        names, data = set(), []
        for t in tensors:
            if id(t) in self._pid:
                names.add(self._pid[id(t)])
            elif id(t) in self._derived:
                names |= self._derived[id(t)][1]
            else:
                data.append(t)
        if names:
            # the parameters in a term of their own (a regulariser): shared by every sample as long as it meets
            # only constants and scalars (the batch-mean loss); met with per-sample data it is a per-sample use
            out = func(*args, **kwargs)
            self._propagate(func, args, kwargs, out)
            if not any(o.requires_grad for o in _flat_tensors(out)):
                return out  # no gradient reaches the parameters through it (p.grad, p.detach(), a norm for logging)
            per_sample = any(t.dim() > 0 and (_is_lost(t, self._fid) or id(t) in self._mixed or id(t) in self._watch
                                              or self.axis_of(t) is not None) for t in data)
            if per_sample:
                self._outside_use |= names
            else:
                self._shared_use |= names
                for o in _flat_tensors(out):
                    if o.requires_grad:
                        self._derived[id(o)] = (o, frozenset(names))
            return out
        if any(id(t) in self._watch for t in tensors):
            out = func(*args, **kwargs)
            self._propagate(func, args, kwargs, out)
            return out
        return self._dispatch(func, args, kwargs)

    def _this_pass_counts(self) -> bool:
        """Inside a hook: note a pass with ``create_graph=True``, and say whether the pass writes the parameters'
        ``.grad`` (a ``torch.autograd.grad`` call does not: the uses stay for the step's backward pass)."""
        if builds_graph():
            self._higher_order = True
        return self._probe()

    def gradients_reset(self) -> None:
        """The parameters' gradients were reset since the last backward pass (``zero_grad``, also in place, which
        leaves them tensors: found by the caller): the sum check starts a new sum with the next pass."""
        self._sum_acc = {}

    def _queue_hook(self, grad):
        if not self._this_pass_counts():
            return
        if not self._callback_queued:
            if self._sum_acc and not any(p.grad is not None for p in self.params.values()):
                self._sum_acc = {}  # the gradients were reset since the last pass (SAM's second pass): a new sum
            self._callback_queued = True
            torch.autograd.Variable._execution_engine.queue_callback(self._end_of_backward)

    # ------------------------------------------------------------------ dispatch
    def _dispatch(self, func, args, kwargs):
        if not torch.is_grad_enabled():
            return func(*args, **kwargs)
        h = _TABLE.get(func)
        out = h(self, func, args, kwargs) if h is not None else self._dispatch_generic(func, args, kwargs)
        if self._ordered:  # an op that puts rows in place keeps the order of the tensor it writes into
            self._carry_order(args[:1], {}, out) if func in _PLACING else self._carry_order(args, kwargs, out)
        return out

    def _is_watched(self, t):
        i = id(t)
        return i in self._pid or i in self._watch or i in self._mixed

    def _resolve_maybe(self, func, args, kwargs):
        """An embedding output of ambiguous batch axis meets its first consumer: broadcast against a batched
        tensor of higher rank (``tok + pos``), it is a position table (unbatched); otherwise batched."""
        tens = [a for a in tuple(args) + tuple(kwargs.values()) if isinstance(a, torch.Tensor)]
        for t in tens:
            m = self._maybe.pop(id(t), None)
            if m is None:
                continue
            out, use, tw, backprop = m
            higher = [o for o in tens if o is not t and o.dim() > t.dim() and not self._is_watched(o)]
            if (func in _ADD or func in _SUB or func in _RSUB or func in _MUL) and higher:
                use.done = True  # the provisional batched record is void
                use.inputs = None
                self._expect(tw, -1)
                self._unbatched(out, backprop, self._tag_params([tw]))

    def _touched(self, args, kwargs):
        """The watched tensors among the arguments: parameters, tags, batch-mixed tensors."""
        out = []
        for a in (args if not kwargs else tuple(args) + tuple(kwargs.values())):
            if isinstance(a, torch.Tensor):
                if self._is_watched(a):
                    out.append(a)
            elif isinstance(a, (list, tuple)):
                for b in a:
                    if isinstance(b, torch.Tensor) and self._is_watched(b):
                        out.append(b)
        return out

    # ------------------------------------------------------------------ batch axis of a tensor
    def axis_of(self, t, feature_last=False, conv=False):
        """The batch axis of ``t`` in this forward pass: an int, ``None`` if it has none, or
        ``("fold", sizes, pos)`` when axis 0 merges the batch (at ``pos``) with other axes of ``sizes``.

        Every tensor an op makes in the forward pass carries the axis its inputs give it
        (:meth:`_propagate`); the shape (an axis of the batch size) is used only for tensors made
        outside the forward pass (inputs, buffers) or by an op the mode does not see."""
        i = id(t)
        if i in self._pid or i in self._watch:
            return None
        a = t.__dict__.get("_hhld_ax") if hasattr(t, "__dict__") else None
        if a is not None and a[0] == self._fid and a[1] is not _LOST:
            ax = a[1]
            if ax is None:
                return None
            if conv and ax != 0 and not (isinstance(ax, tuple) and ax[1] == 0):
                return None
            if feature_last and isinstance(ax, int) and ax == t.dim() - 1:
                return None
            return ax
        B = self._B
        if B is None or t.dim() == 0:
            return None
        if conv:
            return 0 if t.shape[0] == B else None
        return self._shape_axis(t, feature_last)

    def _shape_axis(self, t, feature_last=False):
        B = self._B
        if B is None or t.dim() == 0:
            return None
        n = t.dim() - (1 if feature_last else 0)
        cands = [a for a in range(n) if t.shape[a] == B]
        if not cands:
            return None
        pref = self._hint if self._hint is not None else self._pref_axis
        return pref if pref in cands else cands[0]

    def _set_axis(self, t, ax):
        try:
            t.__dict__["_hhld_ax"] = (self._fid, ax)
        except (AttributeError, TypeError):  # pragma: no cover - a tensor type without a __dict__
            pass

    def _order_of(self, t):
        """The order of ``t``'s samples along its batch axis: ``None`` (row ``j`` is sample ``j``) or a tuple
        ``k`` (row ``j`` holds sample ``k[j]``), made by a permutation of the rows (``h[perm]``,
        ``index_select``, the sorting of a packed sequence) and carried by the ops after it."""
        if not self._ordered:
            return None
        o = t.__dict__.get("_hhld_ord") if hasattr(t, "__dict__") else None
        return o[1] if o is not None and o[0] == self._fid else None

    def _set_order(self, t, key):
        """Record the order of ``t``'s rows (``None``: the natural order, recorded so that nothing overrides it)."""
        if key is not None and not self._ordered:
            self._ordered = True
            for use in self._uses:  # the ops recorded so far read their rows in the natural order
                for name in self._tag_params(use.targets.values()):
                    self._use_orders[name].add(None)
        if self._ordered:
            try:
                t.__dict__["_hhld_ord"] = (self._fid, key)
            except (AttributeError, TypeError):  # pragma: no cover - a tensor type without a __dict__
                pass

    def _permute(self, out, src, perm):
        """``out``'s rows are ``src``'s rows taken in the order ``perm``."""
        k = self._order_of(src)
        key = perm if k is None else tuple(k[i] for i in perm)
        self._set_order(out, None if key == tuple(range(len(key))) else key)

    def _carry_order(self, args, kwargs, out):
        """An op's outputs hold their samples in the order of its floating-point inputs, those that carry a
        gradient first; inputs with a gradient in different orders (a mixing, coupled by
        :meth:`_find_lost_rows`) leave the natural order."""
        grad_keys, data_keys = set(), set()
        for a in (args if not kwargs else tuple(args) + tuple(kwargs.values())):
            for t in ((a,) if isinstance(a, torch.Tensor) else _flat_tensors(a)):
                if not t.is_floating_point():
                    continue
                key = self._order_of(t)
                if t.requires_grad:
                    if key is not None or self.axis_of(t) is not None:
                        grad_keys.add(key)
                elif key is not None:
                    data_keys.add(key)
        keys = grad_keys or data_keys
        if not keys or keys == {None}:
            return
        key = next(iter(keys)) if len(keys) == 1 else None
        for o in ((out,) if isinstance(out, torch.Tensor) else _flat_tensors(out)):
            if not (hasattr(o, "__dict__") and o.__dict__.get("_hhld_ord", (None,))[0] == self._fid):
                self._set_order(o, key)

    def _propagate(self, func, args, kwargs, out):
        """The batch axis of an op's outputs, from its inputs' (right-aligned as broadcasting does, else at the
        same index); none when no input is batched."""
        outs = _flat_tensors(out) if not isinstance(out, torch.Tensor) else [out]
        if not outs:
            return
        B = self._B
        src = None
        lost = False
        for a in tuple(args) + tuple(kwargs.values()):
            for t in (_flat_tensors(a) if not isinstance(a, torch.Tensor) else [a]):
                if t is outs[0] and len(outs) == 1 and not self._fresh(t):
                    continue
                if _is_lost(t, self._fid):  # rows of unknown samples: never an axis guessed from the shape
                    lost = True
                    continue
                ax = self.axis_of(t)
                if ax is not None and (src is None or t.dim() > src[0].dim()):
                    src = (t, ax)
        for o in outs:
            if src is None and B is not None and func in _EXPAND and not lost:
                # t.expand(B, ...) of a tensor without a batch axis (e.g. a buffer of token-type ids): every sample
                # gets its own copy, so the result is batched where the new axis of size B is
                self._set_axis(o, self._shape_axis(o))
                continue
            if src is None or B is None:
                self._set_axis(o, _LOST if lost else None)
                continue
            t, ax = src
            if isinstance(ax, tuple):
                _, k, sizes, pos = ax
                if func in _GATHER and _gathered_rows(func, args, kwargs, k, math.prod(sizes)) is not None:
                    self._set_axis(o, _LOST)  # tokens reordered or routed: rows of unknown samples
                    continue
                n = math.prod(sizes)
                right = o.dim() - (t.dim() - k)
                if 0 <= right < o.dim() and o.shape[right] == n:
                    self._set_axis(o, ("fold", right, sizes, pos))
                elif k < o.dim() and o.shape[k] == n:
                    self._set_axis(o, ("fold", k, sizes, pos))
                else:
                    self._set_axis(o, _LOST)
                continue
            right = o.dim() - (t.dim() - ax)
            rows = _gathered_rows(func, args, kwargs, ax, B) if func in _GATHER else None
            if rows is _LOST:
                self._set_axis(o, _LOST)
            elif rows is not None and o.dim() > ax and o.shape[ax] == B:
                self._set_axis(o, ax)
                self._permute(o, t, rows)
            elif 0 <= right < o.dim() and o.shape[right] == B:
                self._set_axis(o, right)
            elif ax < o.dim() and o.shape[ax] == B:
                self._set_axis(o, ax)
            else:
                self._set_axis(o, _LOST)

    def _fresh(self, t):
        a = t.__dict__.get("_hhld_ax") if hasattr(t, "__dict__") else None
        return a is not None and a[0] == self._fid

    def _view(self, func, args, kwargs):
        out = func(*args, **kwargs)
        src = args[0] if args else kwargs.get("input")
        if not isinstance(src, torch.Tensor) or not isinstance(out, torch.Tensor):
            return out
        self._set_axis(out, None)
        if self._is_watched(src):
            return self._generic_after(func, args, kwargs, out, self._touched(args, kwargs))
        ax = self.axis_of(src)
        B = self._B
        if ax is None and _is_lost(src, self._fid):
            self._set_axis(out, _LOST)
            return out
        if ax is None or B is None or out.dim() == 0:
            return out
        if func is torch.Tensor.__getitem__:
            index = args[1] if len(args) > 1 else None
            oax = _indexed_axis(src, index, ax, out)
            perm = _permuted_rows(src, index, ax, out) if oax is _LOST else None
            if perm is not None:  # h[perm]: the same samples in another order
                self._set_axis(out, ax)
                self._permute(out, src, perm)
            else:
                self._set_axis(out, oax)
            return out
        if func in _TRANSPOSE:
            k = ax[1] if isinstance(ax, tuple) else ax
            new_k = _permuted_axis(func, src.dim(), k, list(args[1:]) + list(kwargs.values()))
            if new_k is None:
                self._set_axis(out, _LOST)
            else:
                self._set_axis(out, ("fold", new_k) + tuple(ax[2:]) if isinstance(ax, tuple) else new_k)
            return out
        self._set_axis(out, _reshape_axis(tuple(src.shape), ax, tuple(out.shape)))
        return out

    # ------------------------------------------------------------------ targets
    def _target_of(self, t):
        """A :class:`_Target` for a parameter or a tag, ``None`` otherwise."""
        if not isinstance(t, torch.Tensor):
            return None
        i = id(t)
        name = self._pid.get(i)
        if name is not None:  # a frozen parameter (requires_grad=False) is a constant here
            return _Target(name=name) if t.requires_grad else None
        tag = self._watch.get(i)
        if tag is not None:
            return _Target(tag=tag)
        return None

    def _expect(self, target, n=1):
        """One more expected contribution for every parameter behind ``target``."""
        if target is None:
            return
        if target.name is not None:
            self._expected[target.name] += n
            self._used.add(target.name)
            return
        if target.tag.poison:
            for p in target.tag.params:
                self._failed.setdefault(p, target.tag.poison)
        for p in target.tag.params:
            self._expected[p] += n
            self._used.add(p)

    def _contribute(self, target, c):
        if target is None or c is None:
            return
        if target.tag is not None:
            if _lowp(c) or target.tag.tensor.dtype in (torch.float16, torch.bfloat16):
                # a half-precision copy of the parameters on the way (autocast's cast of a derived weight, a LoRA
                # factor): their gradients were summed over the batch in that type, so is their sum checked
                self._lowp.update(target.tag.params)
            for t2, c2 in target.tag.backprop(c):
                self._contribute(t2, c2)
            return
        name = target.name
        self._contribs[name].append(c)
        if len(self._contribs[name]) >= self._expected.get(name, 0):
            self._reduce(name)

    def _reduce(self, name):
        """Combine a parameter's contributions into its per-sample squared norms (as soon as all arrived:
        the factors are released during the backward pass)."""
        cs = self._contribs.pop(name, [])
        if not cs or name in self._failed:
            return
        p = self.params[name]
        orders = self._use_orders.get(name)
        if orders and len(orders) > 1:
            self._failed[name] = ("used on the batch's rows in different orders (before and after a permutation of "
                                  "the samples, e.g. h and h[perm]): its per-sample gradients would add rows of "
                                  "different samples")
            return
        try:
            sq = per_sample_sq_norms(cs, p.shape)
            if orders and None not in orders:  # rows read in a permuted order: back to the order of the samples
                key = torch.tensor(next(iter(orders)), device=sq.device)
                sq = torch.empty_like(sq).index_copy_(0, key, sq)
            if name in self._reduced:
                raise RuntimeError("contributions arrived after the parameter was reduced")
            self._reduced[name] = sq
            if any(_lowp(c) for c in cs):
                self._lowp.add(name)
            if self._checking or name in self._shared_use:
                s = sum_of_contribs_all(cs, tuple(p.shape))
                if s is not None:
                    prev = self._sum_acc.get(name)
                    self._sum_acc[name] = s if prev is None else prev + s
        except Exception as exc:  # noqa: BLE001 - an unexpected shape: this parameter is not covered
            self._failed[name] = f"per-sample norm failed ({type(exc).__name__}: {exc})"

    # ------------------------------------------------------------------ recording
    def _record(self, kind, inputs, targets, outputs, extra=None):
        """Record a use and hook its outputs; ``targets`` maps roles to :class:`_Target` (or None)."""
        use = _Use(kind, inputs, targets, outputs, extra)
        use.extra.setdefault("B", self._B)
        self._uses.append(use)
        if self._ordered:  # the order of the rows this op reads (its per-sample contributions come in that order)
            key = next((k for t in _flat_all(list(inputs.values())) for k in (self._order_of(t),) if k is not None),
                       None)
            for name in self._tag_params(targets.values()):
                self._use_orders[name].add(key)
        for t in targets.values():
            self._expect(t)
        for k, o in enumerate(outputs):
            if isinstance(o, torch.Tensor) and o.requires_grad:
                o.register_hook(self._make_hook(use, k))
        return use

    def _make_hook(self, use, k):
        ref = weakref.ref(self)

        def hook(grad):
            eng = ref()
            if eng is None or not eng._this_pass_counts():
                return
            use.grads[k] = grad.detach()
            eng._queue_hook(None)
            if use.n_out == 1:
                eng._process(use)

        return hook

    def _unbatched(self, out, backprop, params, poison=None):
        """Register ``out`` (no batch axis, depends on ``params``) as a tag."""
        if isinstance(out, torch.Tensor) and out.requires_grad:
            self._watch[id(out)] = _Tag(out, backprop, tuple(params), poison)
            self._keep.append(out)
        return out

    @staticmethod
    def _tag_params(targets):
        ps = []
        for t in targets:
            if t is None:
                continue
            if t.name is not None:
                ps.append(t.name)
            else:
                ps.extend(t.tag.params)
        return ps

    def _fail(self, targets, why):
        for p in self._tag_params(targets):
            self._failed.setdefault(p, why)

    def _refuse_lost(self, targets, *data) -> bool:
        """True (and the parameters of ``targets`` not covered, with :data:`LOST_NOTE`) when a data input of a
        parameter's op has lost its batch axis: its rows may be any samples' (token routing), so the axis is
        never guessed from the shape."""
        if not any(isinstance(t, torch.Tensor) and _is_lost(t, self._fid) for t in data):
            return False
        targets = [t for t in targets if t is not None]
        self._fail(targets, LOST_NOTE)
        for t in targets:
            self._expect(t)
        return True

    # ------------------------------------------------------------------ rule handlers
    def _linear(self, func, args, kwargs):
        x = args[0] if args else kwargs.get("input")
        w = args[1] if len(args) > 1 else kwargs.get("weight")
        b = args[2] if len(args) > 2 else kwargs.get("bias")
        tw, tb = self._target_of(w), self._target_of(b)
        if tw is None and tb is None and not self._is_watched(x):
            out = func(*args, **kwargs)
            self._set_axis(out, self.axis_of(x, feature_last=True) if not _is_lost(x, self._fid) else _LOST)
            return out
        out = func(*args, **kwargs)
        if self._is_watched(x):
            self._set_axis(out, None)
            return self._generic_after(func, args, kwargs, out, self._touched(args, kwargs))
        if self._refuse_lost([tw, tb], x):
            self._set_axis(out, _LOST)
            return out
        ax = self.axis_of(x, feature_last=True)
        q = w.shape[0]
        if ax is None:
            # a shared input: the output has no batch axis; its per-sample gradients come from where it meets data
            xs = x.detach()

            def backprop(c, xs=xs, tw=tw, tb=tb, q=q):
                gs = _dense(c, tuple(out_shape))
                cs = linear_contribs(xs.expand((gs.shape[0],) + tuple(xs.shape)), gs, q, tw is not None,
                                     tb is not None)
                return [(tw, cs.get("weight")), (tb, cs.get("bias"))]

            out_shape = out.shape
            return self._unbatched(out, backprop, self._tag_params([tw, tb]))
        self._set_axis(out, ax)
        self._record("linear", {"x": x, "ax": ax, "q": q}, {"weight": tw, "bias": tb}, [out])
        return out

    def _matmul(self, func, args, kwargs):
        """``x @ P`` (``torch.matmul``, ``mm``) and ``addmm(b, x, P)`` (e.g. transformers' ``Conv1D``) with a
        2-D parameter ``P`` on the right of batched rows ``x``: ``dP_i = sum_t x_it g_it^T``."""
        add = func in _ADDMM
        if add:
            a = dict(zip(("input", "mat1", "mat2"), args))
            a.update(kwargs)
            b, x, w = a.get("input"), a["mat1"], a["mat2"]
            beta, alpha = a.get("beta", 1), a.get("alpha", 1)
        else:
            x = args[0] if args else kwargs.get("input")
            w = args[1] if len(args) > 1 else kwargs.get("other", kwargs.get("mat2"))
            b, beta, alpha = None, 1, 1
        out = func(*args, **kwargs)
        tw, tb = self._target_of(w), self._target_of(b)
        ax = self.axis_of(x, feature_last=True) if isinstance(x, torch.Tensor) else None
        self._set_axis(out, ax if ax is not None else (_LOST if _is_lost(x, self._fid) else None))
        if tw is None and tb is None and not self._is_watched(x):
            if not add:
                self._find_batch_mixing(func, args, kwargs, out)
            return out
        if not self._is_watched(x) and self._refuse_lost([tw, tb], x):
            return out
        if (self._is_watched(x) or ax is None or tw is None or w.dim() != 2 or
                (tb is not None and b.dim() != 1) or (b is not None and tb is None and self._is_watched(b))):
            return self._generic_after(func, args, kwargs, out, self._touched(args, kwargs))
        self._record("matmul", {"x": x, "ax": ax, "q": w.shape[0], "alpha": alpha, "beta": beta},
                     {"weight": tw, "bias": tb}, [out])
        return out

    def _norm(self, func, args, kwargs):
        kind = _NORMS[func]
        a = dict(zip(_NORM_ARGS[kind], args))
        a.update(kwargs)
        x = a["input"]
        w, b = a.get("weight"), a.get("bias")
        tw, tb = self._target_of(w), self._target_of(b)
        out = func(*args, **kwargs)
        self._set_axis(out, self.axis_of(x) if not _is_lost(x, self._fid) else _LOST)
        if kind == "batch_norm" and (a.get("training", False) or a.get("running_mean") is None):
            self._couple_upstream(x, "batch norm in training mode normalises with statistics of the whole batch")
        if tw is None and tb is None and not self._is_watched(x):
            return out
        if not self._is_watched(x) and self._refuse_lost([tw, tb], x):
            return out
        ax = self.axis_of(x, conv=kind not in ("layer_norm", "rms_norm"))
        if self._is_watched(x) or ax is None:
            return self._generic_after(func, args, kwargs, out, self._touched(args, kwargs))
        extra = {"kind": kind, "eps": a.get("eps", 1e-5)}
        if kind in ("layer_norm", "rms_norm"):
            extra["normalized_shape"] = tuple(a["normalized_shape"])
        elif kind == "group_norm":
            extra["num_groups"] = a["num_groups"]
        elif kind == "instance_norm":
            extra["use_input_stats"] = a.get("use_input_stats", True)
            extra["running_mean"], extra["running_var"] = a.get("running_mean"), a.get("running_var")
        else:
            bs = bool(a.get("training", False)) or a.get("running_mean") is None
            extra["batch_stats"] = bs
            if not bs:
                extra["running_mean"] = a["running_mean"].detach().clone()
                extra["running_var"] = a["running_var"].detach().clone()
        pshape = tuple((w if w is not None else b).shape)
        self._record("norm", {"x": x, "ax": ax, "pshape": pshape}, {"weight": tw, "bias": tb}, [out], extra)
        return out

    def _embedding(self, func, args, kwargs):
        a = dict(zip(("input", "weight", "padding_idx", "max_norm", "norm_type", "scale_grad_by_freq", "sparse"),
                     args))
        a.update(kwargs)
        ids, w = a["input"], a["weight"]
        tw = self._target_of(w)
        out = func(*args, **kwargs)
        self._set_axis(out, self.axis_of(ids) if not _is_lost(ids, self._fid) else _LOST)
        if tw is None:
            return out
        if a.get("scale_grad_by_freq"):
            for p in self._tag_params([tw]):
                self._coupled_now.add(p)
            self._fail([tw], "coupled: scale_grad_by_freq scales each row's gradient by its count in the whole batch")
            self._expect(tw)
            return out
        if self._refuse_lost([tw], ids):
            return out
        pad = a.get("padding_idx")
        if pad is not None and pad < 0:
            pad = w.shape[0] + pad
        ax = self.axis_of(ids)
        if ax is None:
            return self._unbatched(out, _table_backprop(ids, tw, w.shape[0], pad, out.shape), self._tag_params([tw]))
        use = self._record("embedding", {"ids": ids, "ax": ax, "n": w.shape[0], "pad": pad}, {"weight": tw}, [out])
        if ids.dim() == 1 and self._x_dim >= 2 and out.requires_grad:
            # 1-D ids as long as the batch while the model's input has more axes (e.g. torch.arange(T) with
            # T == B): batched or a position table? Decided by the first op that consumes the output.
            self._maybe[id(out)] = (out, use, tw, _table_backprop(ids, tw, w.shape[0], pad, out.shape))
        return out

    def _sdpa(self, func, args, kwargs):
        """``F.scaled_dot_product_attention`` whose additive ``attn_mask`` has no batch axis but a gradient (T5's
        relative position bias): the mask is expanded to the batch first, so that autograd itself writes each
        sample's gradient of it (dropout inside the op included, which a per-sample recomputation cannot replay);
        every other use goes the generic way."""
        a = dict(zip(("query", "key", "value", "attn_mask"), args))
        a.update(kwargs)
        q, k, m = a.get("query"), a.get("key"), a.get("attn_mask")
        tm = self._target_of(m) if isinstance(m, torch.Tensor) and m.requires_grad else None
        qax = self.axis_of(q) if isinstance(q, torch.Tensor) and tm is not None and not self._is_watched(q) else None
        folded = isinstance(qax, tuple) and qax[1] == 0  # windows of each sample on the batch axis (Swin)
        if tm is None or (qax != 0 and not folded) or not isinstance(k, torch.Tensor) or m.dim() > q.dim():
            return self._dispatch_generic(func, args, kwargs)
        shape = tuple(q.shape[:-2]) + (q.shape[-2], k.shape[-2])
        try:
            mb = m.expand(shape)
        except RuntimeError:
            return self._dispatch_generic(func, args, kwargs)
        self._set_axis(mb, qax)
        self._record("broadcast", {"func": torch.Tensor.expand, "args": (m, shape), "kwargs": {}, "batched": [],
                                   "oax": qax}, {0: tm}, [mb], {"watched": [m], "func_name": "expand"})
        if "attn_mask" in kwargs:
            kwargs = dict(kwargs, attn_mask=mb)
        else:
            args = args[:3] + (mb,) + tuple(args[4:])
        return self._dispatch_generic(func, args, kwargs)

    def _dispatch_generic(self, func, args, kwargs):
        """:meth:`_dispatch` without the table: the generic rule for ``func``."""
        if self._maybe:
            self._resolve_maybe(func, args, kwargs)
        watched = self._touched(args, kwargs)
        if not watched:
            out = func(*args, **kwargs)
            if func not in _NO_TENSOR_OUT:
                self._propagate(func, args, kwargs, out)
                self._find_batch_mixing(func, args, kwargs, out)
            return out
        return self._generic(func, args, kwargs, watched)

    def _find_batch_mixing(self, func, args, kwargs, out):
        """Ops on activations that make one sample's output depend on other samples: a statistic over the batch
        (marked; combined with the batch again, it couples what is upstream), an op along the batch axis
        (softmax, cumsum, sort, roll, flip over samples), a product of two batched tensors whose batch axes meet
        (``a @ b.T``: CLIP-style logits of in-batch pairs). The parameters upstream are coupled, as under a
        train-mode batch norm; the ones downstream keep their per-sample gradients with the mixing held fixed."""
        if self._B is None:
            return
        self._find_lost_rows(func, args, kwargs)
        if func in _PAIRING:
            return self._find_pairing(func, args, kwargs, out)
        if func in _BROADCASTING:
            return self._find_misaligned(func, args, kwargs)
        if not (func in _REDUCE or func in _ALONG or func in _BATCH_MATMUL):
            return
        x = args[0] if args and isinstance(args[0], torch.Tensor) else kwargs.get("input")
        if not isinstance(x, torch.Tensor) or x.dim() == 0:
            return
        ax = self.axis_of(x) if not _is_lost(x, self._fid) else None
        if func in _BATCH_MATMUL:
            y = args[1] if len(args) > 1 else kwargs.get("other", kwargs.get("mat2"))
            if not isinstance(y, torch.Tensor) or x.dim() < 2 or y.dim() < 2 or not isinstance(out, torch.Tensor):
                return
            ay = self.axis_of(y) if not _is_lost(y, self._fid) else None
            for m, other in ((x, ay), (y, ax)):  # a batch statistic multiplied with batched data
                if id(m) in self._mixed and other is not None:
                    self._couple_upstream(m, "a reduction over the batch axis is combined with the batch again")
            if isinstance(ax, tuple) or isinstance(ay, tuple) or (ax is None and ay is None):
                return
            # where each operand's batch axis lands in (..., n, m); None: summed over (the contracted axis)
            px = None if ax is None else (None if ax == x.dim() - 1 else
                                          out.dim() - 2 if ax == x.dim() - 2 else out.dim() - (x.dim() - ax))
            py = None if ay is None else (None if ay == y.dim() - 2 else
                                          out.dim() - 1 if ay == y.dim() - 1 else out.dim() - (y.dim() - ay))
            if ax is not None and ay is not None and px != py:
                why = f"{_fname(func)} of two batched tensors pairs every sample with every other"
                self._couple_upstream(x, why)
                self._couple_upstream(y, why)
            elif (ax is not None and px is None) or (ay is not None and py is None):
                self._mark_mixed([out])  # a sum over the samples: a batch statistic
            return
        if ax is None or isinstance(ax, tuple):
            return
        if func in _ALONG:
            if func in (torch.roll, torch.Tensor.roll):  # roll(input, shifts, dims=None): None rolls the flat tensor
                dim = kwargs.get("dims", args[2] if len(args) > 2 else None)
            elif func in (torch.flip, torch.Tensor.flip):  # flip(input, dims)
                dim = kwargs.get("dims", args[1] if len(args) > 1 else None)
            else:  # (input, dim, ...); sort's dim defaults to the last axis
                dim = kwargs.get("dim", args[1] if len(args) > 1 else None)
                if dim is None and func in (torch.sort, torch.Tensor.sort):
                    dim = -1
            dims = [dim] if isinstance(dim, int) else (list(dim) if isinstance(dim, (list, tuple)) else None)
            if dims is None or any(isinstance(d, int) and d % x.dim() == ax for d in dims):
                self._couple_upstream(x, f"{_fname(func)} along the batch axis mixes the samples")
            return
        if _reduces_axis(args, kwargs, ax, x.dim()):
            self._mark_mixed(_flat_tensors(out))

    def _find_lost_rows(self, func, args, kwargs):
        """An op that combines rows of unknown samples (``h[perm]``, ``h[0]``, an ``index_select`` over the batch:
        a lost batch axis) with batched data (``lam * h + (1 - lam) * h[perm]``: manifold mixup): each output row
        then holds other samples' rows, so what is upstream of those rows is coupled. Ops that put rows back in
        place (:data:`_PLACING`: token routing) are not counted."""
        if func in _PLACING:
            return
        lost, batched, orders = [], [], set()
        for a in (args if not kwargs else tuple(args) + tuple(kwargs.values())):
            for t in ((a,) if isinstance(a, torch.Tensor) else _flat_tensors(a)):
                if _is_lost(t, self._fid):
                    if t.requires_grad and id(t) not in self._mixed:  # a batch statistic: its own rule
                        lost.append(t)
                elif self.axis_of(t) is not None:
                    batched.append(t)
                    if self._ordered and t.requires_grad:
                        orders.add(self._order_of(t))
        why = (f"{_fname(func)} combines rows of other samples (indexing or gathering over the batch, e.g. "
               "h[perm] in manifold mixup) with the batch")
        if lost and batched:
            for t in lost:
                self._couple_upstream(t, why)
        if len(orders) > 1:  # the same rows of two operands with a gradient hold different samples
            for t in batched:
                if t.requires_grad:
                    self._couple_upstream(t, why)

    def _batched_operands(self, args, kwargs):
        """``[(tensor, batch axis)]`` of an op's tensor operands that hold samples on one known axis."""
        found = []
        for a in tuple(args) + tuple(kwargs.values()):
            for t in _flat_tensors(a):
                if _is_lost(t, self._fid):
                    continue
                ax = self.axis_of(t)
                if ax is not None and not isinstance(ax, tuple):
                    found.append((t, ax))
        return found

    def _find_misaligned(self, func, args, kwargs):
        """A broadcasting op whose batched operands put their samples on different axes of the broadcast shape
        (``e[:, None] - e[None]``): every sample meets every other, so what is upstream is coupled."""
        ops = self._batched_operands(args, kwargs)
        if len(ops) < 2:
            return
        rank = max(t.dim() for a in tuple(args) + tuple(kwargs.values()) for t in _flat_tensors(a))
        where = {rank - (t.dim() - ax) for t, ax in ops}
        if len(where) > 1:
            why = f"{_fname(func)} broadcasts two batched tensors against each other, pairing every sample with every other"
            for t, _ in ops:
                self._couple_upstream(t, why)

    def _find_pairing(self, func, args, kwargs, out):
        """Ops that pair rows by construction: ``cdist(x1, x2)`` (rows of ``x1`` against rows of ``x2``),
        ``inner``, ``outer`` / ``ger``, ``pdist`` (rows against rows), ``tensordot`` and ``einsum`` (read from
        their contraction). Samples paired with samples couple what is upstream; a contraction over the samples
        (the same batch index summed) is a batch statistic, like a sum over the batch."""
        if func is torch.einsum:
            return self._find_einsum_pairing(args, kwargs, out)
        why = f"{_fname(func)} pairs every sample with every other"
        if func is F.pdist:  # pdist(x): the distances between the rows of one tensor
            for t, ax in self._batched_operands(args, kwargs):
                if ax == 0:
                    self._couple_upstream(t, why)
            return
        x = args[0] if args and isinstance(args[0], torch.Tensor) else None
        y = args[1] if len(args) > 1 and isinstance(args[1], torch.Tensor) else kwargs.get("x2", kwargs.get("other"))
        ax = self.axis_of(x) if isinstance(x, torch.Tensor) and not _is_lost(x, self._fid) else None
        ay = self.axis_of(y) if isinstance(y, torch.Tensor) and not _is_lost(y, self._fid) else None
        if isinstance(ax, tuple) or isinstance(ay, tuple) or ax is None or ay is None:
            return  # one batched operand (distances to fixed centres, a batch against a parameter): per sample
        if func is torch.cdist:  # (..., P, M) x (..., R, M) -> (..., P, R): the leading axes broadcast
            if ax == x.dim() - 2 or ay == y.dim() - 2 or ax == x.dim() - 1 or ay == y.dim() - 1:
                if ax == x.dim() - 1 and ay == y.dim() - 1:
                    self._mark_mixed(_flat_tensors(out))
                    return
                self._couple_upstream(x, why)
                self._couple_upstream(y, why)
            return
        if func is torch.tensordot:
            dims = kwargs.get("dims", args[2] if len(args) > 2 else 2)
            if isinstance(dims, int):
                cx, cy = list(range(x.dim() - dims, x.dim())), list(range(dims))
            else:
                cx, cy = ([d] if isinstance(d, int) else list(d) for d in dims)
            inx, iny = ax in [d % x.dim() for d in cx], ay in [d % y.dim() for d in cy]
            if inx and iny and [d % x.dim() for d in cx].index(ax) == [d % y.dim() for d in cy].index(ay):
                self._mark_mixed(_flat_tensors(out))  # the same sample index summed: a batch statistic
                return
            self._couple_upstream(x, why)
            self._couple_upstream(y, why)
            return
        # inner (contracts the last axes), outer / ger (1-D): two batched operands meet sample against sample
        if func in (torch.inner, torch.Tensor.inner) and ax == x.dim() - 1 and ay == y.dim() - 1:
            self._mark_mixed(_flat_tensors(out))
            return
        self._couple_upstream(x, why)
        self._couple_upstream(y, why)

    def _find_einsum_pairing(self, args, kwargs, out):
        """``einsum(eq, *operands)``: the letter of each operand's batch axis; two batched operands with different
        letters that both reach the output pair the samples; a batch letter summed away is a batch statistic."""
        if not args or not isinstance(args[0], str):
            return
        eq = args[0].replace(" ", "")
        ops = list(args[1:])
        if len(ops) == 1 and isinstance(ops[0], (list, tuple)):
            ops = list(ops[0])
        lhs, _, rhs = eq.partition("->")
        specs = lhs.split(",")
        if len(specs) != len(ops):
            return

        def names(spec, ndim):
            if "..." not in spec:
                return list(spec)
            pre, post = spec.split("...")
            k = ndim - len(pre) - len(post)
            return list(pre) + [f"...{k - 1 - j}" for j in range(k)] + list(post)

        letters = []
        for spec, t in zip(specs, ops):
            if not isinstance(t, torch.Tensor) or _is_lost(t, self._fid):
                continue
            ax = self.axis_of(t)
            if ax is None or isinstance(ax, tuple):
                continue
            nm = names(spec, t.dim())
            if len(nm) != t.dim():
                return
            letters.append((t, nm[ax]))
        if not letters:
            return
        # the output's letters (explicit, or implicit: those that occur once); the ellipsis axes always reach it
        flat = [c for sp in specs for c in sp.replace("...", "")]
        out_names = set(rhs.replace("...", "")) if "->" in eq else {c for c in flat if flat.count(c) == 1}
        if "->" not in eq or "..." in rhs:
            out_names |= {n for sp, t in zip(specs, ops) if isinstance(t, torch.Tensor)
                          for n in names(sp, t.dim()) if n.startswith("...")}
        distinct = {nm for _, nm in letters}
        kept = {nm for nm in distinct if nm in out_names}
        if len(kept) > 1 or (len(distinct) > 1 and kept):
            why = f"einsum {args[0]!r} pairs every sample with every other"
            for t, _ in letters:
                self._couple_upstream(t, why)
        elif not kept:
            self._mark_mixed(_flat_tensors(out))  # the batch letter summed away: a statistic over the batch

    def _conv(self, func, args, kwargs):
        a = dict(zip(("input", "weight", "bias", "stride", "padding", "dilation", "groups"), args))
        a.update(kwargs)
        x, w, b = a["input"], a["weight"], a.get("bias")
        tw, tb = self._target_of(w), self._target_of(b)
        out = func(*args, **kwargs)
        self._set_axis(out, self.axis_of(x, conv=True) if not _is_lost(x, self._fid) else _LOST)
        if tw is None and tb is None and not self._is_watched(x):
            return out
        if not self._is_watched(x) and self._refuse_lost([tw, tb], x):
            return out
        nd = w.dim() - 2
        ax = self.axis_of(x, conv=True)
        if self._is_watched(x) or ax is None or x.dim() != nd + 2:
            return self._generic_after(func, args, kwargs, out, self._touched(args, kwargs))
        conv = dict(stride=a.get("stride", 1), padding=a.get("padding", 0), dilation=a.get("dilation", 1),
                    groups=a.get("groups", 1), wshape=tuple(w.shape), sketch=None)
        if tw is not None and conv["groups"] == 1 and not isinstance(conv["padding"], str) and ax == 0:
            pp, qq = w.shape[1] * math.prod(w.shape[2:]), w.shape[0]
            if self.conv_estimator == "sketch" or (self.conv_estimator == "auto" and
                                                   pp * qq > max(self.conv_probes, 2) * (pp + qq)):
                conv["sketch"] = self.sketch.project(x.detach(), w.shape, conv["stride"], conv["padding"],
                                                     conv["dilation"], tb is not None)
        self._record("conv", {"x": x, "ax": ax}, {"weight": tw, "bias": tb}, [out], conv)
        return out

    def _multihead(self, func, args, kwargs):
        q = args[0] if args else kwargs.get("query")
        if isinstance(q, torch.Tensor) and q.dim() == 3:
            self._observed_B.add(int(q.shape[1]))
        if self._mha is None:
            self._mha = _mha_body()
        old = self._hint
        self._hint = 1  # inside, the inputs are sequence-first (T, B, E)
        try:
            with self._mode:
                return self._mha(*args, **kwargs)
        finally:
            self._hint = old

    def _lstm_cell(self, func, args, kwargs):
        """``nn.LSTMCell`` (``torch.lstm_cell``) on the CPU, where ATen computes it as a few operations, ``h'``
        from ``c'``: the same operations in the same order (so the same numbers and gradients), run under the
        engine, so that its two matrix products are Linear uses with their exact rule. Elsewhere (a fused kernel
        on accelerators: one autograd node) the generic rule."""
        a = dict(zip(("input", "hx", "w_ih", "w_hh", "b_ih", "b_hh"), args))
        a.update(kwargs)
        x, hx = a.get("input"), a.get("hx")
        if (not isinstance(x, torch.Tensor) or x.device.type != "cpu" or not isinstance(hx, (list, tuple))
                or len(hx) != 2):
            return self._dispatch_generic(func, args, kwargs)
        h, c = hx
        with self._mode:
            gates = F.linear(h, a["w_hh"], a.get("b_hh")) + F.linear(x, a["w_ih"], a.get("b_ih"))
            i, f, g, o = gates.chunk(4, 1)
            cy = f.sigmoid() * c + i.sigmoid() * g.tanh()
            hy = o.sigmoid() * cy.tanh()
        return hy, cy

    def _rnn(self, func, args, kwargs):
        kind = _RNN[func]
        packed = len(args) > 3 and isinstance(args[3], (list, tuple))  # (data, batch_sizes, hx, params, ...)
        # dropout between layers draws from the CPU generator inside the op: its state now replays the masks
        a = args[6:8] if packed else args[5:7]
        rng = torch.get_rng_state() if (len(a) == 2 and a[0] and a[1] and args[0].device.type == "cpu") else None
        out = func(*args, **kwargs)
        bf = (not packed) and len(args) > 8 and isinstance(args[8], bool) and args[8]
        for k, o in enumerate(out if isinstance(out, (tuple, list)) else [out]):
            if isinstance(o, torch.Tensor):  # a packed output's rows are steps of all samples: no batch axis
                self._set_axis(o, (_LOST if packed else (0 if bf else 1)) if k == 0 else 1)
        batch_sizes = None
        if packed:
            x, batch_sizes, hx, weights, has_b, nl, dropout, train, bidir = args[:9]
            batch_first = False
        else:
            x, hx, weights, has_b, nl, dropout, train, bidir, batch_first = args[:9]
        targets = {k: self._target_of(w) for k, w in enumerate(weights)}
        if all(t is None for t in targets.values()):
            return out
        for t in targets.values():
            self._expect(t)
        if dropout > 0 and train and nl > 1 and rng is None:
            self._fail(targets.values(), "dropout between recurrent layers cannot be replayed off the CPU")
            return out
        for t in targets.values():
            self._expect(t, -1)
        self._observed_B.add(int(batch_sizes[0]) if packed else int(x.shape[0 if batch_first else 1]))
        outs = list(out) if isinstance(out, (tuple, list)) else [out]
        self._record("rnn", {"x": x, "hx": hx, "weights": list(weights)}, targets, outs,
                     dict(kind=kind, has_b=has_b, nl=nl, bidir=bidir, batch_first=batch_first, batch_sizes=batch_sizes,
                          dropout=(float(dropout), rng) if rng is not None and nl > 1 else None,
                          lowp=_autocast_half(x) or outs[0].dtype in (torch.float16, torch.bfloat16)))
        return out

    def _pad_packed(self, func, args, kwargs):
        """``pad_packed_sequence``'s op: packed rows back to ``(T, B, .)`` (or ``(B, T, .)``), in the order of the
        packed samples (followed by :meth:`_carry_order`; the unsorting ``index_select`` after it restores it)."""
        out = func(*args, **kwargs)
        a = dict(zip(("data", "batch_sizes", "batch_first"), args))
        a.update(kwargs)
        if isinstance(out, (tuple, list)) and isinstance(out[0], torch.Tensor):
            self._set_axis(out[0], 0 if a.get("batch_first") else 1)
        return out

    # ------------------------------------------------------------------ everything else
    def _generic(self, func, args, kwargs, watched):
        before = None
        if _in_place(func) and args and isinstance(args[0], torch.Tensor) and not self._is_watched(args[0]):
            # h.mul_(s): the op overwrites the data its per-sample rule reads (the factor h of s's gradient); autograd
            # keeps the original for its own formula, and so does the engine
            before = args[0].detach().clone()
        out = func(*args, **kwargs)
        self._propagate(func, args, kwargs, out)
        if before is not None:
            self._set_axis(before, self.axis_of(args[0]))
            rec = self._generic_after(func, (before,) + tuple(args[1:]), kwargs, out, watched)
            use = self._uses[-1] if self._uses else None
            if use is not None and use.inputs is not None and use.inputs.get("args", (None,))[:1] == (before,):
                use.inputs["func"] = _out_of_place(func)  # replayed per sample on the original values
                # and checked against the values it wrote (a later in-place op may overwrite them too)
                use.extra["out_values"] = [o.detach().clone() for o in _flat_tensors(out)]
            return rec
        return self._generic_after(func, args, kwargs, out, watched)

    def _generic_after(self, func, args, kwargs, out, watched):
        outs = _flat_tensors(out)
        if not any(o.requires_grad for o in outs):
            return out
        tensors = []
        for a in tuple(args) + tuple(kwargs.values()):
            tensors.extend(_flat_tensors(a))
        mixed_in = [t for t in tensors if id(t) in self._mixed]
        targets = [(t, self._target_of(t)) for t in watched if id(t) not in self._mixed]
        targets = [(t, tg) for t, tg in targets if tg is not None]
        batched = []
        for t in tensors:
            if self._is_watched(t):
                continue
            ax = self.axis_of(t)
            if ax is not None:
                batched.append((t, ax))
        if self._B is not None:
            self._find_lost_rows(func, args, kwargs)
        name = getattr(func, "__name__", "")
        random = func in _RANDOM or name in _RANDOM_NAMES
        if func in _REDUCE and batched and not targets and not mixed_in:
            t, ax = batched[0]
            if not isinstance(ax, tuple) and _reduces_axis(args, kwargs, ax, t.dim()):
                self._mark_mixed(outs)
            return out
        if mixed_in:
            if batched:
                for t in mixed_in:
                    self._couple_upstream(t, "a reduction over the batch axis is combined with the batch again")
            else:
                if self._nonlinear_in_stat(func, args, mixed_in):
                    for t in mixed_in:
                        self._couple_upstream(t, f"{_fname(func)} of a statistic over the batch (e.g. a load-balancing "
                                                 "loss on the experts' importance) weighs each sample by the others")
                self._mark_mixed(outs)
                return out
        if not targets:
            return out
        tgs = [tg for _, tg in targets]
        if self._refuse_lost(tgs, *[t for t in tensors if not self._is_watched(t)]):
            for o in outs:
                self._set_axis(o, _LOST)
            return out
        if not batched and func in _EXPAND and len(outs) == 1 and len(targets) == 1:
            # t.expand(B, ...): the batch axis appears here; each sample's gradient is its slice
            oax = self._shape_axis(outs[0])
            self._set_axis(outs[0], oax)
            if oax is not None and not isinstance(oax, tuple) and _is_broadcast(func, targets[0][0], outs[0]):
                self._record("broadcast", {"func": func, "args": args, "kwargs": kwargs, "batched": [], "oax": oax},
                             {0: tgs[0]}, [outs[0]], {"watched": [targets[0][0]], "func_name": _fname(func)})
                return out
        if not batched:
            # every input is unbatched: the outputs are tags that map back through the op
            poison = f"an unbatched tensor derived from it goes through the random op {_fname(func)}" if random else None
            for k, o in enumerate(outs):
                if o.requires_grad:
                    self._unbatched(o, _vjp_backprop(func, args, kwargs, targets, k, len(outs), o.shape),
                                    self._tag_params(tgs), poison)
            return out
        for tg in tgs:
            self._expect(tg)
        if random:
            self._fail(tgs, f"used in the random op {_fname(func)} together with batched data")
            return out
        elementwise = len(outs) == 1 and (func in _ADD or func in _SUB or func in _RSUB or func in _MUL)
        if any(isinstance(ax, tuple) for _, ax in batched) and not (
                elementwise and isinstance(self.axis_of(outs[0]), tuple)):
            self._fail(tgs, f"used in {_fname(func)} with a merged batch axis: no per-sample rule")
            return out
        if len(outs) > 1 and any(t.grad_fn is not outs[0].grad_fn for t in outs[1:]):
            # a composite op: its outputs come from different autograd nodes, one computed from another, so an
            # output's gradient already holds what flowed into it through the others
            self._fail(tgs, f"used in {_fname(func)}, whose outputs are computed one from another inside the op: "
                            "no per-sample rule")
            return out
        for tg in tgs:
            self._expect(tg, -1)
        o = outs[0]
        if len(outs) == 1 and (func in _ADD or func in _SUB or func in _RSUB or func in _MUL or
                               (func in _EXPAND and _is_broadcast(func, targets[0][0], o))):
            kind = "broadcast"
        else:
            kind = "vjp"  # also an op of several outputs (e.g. an LSTM cell's (h, c)): one VJP over all of them
        oax = self.axis_of(o) if kind == "broadcast" else None
        if kind == "broadcast" and oax is None:
            kind = "vjp"
        self._record(kind, {"func": func, "args": args, "kwargs": kwargs, "batched": batched, "oax": oax},
                     {k: tg for k, tg in enumerate(tgs)}, list(outs),
                     {"watched": [t for t, _ in targets], "func_name": _fname(func), "autocast": _autocast_state(o)})
        return out

    def _nonlinear_in_stat(self, func, args, mixed_in):
        """A nonlinear function of a per-feature statistic over the batch (``importance = gates.sum(0)`` then its
        variance): its gradient weighs each sample by the whole batch, and the per-sample pieces miss the term
        from the statistic's own fluctuation (as under a train-mode batch norm). A function of a whole-batch
        scalar (``loss.log()``) only rescales every sample's gradient alike, as clipping does: not counted."""
        if not any(t.numel() > 1 for t in mixed_in):
            return False
        if func in (torch.div, torch.Tensor.div, torch.Tensor.__truediv__, torch.true_divide):
            return len(args) > 1 and isinstance(args[1], torch.Tensor) and id(args[1]) in self._mixed
        if func in _MUL:
            return len(mixed_in) > 1
        return func not in _LINEAR_IN_STAT

    def _mark_mixed(self, outs):
        for o in outs:
            if o.requires_grad:
                self._mixed[id(o)] = o
                self._keep.append(o)

    def _couple_upstream(self, t, why):
        """Mark every parameter upstream of ``t`` as coupled across samples."""
        if id(t) in self._pid:
            self._coupled_now.add(self._pid[id(t)])
        stack = [getattr(t, "grad_fn", None)]
        found = []
        while stack:
            node = stack.pop()
            if node is None or id(node) in self._visited:
                continue
            self._visited.add(id(node))
            var = getattr(node, "variable", None)
            if var is not None and id(var) in self._pid:
                found.append(self._pid[id(var)])
            stack.extend(n for n, _ in node.next_functions)
        for p in found:
            self._coupled_now.add(p)
            self._failed.setdefault(p, f"coupled: {why} (per-sample gradients are not defined)")

    # ------------------------------------------------------------------ backward
    def _process(self, use):
        if use.done:
            return
        use.done = True
        with _flush_subnormals(), _no_autocast():
            self._process_inner(use)

    def _process_inner(self, use):
        try:
            cs = self._contributions(use)
        except RecomputeMismatch as exc:
            self._fail(use.targets.values(), f"{use.kind}: {exc}")
            cs = {}
        except Exception as exc:  # noqa: BLE001 - a use we could not handle: its parameters are not covered
            if isinstance(exc, RuntimeError) and "randomness" in str(exc):
                why = (f"{_kind_name(use)} draws random numbers (dropout inside the op, e.g. attention dropout) that "
                       "cannot be replayed per sample: set that dropout to 0, or use Monitor(probe_every=...)")
            else:
                why = f"{_kind_name(use)} per-sample rule failed ({type(exc).__name__}: {exc})"
            self._fail(use.targets.values(), why)
            cs = {}
        use.inputs = use.outputs = None
        use.grads = [None] * use.n_out
        for role, c in cs.items():
            t = use.targets.get(role)
            try:
                self._contribute(t, c)
            except Exception as exc:  # noqa: BLE001 - a tag that could not map back: not covered
                self._fail([t], f"mapping per-sample gradients back failed ({type(exc).__name__}: {exc})")

    def _contributions(self, use):
        g = use.grads[0]
        kind = use.kind
        inp = use.inputs
        tg = use.targets
        if kind == "linear":
            ax = inp["ax"]
            fast = self._linear_rows(use, g)
            if fast is not None:
                return fast
            return linear_contribs(_front(inp["x"].detach(), ax), _front(g, ax), inp["q"], tg["weight"] is not None,
                                   tg["bias"] is not None)
        if kind == "embedding":
            ax = inp["ax"]
            return embedding_contribs(_front(inp["ids"], ax), _front(g, ax), inp["n"], inp["pad"])
        if kind == "conv":
            ex, ax = use.extra, inp["ax"]
            has_w, has_b = tg["weight"] is not None, tg["bias"] is not None
            tw = tg["weight"]
            if ex["sketch"] is not None and tw.name is not None and self._expected.get(tw.name) == 1:
                cs = conv_sketch_contribs(ex["sketch"], g, has_b)
                if has_b:  # the sketch estimates (weight, bias) together: the bias adds nothing more
                    cs["bias"] = SqNorm(torch.zeros(g.shape[0], dtype=torch.float64, device=g.device))
                return cs
            x, gg = (inp["x"].detach(), g) if _folded(ax) else (_front(inp["x"].detach(), ax), _front(g, ax))
            cs = conv_contribs(x, gg, ex["wshape"], ex["stride"],
                               ex["padding"], ex["dilation"], ex["groups"], has_w, has_b)
            return _regroup(cs, ax)
        if kind == "norm":
            ax = inp["ax"]
            x, gg = (inp["x"].detach(), g) if _folded(ax) else (_front(inp["x"].detach(), ax), _front(g, ax))
            cs = norm_contribs(use.extra["kind"], x, gg, use.extra,
                               tg["weight"] is not None, tg["bias"] is not None, inp["pshape"])
            return _regroup(cs, ax)
        if kind == "rnn":
            ex = use.extra
            lowp = ex["lowp"]
            if lowp:  # the step's recurrence ran in a half type: compare sums at that precision
                self._lowp.update(self._tag_params(use.targets.values()))
            cs = rnn_contribs(ex["kind"], inp["x"].detach(), inp["hx"], inp["weights"], ex["has_b"], ex["nl"],
                              ex["bidir"], ex["batch_first"], use.outputs, use.grads, rtol=5e-2 if lowp else 1e-4,
                              batch_sizes=ex.get("batch_sizes"), dropout=ex.get("dropout"))
            return cs
        if kind == "broadcast":
            return _broadcast_contribs(use, g)
        if kind == "matmul":
            ax = inp["ax"]
            x, gf = _front(inp["x"].detach(), ax), _front(g, ax)
            out = {}
            if tg["weight"] is not None:
                c = matmul_contribs(x, gf, inp["q"])["weight"]
                out["weight"] = c if inp["alpha"] == 1 else Outer(c.u * inp["alpha"], c.v, c.q)
            if tg["bias"] is not None:
                g3 = gf.reshape(gf.shape[0], -1, gf.shape[-1])
                out["bias"] = Dense(g3.sum(1) * inp["beta"])
            return out
        if kind == "vjp":
            ac = use.extra.get("autocast")
            if ac is not None and ac[1] in (torch.float16, torch.bfloat16):  # replayed in a half type: compare sums
                self._lowp.update(self._tag_params(use.targets.values()))  # at that precision
            return _vjp_contribs(use, use.grads, use.extra["B"])
        raise AssertionError(kind)  # pragma: no cover

    def _linear_rows(self, use, g):
        """The common case, cheaply: a Linear on ``(B, in)`` rows whose weight and bias are used once in the
        pass: ``||g_i||^2 ||x_i||^2`` and ``||g_i||^2`` (CPU, outside the steps that check sums; the values are
        checked to be clear of under- and overflow, else the general path runs)."""
        inp, tg = use.inputs, use.targets
        x = inp["x"]
        if x.dim() != 2 or inp["ax"] != 0 or x.device.type != "cpu" or self._checking:
            return None
        for t in tg.values():  # (a parameter also in a loss term of its own needs its factors' sum: not here)
            if t is not None and (t.name is None or self._expected.get(t.name) != 1 or t.name in self._shared_use):
                return None
        dt = torch.float64 if x.dtype == torch.float64 else torch.float32
        gn = torch.linalg.vector_norm(g, dim=1, dtype=dt)
        safe = (1e-14, 1e18) if dt == torch.float32 else (1e-140, 1e150)
        if not _clear_of_range(gn.tolist(), *safe):
            return None
        out = {}
        gsq = gn.double().square()
        if tg["weight"] is not None:
            xn = torch.linalg.vector_norm(x.detach(), dim=1, dtype=dt)
            if not _clear_of_range(xn.tolist(), *safe):
                return None
            out["weight"] = SqNorm(gsq * xn.double().square())
        if tg["bias"] is not None:
            out["bias"] = SqNorm(gsq)
        return out

    def _end_of_backward(self):
        with _flush_subnormals():
            self._end_of_backward_inner()

    def _end_of_backward_inner(self):
        self._callback_queued = False
        self._measured_in_step = True
        for use in self._uses:
            if not use.done and any(gr is not None for gr in use.grads):
                self._process(use)
        for name in list(self._contribs):
            self._reduce(name)
        error = self._pass_error
        if self._higher_order:  # not comparable with autograd's gradient: no sum check, the note as the reason
            error = error or HIGHER_ORDER_NOTE
            for name in self._reduced:
                self._failed.setdefault(name, HIGHER_ORDER_NOTE)
        if not self._checking:  # a failed sum check holds until a later check passes (a loss regulariser stays)
            for name, why in self._sum_failed.items():
                if name in self._reduced:
                    self._failed.setdefault(name, why + " (found by the last sum check; rechecked every "
                                                        f"{self.check_every} measured steps)")
        reduced = {n: sq for n, sq in self._reduced.items() if n not in self._failed and n not in self._coupled_now}
        sizes = {int(sq.shape[0]) for sq in reduced.values()}
        if len(sizes) > 1:
            error = error or f"parameters saw different batch sizes {sorted(sizes)}"
        if not self._higher_order:
            self._check_sums(reduced)
        covered = set(reduced) if error is None else set()
        total = None
        for n in covered:
            total = reduced[n] if total is None else total + reduced[n]
        for name, why in self._failed.items():
            self.reasons[name] = why
        for name, p in self.params.items():
            if name not in reduced and name not in self._failed and p.grad is not None:
                self.reasons.setdefault(name, "no use seen in the model's forward (used outside it, e.g. in the "
                                              "loss, or by an op that is not intercepted)")
        if error is not None:
            self.notes.append(error)
        self.last_error = error
        self.passes.append(total)
        self.last_reduced = {n: reduced[n] for n in covered}
        self.covered_last = covered
        self.covered_ever |= covered
        self.coupled |= self._coupled_now
        for n in covered:
            self.reasons.pop(n, None)
        for use in self._uses:
            for t in use.targets.values():
                for n in self._tag_params([t]):
                    if n in covered and n not in self.estimator:
                        self.estimator[n] = _kind_name(use) if t.name is not None else f"unbatched via {_kind_name(use)}"
        self._reset_pass()
        if self.on_pass_end is not None:
            self.on_pass_end(self)

    def _check_sums(self, reduced):
        """On checking steps: the per-sample gradients of every covered parameter must sum to the gradient
        autograd accumulated in this step (with the gradients zeroed before the step). A parameter also in a loss
        term of its own (:attr:`shared_last`) is not checked: what its sum lacks is that term, on every step."""
        shared = self._shared_use - self._outside_use
        if not self.shared_terms:
            for name in shared & set(reduced):
                del reduced[name]
                self._failed[name] = ("also in a loss term of its own (a regulariser), which every sample's gradient "
                                      "shares: not split here (gradients all-reduced across workers)")
            shared = set()
        for name in shared & set(reduced):
            acc, p = self._sum_acc.get(name), self.params[name]
            if acc is None or p.grad is None or p.grad.is_sparse:
                del reduced[name]
                self._failed[name] = "also in a loss term of its own, but its gradient could not be split"
                continue
            g = p.grad.detach().to(acc.dtype)
            r = g - acc
            self.shared_last[name] = (float((r * g).sum()), float((r * r).sum()))
        if not self._checking:
            return
        grads = {}
        for name in reduced:
            if name in shared:
                continue
            acc = self._sum_acc.get(name)
            p = self.params[name]
            if acc is not None and p.grad is not None:
                grads[name] = (acc, (p.grad.to_dense() if p.grad.is_sparse else p.grad).detach().to(acc.dtype))
        # a gradient at the rounding level of the model's (e.g. an attention key bias, whose gradient is zero up to
        # rounding because softmax ignores a shift) is not judged relative to itself
        floor = 1e-6 * max((float(g.norm()) for _, g in grads.values()), default=0.0)
        for name, (acc, gr) in grads.items():
            p = self.params[name]
            err = float((acc - gr).norm())
            ref = max(float(gr.norm()), float(reduced[name].sum().sqrt()), floor)
            # half-precision factors (autocast) round to ~3 digits; float32 sums differ in the order of summation
            tol = 2e-2 if (name in self._lowp or p.dtype in (torch.float16, torch.bfloat16)) else (
                1e-3 if acc.dtype != torch.float64 else 1e-6)
            # an error at the rounding level of the step's gradients passes whatever this gradient's own size (a
            # bias that a following instance norm makes exactly zero has a gradient of rounding noise)
            noise = floor * (1.0 if acc.dtype != torch.float64 else 1e-6)
            if err > max(tol * ref, noise) and not (ref == 0 and err == 0):
                del reduced[name]
                self._failed[name] = (f"its per-sample gradients sum to something else than its gradient (relative "
                                      f"difference {err / max(ref, 1e-300):.2g}): it is also used outside the model's "
                                      "forward (a regulariser in the loss?), or the gradients were not zeroed")
                self._sum_failed[name] = self._failed[name]
            else:
                self._sum_failed.pop(name, None)


_NORM_ARGS = {"layer_norm": ("input", "normalized_shape", "weight", "bias", "eps"),
              "rms_norm": ("input", "normalized_shape", "weight", "eps"),
              "group_norm": ("input", "num_groups", "weight", "bias", "eps"),
              "instance_norm": ("input", "running_mean", "running_var", "weight", "bias", "use_input_stats",
                                "momentum", "eps"),
              "batch_norm": ("input", "running_mean", "running_var", "weight", "bias", "training", "momentum", "eps")}

_TABLE = {F.linear: PerSampleSqNorms._linear, F.embedding: PerSampleSqNorms._embedding,
          torch.conv1d: PerSampleSqNorms._conv, torch.conv2d: PerSampleSqNorms._conv,
          F.multi_head_attention_forward: PerSampleSqNorms._multihead}
_TABLE.update({f: PerSampleSqNorms._norm for f in _NORMS})
_TABLE.update({f: PerSampleSqNorms._matmul for f in _MATMUL | _ADDMM})
_TABLE[F.scaled_dot_product_attention] = PerSampleSqNorms._sdpa
_TABLE[torch._C._VariableFunctions.lstm_cell] = PerSampleSqNorms._lstm_cell
_TABLE.update({f: PerSampleSqNorms._rnn for f in _RNN})
_TABLE[torch._C._VariableFunctions._pad_packed_sequence] = PerSampleSqNorms._pad_packed
_TABLE.update({f: PerSampleSqNorms._view for f in _TRANSPOSE | _RESHAPE | {torch.Tensor.__getitem__}})


# --------------------------------------------------------------------------- helpers
def _table_backprop(ids, tw, n, pad, out_shape):
    """Backprop of an embedding looked up with ids that have no batch axis (a position table): each sample's
    gradient of the table from its gradient of the lookup's output."""
    ids_c, out_shape = ids.detach(), tuple(out_shape)

    def backprop(c):
        gs = _dense(c, out_shape)
        return [(tw, embedding_contribs(ids_c.expand((gs.shape[0],) + tuple(ids_c.shape)), gs, n, pad)["weight"])]

    return backprop


def _clear_of_range(values, lo, hi) -> bool:
    """Every value is 0 (exact) or inside ``(lo, hi)``: its square neither underflows nor overflows. Checked by
    the extremes first (two builtins over the list), element by element only when the smallest is not clear."""
    if not values:
        return True
    total = sum(values)
    if total != total or max(values) >= hi:  # a NaN, or too large
        return False
    return min(values) > lo or all(v == 0.0 or v > lo for v in values)


def _output_tensors(output):
    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, dict):
        return [v for v in output.values() if isinstance(v, torch.Tensor)]
    if isinstance(output, (list, tuple)):
        out = []
        for v in output:
            out.extend(_output_tensors(v))
        return out
    vals = getattr(output, "values", None)  # e.g. transformers' ModelOutput
    if callable(vals):
        try:
            return [v for v in vals() if isinstance(v, torch.Tensor)]
        except Exception:  # noqa: BLE001
            return []
    return []


def _fname(func):
    return getattr(func, "__qualname__", None) or getattr(func, "__name__", None) or str(func)


def _kind_name(use):
    if use.kind == "conv":
        return "conv_sketch" if use.extra.get("sketch") is not None else "conv"
    if use.kind in ("norm", "rnn"):
        return use.extra["kind"]
    if use.kind in ("broadcast", "vjp", "matmul"):
        return f"{use.kind}:{use.extra.get('func_name', '?')}"
    return use.kind


_LOST = "lost"  # batch-dependent, but where the batch is could not be followed: the shape decides


def _indexed_axis(src, index, ax, out):
    """Where the batch axis goes under basic indexing (ints, slices, None, Ellipsis); advanced indexing or an
    int on the batch axis itself: lost (the shape decides)."""
    if isinstance(ax, tuple):
        return ax if (index is None or isinstance(index, slice) or (isinstance(index, tuple) and index and
                                                                    isinstance(index[0], slice))) and \
            out.dim() > 0 and out.shape[0] == src.shape[0] and ax[1] == 0 else _LOST
    idx = index if isinstance(index, tuple) else (index,)
    if any(isinstance(i, torch.Tensor) or isinstance(i, (list,)) for i in idx):
        return _gathered_axis(src, idx, ax, out)
    n_real = sum(1 for i in idx if i is not None and i is not Ellipsis)
    expanded = []
    for i in idx:
        if i is Ellipsis:
            expanded.extend([slice(None)] * (src.dim() - n_real))
        else:
            expanded.append(i)
    expanded.extend([slice(None)] * (src.dim() - sum(1 for i in expanded if i is not None)))
    d_in = d_out = 0
    for i in expanded:
        if i is None:
            d_out += 1
            continue
        if d_in == ax:
            return d_out if isinstance(i, slice) and out.dim() > d_out else _LOST
        if isinstance(i, slice):
            d_out += 1
        d_in += 1
    return _LOST


def _gathered_axis(src, idx, ax, out):
    """Advanced indexing that keeps one row per sample, in order: the batch axis indexed by ``arange(B)`` along one
    axis of its index (``h[torch.arange(B), last]``, each sequence's last token; Hugging Face's mask functions'
    ``mask[arange(B)[:, None, None, None], kv_idx]``), the other tensor indices of any shape that broadcasts
    with it (a column per sample), all of them adjacent, no int, ``None`` or ``Ellipsis``: the batch axis is
    where that axis lands in their broadcast result (numpy's rule for adjacent advanced indices). Anything else:
    lost."""
    if isinstance(ax, tuple) or len(idx) <= ax:
        return _LOST
    if any(i is None or i is Ellipsis or isinstance(i, (int, bool)) for i in idx):
        return _LOST
    adv = [k for k, i in enumerate(idx) if isinstance(i, (torch.Tensor, list))]
    if adv != list(range(adv[0], adv[-1] + 1)) or ax not in adv:
        return _LOST
    B = src.shape[ax]
    try:
        tens = {k: (idx[k] if isinstance(idx[k], torch.Tensor) else torch.as_tensor(idx[k])) for k in adv}
        shape = torch.broadcast_shapes(*(t.shape for t in tens.values()))
    except (TypeError, ValueError, RuntimeError):
        return _LOST
    if any(t.dtype == torch.bool or t.is_floating_point() for t in tens.values()):
        return _LOST
    tb = tens[ax]
    along = [a for a, n in enumerate(tb.shape) if n != 1] or ([tb.dim() - 1] if tb.dim() and B == 1 else [])
    if tb.numel() != B or len(along) != 1 or tb.shape[along[0]] != B:
        return _LOST
    if not torch.equal(tb.reshape(-1), torch.arange(B, device=tb.device, dtype=tb.dtype)):
        return _LOST
    pos = adv[0] + (len(shape) - tb.dim()) + along[0]  # every index before the advanced ones is a slice
    return pos if out.dim() > pos and out.shape[pos] == B else _LOST


def _gathered_rows(func, args, kwargs, ax, n):
    """Which rows ``index_select`` / ``gather`` / ``take_along_dim`` takes along axis ``ax`` (of length ``n``):
    ``None`` for each row its own (or another axis), a tuple for a permutation of the ``n`` rows (the same for
    every column), :data:`_LOST` for anything else (a subset, a repeated row, a different order per column)."""
    names = ("input", "indices", "dim") if func in _TAKE_ALONG else ("input", "dim", "index")
    a = dict(zip(names, args))
    a.update(kwargs)
    x, dim, index = a.get("input"), a.get("dim"), a.get("index", a.get("indices"))
    if not isinstance(x, torch.Tensor) or not isinstance(index, torch.Tensor):
        return _LOST
    if dim is None:  # take_along_dim without dim: over the flattened input
        return _LOST
    if dim % max(x.dim(), 1) != ax:
        return None
    k = ax if index.dim() > 1 else 0
    if index.dim() > 1 and index.dim() != x.dim() or index.shape[k] != n:
        return _LOST
    rows = index if index.dim() == 1 else index.movedim(k, 0).reshape(n, -1)[:, 0]
    if index.dim() > 1:
        shape = [n if j == k else 1 for j in range(index.dim())]
        if not torch.equal(index, rows.view(shape).expand_as(index)):
            return _LOST
    perm = _permutation(rows, n)
    if perm is None:
        return _LOST
    return None if perm == tuple(range(n)) else perm


def _permutation(index, n):
    """``index`` (1-D integers) as a tuple when it takes each of ``n`` rows once, else ``None``."""
    if index.dim() != 1 or index.numel() != n or index.dtype == torch.bool or index.is_floating_point():
        return None
    if not torch.equal(index.sort().values, torch.arange(n, device=index.device, dtype=index.dtype)):
        return None
    return tuple(index.tolist())


def _permuted_rows(src, index, ax, out):
    """``h[perm]`` / ``h[:, perm]``: one integer index of the batch's length on the batch axis (every other index
    a full slice) that takes each sample once: the permutation, else ``None``."""
    if isinstance(ax, tuple):
        return None
    idx = index if isinstance(index, tuple) else (index,)
    if len(idx) <= ax or any(not (isinstance(i, slice) and i == slice(None)) for k, i in enumerate(idx) if k != ax):
        return None
    i = idx[ax]
    if isinstance(i, list):
        try:
            i = torch.as_tensor(i)
        except (TypeError, ValueError, RuntimeError):
            return None
    if not isinstance(i, torch.Tensor):
        return None
    n = src.shape[ax]
    if out.dim() != src.dim() or out.shape[ax] != n:
        return None
    return _permutation(i, n)


def _is_lost(t, fid):
    a = t.__dict__.get("_hhld_ax") if hasattr(t, "__dict__") else None
    return a is not None and a[0] == fid and a[1] is _LOST


def _reshape_axis(in_shape, ax, out_shape):
    """Where a batch axis (an int, or ``("fold", k, sizes, pos)``: axis ``k`` merges ``sizes`` with the batch
    at ``pos``) goes through a reshape from ``in_shape`` to ``out_shape`` (same flat layout)."""
    if isinstance(ax, tuple):
        _, k, sizes, pos = ax
        v = list(in_shape[:k]) + list(sizes) + list(in_shape[k + 1:])
        bax = k + pos
    else:
        v, bax = list(in_shape), ax
    cum = [1]
    for d in v:
        cum.append(cum[-1] * d)
    pre, post = cum[bax], cum[bax + 1]
    acc = 1
    for k, size in enumerate(out_shape):
        nxt = acc * size
        if acc <= pre and nxt >= post:
            if pre % acc or nxt % post:
                return _LOST
            before, after = pre // acc, nxt // post
            if before == 1 and after == 1:
                return k
            sizes = tuple(d for d in (before, v[bax], after) if d != 1) if v[bax] != 1 else (before, 1, after)
            return ("fold", k, sizes, 1 if before != 1 else 0)
        acc = nxt
    return _LOST


def _permuted_axis(func, n, ax, rest):
    """Where axis ``ax`` of an ``n``-dim tensor goes under a transpose / permute / movedim."""
    name = getattr(func, "__name__", "")
    try:
        if func == _T_GET:  # reverses every axis
            return n - 1 - ax
        if func == _MT_GET:  # swaps the last two
            return {n - 2: n - 1, n - 1: n - 2}.get(ax, ax)
        if name == "t":
            return n - 1 - ax
        if name == "permute":
            dims = rest[0] if len(rest) == 1 and isinstance(rest[0], (list, tuple)) else rest
            return [d % n for d in dims].index(ax)
        if name == "movedim":
            src = [rest[0]] if isinstance(rest[0], int) else list(rest[0])
            dst = [rest[1]] if isinstance(rest[1], int) else list(rest[1])
            src, dst = [s % n for s in src], [d % n for d in dst]
            perm = [None] * n
            for s, d in zip(src, dst):
                perm[d] = s
            rem = iter(a for a in range(n) if a not in src)
            perm = [p if p is not None else next(rem) for p in perm]
            return perm.index(ax)
        a, b = rest[0] % n, rest[1] % n
        return b if ax == a else a if ax == b else ax
    except Exception:  # noqa: BLE001 - an unusual signature: leave it to the shape rule
        return None


def _reduces_axis(args, kwargs, ax, ndim):
    dim = kwargs.get("dim", kwargs.get("axis"))
    if dim is None and len(args) > 1 and not isinstance(args[1], torch.Tensor):
        dim = args[1]
    if dim is None:
        return True
    if isinstance(dim, (str,)):
        return False
    dims = [dim] if isinstance(dim, int) else list(dim)
    return any(d % ndim == ax for d in dims)


def _is_broadcast(func, t, out):
    """``expand`` / ``broadcast_to`` always broadcast; ``repeat`` only when it repeats along the batch alone."""
    if func is not torch.Tensor.repeat:
        return True
    return tuple(out.shape[1:]) == tuple(t.shape[1:]) and t.shape[0] == 1


def _front(t, ax):
    """``t`` with the batch axis first; a merged batch axis is split, its other factors kept right after it."""
    if isinstance(ax, tuple):
        _, k, sizes, pos = ax
        t = t.reshape(tuple(t.shape[:k]) + tuple(sizes) + tuple(t.shape[k + 1:]))
        ax = k + pos
    return t.movedim(ax, 0) if ax else t


def _folded(ax):
    return isinstance(ax, tuple)


def _regroup(cs, ax):
    """Contributions computed with a merged batch axis 0 (its rows are ``sizes``, the batch at ``pos``)
    regrouped per sample."""
    if not isinstance(ax, tuple):
        return cs
    _, k, sizes, pos = ax
    B = sizes[pos]
    out = {}
    for key, c in cs.items():
        if isinstance(c, Outer):
            def per(t):
                t = t.reshape(tuple(sizes) + tuple(t.shape[1:]))
                t = t.movedim(pos, 0) if pos else t
                return t.reshape((B, -1) + tuple(t.shape[len(sizes) + 1:]))

            out[key] = Outer(per(c.u), per(c.v), c.q, c.rows)
        elif isinstance(c, Dense):
            g = c.g.reshape(tuple(sizes) + tuple(c.g.shape[1:]))
            g = g.movedim(pos, 0) if pos else g
            out[key] = Dense(g.reshape((B, -1) + tuple(c.g.shape[1:])).sum(1))
        else:
            raise ValueError("a sketch cannot be regrouped")
    return out


def _dense(c, shape):
    """Per-sample gradients ``(B, *shape)`` of a contribution."""
    if isinstance(c, Dense):
        g = c.g
    elif isinstance(c, Outer):
        B, p = c.v.shape[0], c.v.shape[-1]
        if c.is_index:
            g = c.v.new_zeros((B, c.q, p))
            g.scatter_add_(1, c.u.unsqueeze(-1).expand(-1, -1, p), c.v)
        else:
            blk = torch.bmm(c.u.transpose(1, 2).to(c.v.dtype), c.v)
            if c.rows or blk.shape[1] != c.q:
                g = blk.new_zeros((B, c.q, p))
                g[:, c.rows:c.rows + blk.shape[1]] = blk
            else:
                g = blk
    else:
        raise TypeError(f"cannot form per-sample gradients from {type(c).__name__}")
    return g if shape is None else g.reshape((g.shape[0],) + tuple(shape))


def _sum_to_per_sample(g, shape, oax):
    """Per-sample gradient of an unbatched operand of ``shape`` broadcast into ``g`` (batch axis ``oax``)."""
    lead = g.dim() - len(shape)
    if lead < 0:
        raise ValueError(f"cannot map {tuple(g.shape)} to {tuple(shape)}")
    red = tuple(a for a in range(g.dim()) if a != oax and (a < lead or shape[a - lead] == 1) and g.shape[a] != 1)
    gs = g.sum(red, keepdim=True) if red else g
    if oax >= lead and shape[oax - lead] != 1:
        return _diagonal_per_sample(gs, tuple(shape), oax - lead)
    gs = gs.movedim(oax, 0) if oax else gs
    return gs.reshape((g.shape[oax],) + tuple(shape))


#: the most numbers (batch x operand size) the per-sample gradients of a batch-long unbatched operand may take
DIAGONAL_LIMIT = 1 << 24


def _diagonal_per_sample(gs, shape, j):
    """Per-sample gradients of an operand without a batch axis whose axis ``j`` is as long as the batch and lines
    up with the batch axis (e.g. ``torch.ones(B, T)`` made inside the forward, OPT's position mask): its row
    ``i`` meets sample ``i`` only, so sample ``i``'s gradient is ``gs``'s row ``i`` in place ``i``, zeros elsewhere
    (``B`` times the operand's size, refused above :data:`DIAGONAL_LIMIT`)."""
    B = shape[j]
    if B * math.prod(shape) > DIAGONAL_LIMIT:
        raise ValueError(f"an operand of shape {shape} made inside the forward without a batch axis is as long as "
                         f"the batch on the batch axis; its per-sample gradients would take {B * math.prod(shape)} "
                         "numbers: build it from the input instead (e.g. pass attention_mask=torch.ones_like("
                         "input_ids) to a Hugging Face model), or use Monitor(probe_every=...) for exact statistics "
                         "on a probe batch")
    gs = gs.reshape(shape)
    out = gs.new_zeros((B,) + shape)
    i = torch.arange(B, device=gs.device)
    out.movedim(j + 1, 1)[i, i] = gs.movedim(j, 0)
    return out


def _broadcast_contribs(use, g):
    """``y = x (+, -, *) t`` or ``y = t.expand(...)`` with ``t`` unbatched: per-sample ``dt_i``."""
    inp = use.inputs
    func, args, kwargs, oax = inp["func"], inp["args"], inp["kwargs"], inp["oax"]
    out = {}
    for k, t in enumerate(use.extra["watched"]):
        gt = g
        if func in _MUL:
            other = next((a for a in tuple(args) + tuple(kwargs.values()) if a is not t), 1.0)
            gt = gt * (other.detach() if isinstance(other, torch.Tensor) else other)
        elif func in _SUB:
            if len(args) > 1 and args[1] is t:
                gt = -kwargs.get("alpha", 1) * gt
        elif func in _RSUB:
            if args and args[0] is t:
                gt = -gt
        elif func in _ADD:
            alpha = kwargs.get("alpha", 1)
            if alpha != 1 and len(args) > 1 and args[1] is t:
                gt = alpha * gt
        ax = oax
        if isinstance(oax, tuple):  # axis k merges the batch (at pos) with other axes: split it, those summed over
            _, kk, sizes, pos = oax
            gt = gt.reshape(tuple(gt.shape[:kk]) + tuple(sizes) + tuple(gt.shape[kk + 1:]))
            ax = kk + pos
        out[k] = Dense(_sum_to_per_sample(gt, tuple(t.shape), ax))
    return out


_IN_PLACE_DUNDERS = {"__iadd__": "__add__", "__isub__": "__sub__", "__imul__": "__mul__", "__itruediv__": "__truediv__",
                     "__ifloordiv__": "__floordiv__", "__imod__": "__mod__", "__ipow__": "__pow__",
                     "__imatmul__": "__matmul__"}


def _in_place(func) -> bool:
    """``Tensor.mul_``, ``h *= s`` and the like: the op writes into its first argument."""
    name = getattr(func, "__name__", "")
    return name in _IN_PLACE_DUNDERS or (name.endswith("_") and not name.endswith("__") and not name.startswith("_"))


def _out_of_place(func):
    """The out-of-place form of an in-place op (``mul_`` -> ``mul``, ``__imul__`` -> ``__mul__``), else ``func``."""
    name = getattr(func, "__name__", "")
    other = _IN_PLACE_DUNDERS.get(name, name[:-1] if name.endswith("_") else None)
    return getattr(torch.Tensor, other, func) if other else func


@contextlib.contextmanager
def _quiet_vmap():
    """vmap's fallback for an op without a batching rule (a loop: slower, same numbers) is not the user's concern:
    its "performance drop" warning is silenced."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*performance drop because we have not yet implemented")
        yield


def _vjp_backprop(func, args, kwargs, targets, k, n_out, out_shape):
    """Backprop of a tag made by an op on unbatched inputs: ``vmap`` over samples of the op's VJP."""
    from torch.func import vjp, vmap

    ws = [t for t, _ in targets]
    tgs = [tg for _, tg in targets]
    idx = {id(t): i for i, t in enumerate(ws)}
    args_d = _detach_tree(args, idx)
    kwargs_d = _detach_tree(kwargs, idx)
    prim = tuple(w.detach() for w in ws)

    def f(*vals):
        r = func(*_substitute(args_d, idx, vals), **_substitute(kwargs_d, idx, vals))
        return r[k] if n_out > 1 else r

    def backprop(c):
        gs = _dense(c, tuple(out_shape))
        _, pull = vjp(f, *prim)
        with _quiet_vmap():
            grads = vmap(pull)(gs)
        return [(tg, Dense(gr)) for tg, gr in zip(tgs, grads)]

    return backprop


def _detach_tree(x, idx):
    if isinstance(x, torch.Tensor):
        return x if id(x) in idx else x.detach()
    if isinstance(x, (list, tuple)):
        return type(x)(_detach_tree(a, idx) for a in x)
    if isinstance(x, dict):
        return {k: _detach_tree(v, idx) for k, v in x.items()}
    return x


def _substitute(x, idx, vals):
    if isinstance(x, torch.Tensor):
        i = idx.get(id(x))
        return vals[i] if i is not None else x
    if isinstance(x, (list, tuple)):
        return type(x)(_substitute(a, idx, vals) for a in x)
    if isinstance(x, dict):
        return {k: _substitute(v, idx, vals) for k, v in x.items()}
    return x


def _vjp_contribs(use, gs, B):
    """Exact per-sample VJPs of an op that mixes batched inputs and parameters, through ``torch.func.vmap``,
    checked against the op's outputs (``gs``: the gradient of each output, ``None`` for one that got none)."""
    from torch.func import vjp, vmap

    inp = use.inputs
    func, args, kwargs, batched = inp["func"], inp["args"], inp["kwargs"], inp["batched"]
    ws = use.extra["watched"]
    bidx = {id(t): i for i, (t, _) in enumerate(batched)}
    widx = {id(t): i for i, t in enumerate(ws)}

    # a tensor made in the forward with B equal rows and no tracked batch axis (nn.GRUCell's own zero state
    # torch.zeros(B, H)) is batched along axis 0 here: exact whatever sample each row is taken for, because
    # every row is the same (checked)
    batched = list(batched)

    def scan(x):
        if isinstance(x, torch.Tensor):
            if (id(x) not in widx and id(x) not in bidx and x.dim() >= 1 and x.shape[0] == B and B > 1
                    and not x.requires_grad and torch.equal(x, x[:1].expand_as(x))):
                bidx[id(x)] = len(batched)
                batched.append((x, 0))
        elif isinstance(x, (list, tuple)):
            for a in x:
                scan(a)
        elif isinstance(x, dict):
            for a in x.values():
                scan(a)

    scan(args)
    scan(kwargs)
    in_axes = tuple(ax for _, ax in batched)

    def sub(x, bvals, wvals):
        if isinstance(x, torch.Tensor):
            i = widx.get(id(x))
            if i is not None:
                return wvals[i]
            j = bidx.get(id(x))
            if j is not None:
                return bvals[j]
            return x.detach()
        if isinstance(x, (list, tuple)):
            return type(x)(sub(a, bvals, wvals) for a in x)
        if isinstance(x, dict):
            return {kk: sub(v, bvals, wvals) for kk, v in x.items()}
        return x

    wprim = tuple(w.detach() for w in ws)
    bvals0 = tuple(t.detach() for t, _ in batched)

    outs = list(use.outputs)
    x0, ax0 = batched[0]
    oaxs = [ax0 + (o.dim() - x0.dim()) for o in outs]
    if not all(0 <= a < o.dim() and o.shape[a] == B for o, a in zip(outs, oaxs)):
        raise RecomputeMismatch(f"cannot find the batch axis of the output of {_fname(func)}")
    # an output that got no gradient contributes nothing: a zero cotangent
    cots = tuple(g if g is not None else torch.zeros_like(o) for g, o in zip(gs, outs))

    def per_sample(bvals, gi):
        # each batched input arrives without its batch axis: give it back as a size-1 axis
        bv = [b.unsqueeze(ax) for b, ax in zip(bvals, in_axes)]

        def f(*wvals):
            return func(*sub(args, bv, wvals), **sub(kwargs, bv, wvals))

        y, pull = vjp(f, *wprim)
        if isinstance(y, torch.Tensor):
            return y, pull(gi[0].reshape(y.shape))
        return tuple(y), pull(tuple(c.reshape(t.shape) for c, t in zip(gi, y)))

    # the op ran under autocast: replayed under the same autocast (the same casts, the same output dtypes)
    ac = use.extra.get("autocast")
    with torch.autocast(ac[0], dtype=ac[1]) if ac is not None else contextlib.nullcontext(), _quiet_vmap():
        ys, grads = vmap(per_sample, in_dims=(in_axes, tuple(oaxs)))(bvals0, cots)
    ys = (ys,) if isinstance(ys, torch.Tensor) else tuple(ys)
    for y, o, a in zip(ys, use.extra.get("out_values", outs), oaxs):
        yref = o.detach().movedim(a, 0)
        # a half-precision output may round differently by one unit in the last place (summation order)
        rtol = 2 * torch.finfo(yref.dtype).eps if yref.dtype in (torch.float16, torch.bfloat16) else 1e-4
        if y.numel() != yref.numel() or not torch.allclose(y.reshape(yref.shape).to(yref.dtype), yref, rtol=rtol,
                                                           atol=1e-6 * max(1.0, float(yref.abs().max()))):
            raise RecomputeMismatch(f"{_fname(func)} recomputed per sample differs from the batched op")
    return {kk: Dense(gr) for kk, gr in enumerate(grads)}


def _no_autocast():
    """The rules compute in the factors' own dtypes, also when ``backward()`` is called inside an autocast block
    (a replayed op runs under the autocast it was recorded with, explicitly)."""
    on = [dev for dev in ("cpu", "cuda") if _autocast_on(dev)]
    if not on:
        return contextlib.nullcontext()
    stack = contextlib.ExitStack()
    for dev in on:
        stack.enter_context(torch.autocast(dev, enabled=False))
    return stack


def _autocast_on(dev):
    try:
        return bool(torch.is_autocast_enabled(dev))
    except TypeError:  # pragma: no cover - torch < 2.4
        return torch.is_autocast_cpu_enabled() if dev == "cpu" else torch.is_autocast_enabled()


class _flush_subnormals:
    """Flush subnormal floats to zero while the engine computes (they make CPU matrix products up to 50x
    slower; a per-sample norm loses nothing measurable), then restore the thread's previous setting."""

    # a product of two module-level floats (never folded at compile time) underflows to a subnormal unless the
    # thread flushes them: the same floating-point control flags torch.set_flush_denormal sets (about 1 us)
    _tiny, _scale = 1e-308, 1e-10

    def __enter__(self):
        self.prev = (self._tiny * self._scale) == 0.0
        if not self.prev:
            torch.set_flush_denormal(True)
        return self

    def __exit__(self, *exc):
        if not self.prev:
            torch.set_flush_denormal(False)


def _autocast_state(x):
    """``(device type, dtype)`` of the autocast on for ``x``'s device, ``None`` when it is off."""
    dev = x.device.type
    try:
        on = torch.is_autocast_enabled(dev)
        dt = torch.get_autocast_dtype(dev)
    except TypeError:  # pragma: no cover - torch < 2.4
        on = torch.is_autocast_cpu_enabled() if dev == "cpu" else torch.is_autocast_enabled()
        dt = torch.get_autocast_cpu_dtype() if dev == "cpu" else torch.get_autocast_gpu_dtype()
    return (dev, dt) if on else None


def _autocast_half(x):
    """Whether autocast to a half type is on for ``x``'s device."""
    st = _autocast_state(x)
    return st is not None and st[1] in (torch.float16, torch.bfloat16)


def _lowp(c):
    half = (torch.float16, torch.bfloat16)
    if isinstance(c, Outer):
        return c.v.dtype in half or (c.u.is_floating_point() and c.u.dtype in half)
    if isinstance(c, Dense):
        return c.g.dtype in half
    return False


def sum_of_contribs_all(cs, shape):
    """``sum_i`` of all per-sample gradients of a parameter (``None`` for a sketch)."""
    tot = None
    for c in cs:
        if isinstance(c, SqNorm):
            return None
        s = sum_of_contribs(c, shape)
        tot = s if tot is None else tot + s
    return tot
