"""Per-sample squared gradient norms from forward/backward hooks.

No per-sample gradient is materialised for the common layers: a forward hook keeps the
layer input ``a`` and a tensor hook on the output receives ``g = dL/d(output)``; the
per-sample squared norm of the parameter gradient is then computed from ``a`` and ``g``:

* ``nn.Linear`` on ``(B, in)``: ``||g_i||^2 ||a_i||^2`` (weight) and ``||g_i||^2`` (bias),
  i.e. ``||g_i||^2 (||a_i||^2 + 1)``: four small ops per layer, no per-sample gradient;
  on sequences ``(B, T..., in)`` the per-sample weight gradient is ``sum_t g_it a_it^T`` and
  its squared norm is ``sum_{t,s} (g_it . g_is)(a_it . a_is)`` (the Gram / "ghost norm"
  trick, ``O(B T^2 (in+out))``), or the per-sample gradient ``(B, out, in)`` is formed when
  that is cheaper (``T^2 (in+out) > in*out``);
* ``nn.Conv1d`` / ``nn.Conv2d`` (``groups=1``, zero padding), two estimators:

  - ``"exact"`` (kind ``conv``): the input is unfolded into patches and treated as a Linear
    layer over positions (per-sample gradient ``(B, out, in*k)`` or Gram trick, whichever is
    cheaper); cost ``~ B T p q`` for ``T`` output positions, ``p = in*k``, ``q = out``;
  - ``"sketch"`` (kind ``conv_sketch``): an unbiased random-projection estimate
    ``||M_i||_F^2 = E ||M_i v_i||^2`` of the per-sample gradient ``M_i = [sum_t g_it a_it^T, sum_t g_it]``
    (weight and bias together) with ``k`` Rademacher probes ``v_ij`` in the patch space plus one
    coordinate ``c_ij`` for the bias (``E v v^T = I``), drawn **independently for every sample**:
    ``M_i v_ij = sum_t g_it (a_it . v_ij + c_ij)``. The projections ``a_it . v_ij`` are one
    depthwise convolution per probe (the input viewed as ``(1, B*C, ...)``, ``groups=B*C``, then a sum
    over the ``C`` channels; no unfold), the products with the output gradient one ``bmm``; cost
    ``~ B T k (C*kernel + q)``. Variance, with ``A_i = M_i^T M_i`` and ``n_i = ||M_i||_F^2``:
    ``Var(est_i) = (2/k) (||A_i||_F^2 - sum_j (A_i)_jj^2) <= (2/k) n_i^2`` per sample, and the per-sample
    estimates are independent given the gradients, so the relative standard deviation of the batch sum
    (what ``tr Sigma`` needs) is at most ``sqrt(2 / (k B_eff))`` with ``B_eff = (sum n_i)^2 / sum n_i^2``
    (``= B`` for equal per-sample norms; ``k = 1``, the monitor's default, ``B = 128``: at most 12.5%
    per step when the norms are equal, and it averages down over the steps of a logging interval).
    Measured on the benchmark CNN (``benchmarks/bench_monitor_overhead.py``, B = 128): 7-8% per step
    at ``k = 1``, 5-6% at ``k = 2``. (An earlier version shared one probe set across the batch:
    the batch sum was then one Hutchinson estimate ``v^T (sum_i A_i) v`` with relative s.d. up to
    ``sqrt(2/k)``, 40-60% per step on that CNN at ``k = 2``.) The probes come from the hooks' own
    generator (the global RNG is not touched). A covered bias without a covered weight is exact.
  - ``"auto"`` (the monitor's default) uses the exact estimator when ``p q <= max(k, 2) (p + q)``
    (small layers, where it costs about as much as the sketch), else the sketch.
    :class:`PerSampleSqNorms` defaults to ``"exact"``;
* ``nn.Embedding``: ``sum_{t,s} [id_t = id_s] (g_it . g_is)`` (positions at ``padding_idx``
  excluded);
* ``nn.LayerNorm``: the per-sample gradients ``sum_t g_it * xhat_it`` and ``sum_t g_it``
  are small (``B x normalized_shape``) and are formed.

A layer called several times in one forward pass (same samples) is handled by
concatenating its calls along the position axis. A parameter used by two modules, a
module that is not one of the above, or a supported module whose hooks did not fire
(e.g. ``nn.MultiheadAttention`` reads ``out_proj.weight`` directly) is *not covered*; the
caller decides the fallback (see :mod:`hhld.torch.noise`).

The batch axis must be the first axis of every hooked layer's input and output.

The norms returned are those of ``d(loss)/d(theta)`` restricted to one sample, i.e. they
still carry the loss's reduction factor (``1/B`` for a mean); the caller rescales.
"""
from __future__ import annotations

import math
from collections import defaultdict

import torch
from torch import nn
import torch.nn.functional as F

__all__ = ["PerSampleSqNorms", "supported_module_kind"]


def _conv_dims(m):
    k = 1
    for v in m.kernel_size:
        k *= v
    return m.in_channels * k, m.out_channels


def supported_module_kind(module: nn.Module) -> str | None:
    """The estimator used for ``module``'s own parameters, or ``None`` if unsupported."""
    if isinstance(module, nn.Linear):
        return "linear"
    if isinstance(module, (nn.Conv1d, nn.Conv2d)):
        if module.groups != 1 or module.padding_mode != "zeros":
            return None
        if isinstance(module.padding, str) and module.padding != "valid":
            return None
        return "conv"
    if isinstance(module, nn.Embedding):
        if module.max_norm is not None:
            return None
        return "embedding"
    if isinstance(module, nn.LayerNorm):
        if not module.elementwise_affine:
            return None
        return "layernorm"
    return None


def _gram_sq_norm(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Per-sample ``||sum_t g_t a_t^T||_F^2`` for ``a (B, T, p)``, ``g (B, T, q)``."""
    B, T, p = a.shape
    q = g.shape[-1]
    if T == 1:
        return (a[:, 0] ** 2).sum(-1) * (g[:, 0] ** 2).sum(-1)
    if T * T * (p + q) <= p * q:
        ga = torch.bmm(a, a.transpose(1, 2))
        gg = torch.bmm(g, g.transpose(1, 2))
        return (ga * gg).sum((1, 2))
    per = torch.bmm(g.transpose(1, 2), a)  # (B, q, p)
    return (per ** 2).sum((1, 2))


class PerSampleSqNorms:
    """Hooks that collect per-sample squared gradient norms of a model's parameters.

    Use as a context manager or call :meth:`attach` / :meth:`detach`. After each
    backward pass (detected with an autograd end-of-backward callback) the per-sample
    squared norms of that pass, summed over the covered parameters, are appended to
    :attr:`passes` as a tensor of shape ``(B,)`` (no host synchronisation).
    """

    def __init__(self, model: nn.Module, params: dict[str, nn.Parameter] | None = None, on_pass_end=None,
                 conv_estimator: str = "exact", conv_probes: int = 4, seed: int = 0):
        if conv_estimator not in ("exact", "sketch", "auto"):
            raise ValueError(f"conv_estimator must be 'exact', 'sketch' or 'auto', got {conv_estimator!r}")
        if int(conv_probes) < 1:
            raise ValueError(f"conv_probes must be >= 1, got {conv_probes}")
        self.conv_probes = int(conv_probes)
        self.seed = seed
        self._gens: dict = {}
        self._probes: dict = {}
        self._pool: dict = {}
        self.model = model
        self.on_pass_end = on_pass_end
        if params is None:
            params = {n: p for n, p in model.named_parameters() if p.requires_grad}
        self.params = params
        pid = {id(p): n for n, p in params.items()}
        # which module owns which parameter; a parameter shared by two modules is uncovered
        owners: dict[str, list] = defaultdict(list)
        for mname, m in model.named_modules():
            for pname, p in m.named_parameters(recurse=False):
                if id(p) in pid:
                    owners[pid[id(p)]].append((mname, m, pname))
        self.module_kind: dict[nn.Module, str] = {}
        self.module_params: dict[nn.Module, dict[str, str]] = {}
        self.reasons: dict[str, str] = {}
        for name in params:
            own = owners.get(name, [])
            if len({id(m) for _, m, _ in own}) != 1:
                self.reasons[name] = "parameter shared by several modules" if own else "no owning module"
                continue
            mname, m, pname = own[0]
            kind = supported_module_kind(m)
            if kind is None:
                self.reasons[name] = f"layer type {type(m).__name__} has no per-sample estimator"
                continue
            if kind == "conv":
                pp, qq = _conv_dims(m)
                if conv_estimator == "sketch" or (conv_estimator == "auto" and
                                                  pp * qq > max(self.conv_probes, 2) * (pp + qq)):
                    kind = "conv_sketch"
            self.module_kind[m] = kind
            self.module_params.setdefault(m, {})[pname] = name
        self.enabled = True
        self._handles: list = []
        self._records: dict[nn.Module, list] = defaultdict(list)
        self._callback_queued = False
        self.passes: list[torch.Tensor] = []
        self.covered_last: set[str] = set()
        self.covered_ever: set[str] = set()

    # ----------------------------------------------------------- hook plumbing
    def attach(self) -> "PerSampleSqNorms":
        if not self._handles:
            for m in self.module_kind:
                self._handles.append(m.register_forward_hook(self._forward_hook))
            if self.on_pass_end is not None:
                # the end-of-pass callback is queued by the first module grad hook of a pass; parameters
                # without a module estimator queue it themselves (a pass may reach only them)
                for n, p in self.params.items():
                    if n in self.reasons:
                        self._handles.append(p.register_post_accumulate_grad_hook(self._param_hook))
        return self

    def detach(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        self._records.clear()

    def __enter__(self):
        return self.attach()

    def __exit__(self, *exc):
        self.detach()

    def reset(self) -> None:
        self._records.clear()
        self.passes = []
        self.covered_last = set()

    def _forward_hook(self, module, inputs, output):
        if not (self.enabled and torch.is_grad_enabled()) or not isinstance(output, torch.Tensor):
            return
        if not output.requires_grad:
            return
        x = inputs[0].detach()
        recs = self._records[module]
        if self.module_kind[module] == "conv_sketch":
            # the probe projections a_t . v now, while the input is hot in cache; the same probes for every
            # call of the layer in one pass (a new draw when the layer has no pending record)
            x = self._sketch_project(module, x, new=not recs) if "weight" in self.module_params[module] else None
        rec = [x, None, None]  # layer input (or its projections), dL/d(output), the per-sample norms once computed
        recs.append(rec)

        def _grad_hook(grad, rec=rec, recs=recs, module=module):
            if len(recs) == 1 and recs[0] is rec:
                # the layer ran once in this pass: compute its per-sample norms now, inside the backward
                # pass, and drop the input and the output gradient (they are not kept until the pass ends)
                rec[2] = self._module_sq_norms(module, [(rec[0], grad.detach())])
                rec[0] = None
                rec[1] = True
            else:
                rec[1] = grad.detach()
            if not self._callback_queued:
                self._callback_queued = True
                torch.autograd.Variable._execution_engine.queue_callback(self._end_of_backward)

        output.register_hook(_grad_hook)

    def _param_hook(self, p):
        if self.enabled and not self._callback_queued:
            self._callback_queued = True
            torch.autograd.Variable._execution_engine.queue_callback(self._end_of_backward)

    def _end_of_backward(self):
        self._callback_queued = False
        total = None
        covered = set()
        for m, recs in list(self._records.items()):
            done = [r for r in recs if r[1] is not None]
            if not done:
                continue
            if len(done) == len(recs):
                recs.clear()  # keep the list object: the grad hooks hold it
            else:
                recs[:] = [r for r in recs if r[1] is None]
            if len(done) == 1 and done[0][2] is not None:
                sq = done[0][2]
            else:
                sq = self._module_sq_norms(m, [(r[0], r[1]) for r in done])
            total = sq if total is None else total + sq
            covered.update(self.module_params[m].values())
        if total is not None:
            self.passes.append(total)
        self.covered_last = covered
        self.covered_ever |= covered
        if self.on_pass_end is not None:
            self.on_pass_end(self)

    # ----------------------------------------------------------- the maths
    def _module_sq_norms(self, m: nn.Module, recs) -> torch.Tensor:
        kind = self.module_kind[m]
        has_w = "weight" in self.module_params[m]
        has_b = "bias" in self.module_params[m]
        if kind == "linear":
            if len(recs) == 1 and recs[0][0].dim() == 2:
                x, gy = recs[0]  # the common case: ||g_i||^2 (||a_i||^2 [+ 1 for the bias])
                gsq = gy.square().sum(1)
                if not has_w:
                    return gsq
                asq = x.square().sum(1)
                return gsq * (asq + 1) if has_b else gsq * asq
            a = torch.cat([r[0].reshape(r[0].shape[0], -1, r[0].shape[-1]) for r in recs], 1)
            g = torch.cat([r[1].reshape(r[1].shape[0], -1, r[1].shape[-1]) for r in recs], 1)
            return self._linear(a, g, has_w, has_b)
        if kind == "conv":
            if len(recs) == 1:
                x, gy = recs[0]
                cols = self._unfold(m, x).transpose(1, 2)  # (B, p, T): F.unfold's own layout, no copy
                g = gy.reshape(gy.shape[0], gy.shape[1], -1)  # (B, q, T)
                sq = 0
                if has_w:
                    p_, q_, T = cols.shape[1], g.shape[1], g.shape[2]
                    if T * T * (p_ + q_) <= p_ * q_:
                        ga = torch.bmm(cols.transpose(1, 2), cols)
                        gg = torch.bmm(g.transpose(1, 2), g)
                        sq = (ga * gg).sum((1, 2))
                    else:
                        sq = torch.bmm(g, cols.transpose(1, 2)).square().sum((1, 2))  # per-sample (B, q, p)
                if has_b:
                    sq = sq + g.sum(2).square().sum(1)
                return sq
            a_list, g_list = [], []
            for x, gy in recs:
                a_list.append(self._unfold(m, x))  # (B, L, C*k)
                g_list.append(gy.reshape(gy.shape[0], gy.shape[1], -1).transpose(1, 2))
            return self._linear(torch.cat(a_list, 1), torch.cat(g_list, 1), has_w, has_b)
        if kind == "conv_sketch":
            return self._conv_sketch(m, recs, has_w, has_b)
        if kind == "embedding":
            ids = torch.cat([r[0].reshape(r[0].shape[0], -1) for r in recs], 1)
            g = torch.cat([r[1].reshape(r[1].shape[0], -1, r[1].shape[-1]) for r in recs], 1)
            if m.padding_idx is not None:
                keep = (ids != m.padding_idx).to(g.dtype)
                g = g * keep.unsqueeze(-1)
            if ids.shape[1] == 1:
                return (g[:, 0] ** 2).sum(-1)
            same = (ids.unsqueeze(2) == ids.unsqueeze(1)).to(g.dtype)
            gg = torch.bmm(g, g.transpose(1, 2))
            return (same * gg).sum((1, 2))
        if kind == "layernorm":
            nd = len(m.normalized_shape)
            out = None
            for x, gy in recs:
                dims = tuple(range(x.dim() - nd, x.dim()))
                mean = x.mean(dims, keepdim=True)
                var = x.var(dims, unbiased=False, keepdim=True)
                xhat = (x - mean) * torch.rsqrt(var + m.eps)
                B = x.shape[0]
                shp = (B, -1) + tuple(m.normalized_shape)
                gw = (gy * xhat).reshape(shp).sum(1) if has_w else None
                gb = gy.reshape(shp).sum(1) if has_b else None
                out = (gw, gb) if out is None else (
                    None if gw is None else out[0] + gw, None if gb is None else out[1] + gb)
            sq = 0
            if out[0] is not None:
                sq = sq + (out[0] ** 2).reshape(out[0].shape[0], -1).sum(1)
            if out[1] is not None:
                sq = sq + (out[1] ** 2).reshape(out[1].shape[0], -1).sum(1)
            return sq
        raise AssertionError(kind)  # pragma: no cover

    @staticmethod
    def _linear(a, g, has_w, has_b):
        sq = 0
        if has_w:
            sq = _gram_sq_norm(a, g)
        if has_b:
            sq = sq + (g.sum(1) ** 2).sum(-1)
        return sq

    def _generator(self, device):
        g = self._gens.get(device)
        if g is None:
            g = self._gens[device] = torch.Generator(device=device).manual_seed(self.seed)
        return g

    def _rademacher(self, n, device, dtype):
        """``n`` fresh independent +-1 entries: slices of a pool drawn for many passes at once (one draw per
        32 passes, at most 2^20 entries, instead of a few small draws per layer and pass); no entry is used
        twice."""
        key = (device, dtype)
        pool, pos = self._pool.get(key, (None, 0))
        if pool is None or pos + n > pool.numel():
            size = max(n, min(32 * n, 1 << 20))
            pool = torch.randint(0, 2, (size,), generator=self._generator(device), device=device, dtype=dtype)
            pool.mul_(2).sub_(1)
            pos = 0
        self._pool[key] = (pool, pos + n)
        return pool[pos:pos + n]

    def _sketch_project(self, m, x, new):
        """``a_it . v_ij (+ c_ij)`` for every patch ``t``, sample ``i`` and probe ``j``, ``(B, k, T)``.

        Every sample has its own Rademacher probes ``v_ij`` (patch space) and ``c_ij`` (the bias
        coordinate, when the bias is covered): the projections are one depthwise convolution per probe
        of the input viewed as ``(1, B*C, ...)`` with ``groups=B*C``, summed over the ``C`` channels.
        The same probes serve every call of the layer in one pass (a new draw when the layer has no
        pending record)."""
        B, C = x.shape[0], x.shape[1]
        k = self.conv_probes
        has_b = "bias" in self.module_params[m]
        pr = self._probes.get(m)
        if (new or pr is None or pr[0].shape[1] != B * C or pr[0].device != x.device
                or pr[0].dtype != x.dtype):
            vshape = (k, B * C, 1) + tuple(m.kernel_size)
            nv = math.prod(vshape)
            r = self._rademacher(nv + (B * k if has_b else 0), x.device, x.dtype)
            v = r[:nv].view(vshape)
            c = r[nv:].view(B, k, 1) if has_b else None
            pr = self._probes[m] = (v, c)
        v, c = pr
        conv = F.conv1d if isinstance(m, nn.Conv1d) else F.conv2d
        xg = x.reshape((1, B * C) + tuple(x.shape[2:]))
        outs = []
        for j in range(k):
            o = conv(xg, v[j], None, m.stride, m.padding, m.dilation, B * C)  # (1, B*C, out spatial...)
            o = o.reshape(B, C, -1)
            outs.append(o.sum(1, keepdim=True) if C > 1 else o)
        sp = outs[0] if k == 1 else torch.cat(outs, 1)  # (B, k, T)
        if c is not None:
            # the bias as one more patch coordinate with value 1: the sketch then covers (weight, bias) jointly
            sp = sp.add_(c)
        return sp

    def _conv_sketch(self, m, recs, has_w, has_b):
        """Unbiased Rademacher-probe estimate of the per-sample norm of the (weight, bias) gradient (see the
        module doc); the records hold the projections of :meth:`_sketch_project`."""
        if not has_w:
            gb = None
            for _, gy in recs:
                s = gy.reshape(gy.shape[0], gy.shape[1], -1).sum(2)
                gb = s if gb is None else gb + s
            return gb.square().sum(1)
        mv = None
        for sp, gy in recs:
            g = gy.reshape(gy.shape[0], gy.shape[1], -1)  # (B, q, T)
            t = torch.bmm(sp, g.transpose(1, 2))  # (B, k, q): the rows (M_i v_ij [+ c_ij sum_t g_it])^T
            mv = t if mv is None else mv + t
        return mv.square().sum(2).mean(1)

    @staticmethod
    def _unfold(m, x):
        if isinstance(m, nn.Conv1d):
            x4 = x.unsqueeze(2)
            k = (1, m.kernel_size[0])
            pad = 0 if m.padding == "valid" else (0, m.padding[0])
            cols = F.unfold(x4, k, dilation=(1, m.dilation[0]), padding=pad, stride=(1, m.stride[0]))
        else:
            pad = 0 if m.padding == "valid" else m.padding
            cols = F.unfold(x, m.kernel_size, dilation=m.dilation, padding=pad, stride=m.stride)
        return cols.transpose(1, 2)  # (B, L, C*k)
