"""Neurogenesis / neurodegeneration and a grand canonical scheduler for hidden widths.

The paper (section 6) proposes a *neurodegeneration* method that removes the neuron whose
removal "causes the smallest increase in the loss function" and a *neurogenesis* method that
adds the auxiliary neuron that "causes the largest decrease in the loss function", and (section
4) models the number of active neurons ``N`` with a grand canonical ensemble:
``Omega = F - mu N`` (4.1), ``mu = dF/dN`` (4.2), ``Delta N = std(N)`` (4.5).

Here the neurons are the hidden units of a :class:`LinearPair` ``fc_in -> (elementwise) ->
fc_out`` (MLP hidden layers, transformer MLP blocks, also inside a LayerNorm-residual block):
hidden unit ``j`` is row ``j`` of ``fc_in`` (weight and bias) and column ``j`` of ``fc_out``.

* **Removal** (:func:`removal_scores`, :func:`neurodegeneration`): ``Delta L_j`` = loss with unit
  ``j`` silenced minus the loss, on a batch. ``method="exact"`` measures it (one forward per
  unit, the unit's input to ``fc_out`` set to 0, which is exactly the network without it);
  ``method="taylor"`` uses the first-order estimate ``-sum_b h_bj dL/dh_bj`` (one backward);
  ``exact_top_k`` re-measures the ``k`` best Taylor candidates exactly.
* **Addition** (:func:`candidate_scores`, :func:`neurogenesis`): a pool of candidate units
  (incoming weights sampled at the scale of the existing ones) is appended with **zero outgoing
  weights**, so the function is unchanged; the score of candidate ``k`` is
  ``||dL/dw_out_k||^2``, so that a gradient step ``w_out_k = -eps dL/dw_out_k`` decreases the loss
  by ``eps ||dL/dw_out_k||^2`` to first order. The best candidate is inserted, with zero
  outgoing weights (the function is exactly unchanged at insertion).
* **Optimizer state** follows: for every optimizer given, the new ``nn.Parameter`` objects
  replace the old ones in ``param_groups``, and every state tensor of the parameter's shape
  (momentum buffers, Adam's ``exp_avg`` / ``exp_avg_sq`` ...) is cut or zero-extended along the
  hidden axis; other state (Adam's ``step``) is kept.
* :class:`GrandCanonicalScheduler`: Metropolis-like add / remove moves accepted with
  probability ``min(1, exp(-Delta Omega / T))``, ``Delta Omega = Delta L - mu Delta N +
  (kappa/2)((N' - N*)^2 - (N - N*)^2)``: ``mu`` (argument ``chemical_potential``; ``mu`` is the mobility
  elsewhere in hhld) is the chemical-potential knob (``mu > 0``
  favours more neurons), ``kappa`` a restraint that keeps ``N(t)`` fluctuating around the target
  ``N*``. It logs ``N(t)``, the running ``Delta N`` (std of ``N`` over a window) and a ``mu``
  estimate, the mean ``Delta L / Delta N`` of the accepted moves (``dF/dN`` with ``F`` read as
  the loss). The proposals are greedy (best unit), so this is not an exact detailed-balance
  sampler; it is the paper's qualitative proposal made into a knob.
"""
from __future__ import annotations

import math
import numbers
import warnings
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from .._validation import check_int, check_nonnegative, check_positive, check_real

__all__ = [
    "LinearPair",
    "find_linear_pairs",
    "removal_scores",
    "candidate_scores",
    "sample_candidates",
    "remove_neurons",
    "add_neurons",
    "neurodegeneration",
    "neurogenesis",
    "NeuronMove",
    "GrandCanonicalScheduler",
]

_ELEMENTWISE = (
    nn.ReLU, nn.GELU, nn.Tanh, nn.Sigmoid, nn.SiLU, nn.LeakyReLU, nn.ELU, nn.Softplus, nn.Mish,
    nn.Hardtanh, nn.ReLU6, nn.SELU, nn.CELU, nn.Hardswish, nn.Hardsigmoid, nn.Softsign, nn.Tanhshrink,
    nn.Dropout, nn.Identity, nn.AlphaDropout,
)
_NAME_PAIRS = (("fc1", "fc2"), ("fc_in", "fc_out"), ("linear1", "linear2"), ("c_fc", "c_proj"),
               ("up_proj", "down_proj"), ("w1", "w2"), ("dense_in", "dense_out"), ("lin1", "lin2"))


# --------------------------------------------------------------------------- pairs
@dataclass
class LinearPair:
    """Hidden layer ``fc_in -> elementwise -> fc_out``; ``name`` for logs."""

    fc_in: nn.Linear
    fc_out: nn.Linear
    name: str = ""

    def __post_init__(self):
        if not isinstance(self.fc_in, nn.Linear) or not isinstance(self.fc_out, nn.Linear):
            raise TypeError(f"LinearPair needs two nn.Linear, got {type(self.fc_in).__name__}, "
                            f"{type(self.fc_out).__name__}")
        if self.fc_in.out_features != self.fc_out.in_features:
            raise ValueError(f"LinearPair {self.name!r}: fc_in.out_features={self.fc_in.out_features} "
                             f"!= fc_out.in_features={self.fc_out.in_features}")

    @property
    def width(self) -> int:
        return self.fc_in.out_features


def find_linear_pairs(model: nn.Module) -> list[LinearPair]:
    """Hidden-layer pairs of ``model``: in every ``nn.Sequential``, ``Linear`` (elementwise
    modules)* ``Linear``; in every module, attribute pairs named like ``fc1/fc2``,
    ``linear1/linear2`` (``nn.TransformerEncoderLayer``), ``c_fc/c_proj``, ``up_proj/down_proj``,
    ``w1/w2``, ``fc_in/fc_out``. Only pairs with matching widths; each pair once."""
    pairs: list[LinearPair] = []
    seen: set[tuple[int, int]] = set()

    def add(a, b, name):
        key = (id(a), id(b))
        if key in seen or a.out_features != b.in_features:
            return
        seen.add(key)
        pairs.append(LinearPair(a, b, name))

    for mname, mod in model.named_modules():
        if isinstance(mod, nn.Sequential):
            children = list(mod.named_children())
            for i, (na, a) in enumerate(children):
                if not isinstance(a, nn.Linear):
                    continue
                j = i + 1
                while j < len(children) and isinstance(children[j][1], _ELEMENTWISE):
                    j += 1
                if j < len(children) and isinstance(children[j][1], nn.Linear):
                    pre = f"{mname}." if mname else ""
                    add(a, children[j][1], f"{pre}{na}->{children[j][0]}")
        for a_name, b_name in _NAME_PAIRS:
            a, b = getattr(mod, a_name, None), getattr(mod, b_name, None)
            if isinstance(a, nn.Linear) and isinstance(b, nn.Linear):
                pre = f"{mname}." if mname else ""
                add(a, b, f"{pre}{a_name}->{b_name}")
    return pairs


# --------------------------------------------------------------------------- helpers
class _EvalMode:
    """Eval mode (no dropout, BatchNorm running stats) while scoring; restores each module's mode."""

    def __init__(self, model):
        self.model = model

    def __enter__(self):
        self.modes = [(m, m.training) for m in self.model.modules()]
        self.model.eval()

    def __exit__(self, *exc):
        for m, t in self.modes:
            m.training = t


def _loss(model, loss_fn, inputs, targets) -> Tensor:
    out = model(*inputs) if isinstance(inputs, (tuple, list)) else model(inputs)
    loss = loss_fn(out, targets)
    if loss.ndim != 0:
        raise ValueError(f"loss_fn must return a scalar, got shape {tuple(loss.shape)}")
    return loss


def _param_names(model: nn.Module) -> dict[int, str]:
    return {id(p): n for n, p in model.named_parameters(remove_duplicate=False)}


# --------------------------------------------------------------------------- scores
def removal_scores(model: nn.Module, pair: LinearPair, loss_fn, inputs, targets, *, method: str = "exact",
                   exact_top_k: int | None = None) -> Tensor:
    """``Delta L_j`` (loss increase when hidden unit ``j`` of ``pair`` is removed), float64, shape (width,).

    ``method="exact"``: measured (one forward per unit); ``"taylor"``: first order
    ``-sum h_j dL/dh_j`` (one backward); with ``exact_top_k``, the ``k`` units with the smallest
    Taylor scores are re-measured exactly (the others keep their Taylor value)."""
    if method not in ("exact", "taylor"):
        raise ValueError(f"method must be 'exact' or 'taylor', got {method!r}")
    H = pair.width
    with _EvalMode(model):
        if method == "exact":
            return _exact_removal(model, pair, loss_fn, inputs, targets, range(H))
        captured = {}

        def pre_hook(mod, args):
            h = args[0]
            if not h.requires_grad:
                h = h.detach().requires_grad_(True)
            captured["h"] = h
            return (h,) + tuple(args[1:])

        handle = pair.fc_out.register_forward_pre_hook(pre_hook)
        try:
            with torch.enable_grad():
                loss = _loss(model, loss_fn, inputs, targets)
                h = captured["h"]
                (gh,) = torch.autograd.grad(loss, h)
        finally:
            handle.remove()
        taylor = -(h.detach() * gh).reshape(-1, H).sum(0).double()
        if exact_top_k:
            k = min(check_int("exact_top_k", exact_top_k, minimum=1), H)
            idx = torch.argsort(taylor)[:k].tolist()
            exact = _exact_removal(model, pair, loss_fn, inputs, targets, idx)
            taylor[idx] = exact[idx]
        return taylor


@torch.no_grad()
def _exact_removal(model, pair, loss_fn, inputs, targets, indices) -> Tensor:
    H = pair.width
    out = torch.full((H,), float("nan"), dtype=torch.float64)
    base = _loss(model, loss_fn, inputs, targets).double().item()
    state = {"j": None}

    def pre_hook(mod, args):
        h = args[0].clone()
        h[..., state["j"]] = 0
        return (h,) + tuple(args[1:])

    handle = pair.fc_out.register_forward_pre_hook(pre_hook)
    try:
        for j in indices:
            state["j"] = j
            out[j] = _loss(model, loss_fn, inputs, targets).double().item() - base
    finally:
        handle.remove()
    return out


def sample_candidates(pair: LinearPair, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor | None]:
    """``n`` candidate units: incoming weights ``(n, in_features)`` with random directions at the
    median row norm of ``fc_in.weight`` (the default ``nn.Linear`` scale when it has no rows),
    biases uniform in ``+-`` the largest existing |bias| (``None`` when ``fc_in`` has no bias)."""
    n = check_int("n", n, minimum=1)
    W = pair.fc_in.weight
    fan_in = W.shape[1]
    g = generator
    dirs = torch.randn(n, fan_in, generator=g, dtype=W.dtype, device=g.device if g is not None else "cpu")
    dirs = dirs.to(W.device)
    dirs = dirs / dirs.norm(dim=1, keepdim=True).clamp_min(1e-30)
    if W.shape[0] > 0:
        scale = W.detach().norm(dim=1).median()
    else:
        scale = torch.tensor(math.sqrt(fan_in / 3.0) / math.sqrt(fan_in), dtype=W.dtype, device=W.device)
    w = dirs * scale
    b = None
    if pair.fc_in.bias is not None:
        bias = pair.fc_in.bias.detach()
        bound = float(bias.abs().max()) if bias.numel() else 1.0 / math.sqrt(fan_in)
        u = torch.rand(n, generator=g, dtype=W.dtype, device=g.device if g is not None else "cpu").to(W.device)
        b = (2 * u - 1) * bound
    return w, b


def candidate_scores(model: nn.Module, pair: LinearPair, loss_fn, inputs, targets, w_in: Tensor,
                     b_in: Tensor | None = None) -> Tensor:
    """``||dL/dw_out_k||^2`` for candidate units ``(w_in[k], b_in[k])`` appended with zero outgoing
    weights (one forward/backward for the whole pool; the model is not modified). Float64, (K,)."""
    from torch.func import functional_call

    if w_in.ndim != 2 or w_in.shape[1] != pair.fc_in.in_features:
        raise ValueError(f"w_in must have shape (K, {pair.fc_in.in_features}), got {tuple(w_in.shape)}")
    K = w_in.shape[0]
    if (pair.fc_in.bias is None) != (b_in is None):
        raise ValueError("b_in must be given exactly when fc_in has a bias")
    names = _param_names(model)
    fi, fo = pair.fc_in, pair.fc_out
    Z = torch.zeros(fo.out_features, K, dtype=fo.weight.dtype, device=fo.weight.device, requires_grad=True)
    with _EvalMode(model), torch.enable_grad():
        over = {
            names[id(fi.weight)]: torch.cat([fi.weight.detach(), w_in.to(fi.weight)], 0),
            names[id(fo.weight)]: torch.cat([fo.weight.detach(), Z], 1),
        }
        if fi.bias is not None:
            over[names[id(fi.bias)]] = torch.cat([fi.bias.detach(), b_in.to(fi.bias)], 0)
        args = tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)
        out = functional_call(model, over, args, strict=False)
        loss = loss_fn(out, targets)
        (gz,) = torch.autograd.grad(loss, Z)
    return gz.double().pow(2).sum(0)


# --------------------------------------------------------------------------- surgery
def _as_list(optimizers) -> list:
    if optimizers is None:
        return []
    if isinstance(optimizers, torch.optim.Optimizer):
        return [optimizers]
    return list(optimizers)


def _swap(module: nn.Module, attr: str, new_data: Tensor, optimizers, resize_state) -> None:
    old = getattr(module, attr)
    new = nn.Parameter(new_data.detach().clone(), requires_grad=old.requires_grad)
    setattr(module, attr, new)
    for opt in optimizers:
        for group in opt.param_groups:
            group["params"] = [new if p is old else p for p in group["params"]]
        if old in opt.state:
            st = opt.state.pop(old)
            opt.state[new] = {k: (resize_state(v) if isinstance(v, Tensor) and v.shape == old.shape else v)
                              for k, v in st.items()}


def _unit_indices(indices, H: int) -> list[int]:
    """``indices`` as sorted distinct hidden-unit indices in ``[0, H)``: integers only (a float, a bool or a
    floating tensor is refused, never truncated), each at most once (a repeated index is refused: removing a
    unit twice is not removing two units)."""
    if isinstance(indices, torch.Tensor):
        if indices.is_floating_point() or indices.is_complex() or indices.dtype == torch.bool:
            raise TypeError(f"neuron indices must be integers, got a tensor of dtype {indices.dtype}")
        indices = indices.reshape(-1).tolist()
    out = []
    for i in indices:
        if isinstance(i, bool) or not isinstance(i, numbers.Integral):
            raise TypeError(f"neuron indices must be integers, got {i!r} in {list(indices)!r}")
        out.append(int(i))
    bad = [i for i in out if i < 0 or i >= H]
    if bad:
        raise IndexError(f"neuron indices {bad} out of range for width {H} (allowed: 0 to {H - 1})")
    seen = sorted(i for i, c in Counter(out).items() if c > 1)
    if seen:
        raise ValueError(f"neuron indices {seen} given more than once in {out}; give each unit to remove once")
    return sorted(out)


def remove_neurons(pair: LinearPair, indices: Sequence[int], optimizers=None) -> None:
    """Remove hidden units ``indices`` (rows of ``fc_in``, columns of ``fc_out``), in place;
    optimizer params and state follow."""
    H = pair.width
    drop = _unit_indices(indices, H)
    if len(drop) >= H:
        raise ValueError(f"cannot remove all {H} hidden units of {pair.name or 'the pair'}")
    opts = _as_list(optimizers)
    gone = set(drop)
    keep = torch.tensor([i for i in range(H) if i not in gone], dtype=torch.long)
    fi, fo = pair.fc_in, pair.fc_out
    k_in = keep.to(fi.weight.device)
    k_out = keep.to(fo.weight.device)
    _swap(fi, "weight", fi.weight.detach()[k_in], opts, lambda t: t.index_select(0, k_in.to(t.device)))
    if fi.bias is not None:
        _swap(fi, "bias", fi.bias.detach()[k_in], opts, lambda t: t.index_select(0, k_in.to(t.device)))
    _swap(fo, "weight", fo.weight.detach()[:, k_out], opts, lambda t: t.index_select(1, k_out.to(t.device)))
    fi.out_features = fo.in_features = len(keep)


def add_neurons(pair: LinearPair, w_in: Tensor, b_in: Tensor | None = None, w_out: Tensor | None = None,
                optimizers=None) -> list[int]:
    """Append hidden units with incoming weights ``w_in (K, in)`` (and biases ``b_in``) and outgoing
    weights ``w_out (out, K)`` (default zeros: the function is unchanged). Optimizer state of the
    new entries is zero. Returns the new units' indices."""
    fi, fo = pair.fc_in, pair.fc_out
    if w_in.ndim == 1:
        w_in = w_in[None]
        if b_in is not None:
            b_in = b_in.reshape(1)
    K = w_in.shape[0]
    if w_in.shape[1] != fi.in_features:
        raise ValueError(f"w_in must have shape (K, {fi.in_features}), got {tuple(w_in.shape)}")
    if (fi.bias is None) != (b_in is None):
        raise ValueError("b_in must be given exactly when fc_in has a bias")
    if w_out is None:
        w_out = torch.zeros(fo.out_features, K, dtype=fo.weight.dtype, device=fo.weight.device)
    H = pair.width
    opts = _as_list(optimizers)

    def ext(dim):
        def f(t):
            shape = list(t.shape)
            shape[dim] = K
            return torch.cat([t, t.new_zeros(shape)], dim)
        return f

    _swap(fi, "weight", torch.cat([fi.weight.detach(), w_in.to(fi.weight)], 0), opts, ext(0))
    if fi.bias is not None:
        _swap(fi, "bias", torch.cat([fi.bias.detach(), b_in.to(fi.bias)], 0), opts, ext(0))
    _swap(fo, "weight", torch.cat([fo.weight.detach(), w_out.to(fo.weight)], 1), opts, ext(1))
    fi.out_features = fo.in_features = H + K
    return list(range(H, H + K))


# --------------------------------------------------------------------------- moves
@dataclass
class NeuronMove:
    """One add / remove. ``delta_loss``: measured loss change for an exact removal, the Taylor
    estimate otherwise; for an addition the first-order decrease ``-step_size * score`` that a
    gradient step of size ``step_size`` on the new outgoing weights would give (the insertion
    itself changes nothing)."""

    kind: str
    pair: str
    index: int
    delta_loss: float
    score: float
    width_after: int
    estimated: bool
    w_in: Tensor | None = field(default=None, repr=False)
    b_in: Tensor | None = field(default=None, repr=False)


def neurodegeneration(model, pair, loss_fn, inputs, targets, optimizers=None, *, method="exact",
                      exact_top_k=None, apply=True) -> NeuronMove:
    """Remove the unit of ``pair`` whose removal increases the loss least (the paper's
    neurodegeneration). ``apply=False`` only scores."""
    scores = removal_scores(model, pair, loss_fn, inputs, targets, method=method, exact_top_k=exact_top_k)
    j = int(torch.argmin(scores))
    dl = float(scores[j])
    exact = method == "exact" or bool(exact_top_k)
    width = pair.width
    if apply:
        remove_neurons(pair, [j], optimizers)
        width -= 1
    return NeuronMove("remove", pair.name, j, dl, dl, width, estimated=not exact)


def neurogenesis(model, pair, loss_fn, inputs, targets, optimizers=None, *, n_candidates=16,
                 step_size=1e-2, generator=None, apply=True) -> NeuronMove:
    """Add the pool candidate that a small step would decrease the loss most (the paper's
    neurogenesis), with zero outgoing weights. ``apply=False`` only scores."""
    step_size = check_positive("step_size", step_size)
    w, b = sample_candidates(pair, n_candidates, generator)
    scores = candidate_scores(model, pair, loss_fn, inputs, targets, w, b)
    k = int(torch.argmax(scores))
    s = float(scores[k])
    width = pair.width
    idx = width
    if apply:
        idx = add_neurons(pair, w[k], None if b is None else b[k], optimizers=optimizers)[0]
        width += 1
    return NeuronMove("add", pair.name, idx, -step_size * s, s, width, estimated=True, w_in=w[k],
                      b_in=None if b is None else b[k])


# --------------------------------------------------------------------------- scheduler
class GrandCanonicalScheduler:
    """Keeps the total hidden width ``N`` of ``pairs`` fluctuating around ``target``.

    Call :meth:`step(inputs, targets)` once per training step (after ``optimizer.step()``); every
    ``interval`` calls it proposes one move (add or remove, probability 1/2 each, on a random pair
    within ``[min_width, max_width]``), scores it on the given batch and accepts it with
    probability ``min(1, exp(-Delta Omega / temperature))`` (see the module doc; ``temperature=0``
    accepts iff ``Delta Omega <= 0``).

    Logs: ``history`` (one dict per proposal: ``step, N, move, pair, index, delta_loss,
    delta_omega, accepted, delta_N, chemical_potential_estimate``), ``n_trace`` (``N`` at every call),
    :attr:`delta_N` (std of ``N`` over the last ``window`` calls), :attr:`chemical_potential_estimate`
    (mean ``Delta L / Delta N`` over the accepted moves).
    """

    def __init__(self, model: nn.Module, loss_fn, optimizers=None, pairs: Sequence[LinearPair] | None = None, *,
                 target: int | None = None, chemical_potential: float = 0.0, temperature: float = 1e-3,
                 stiffness: float = 0.0,
                 interval: int = 50, n_candidates: int = 16, step_size: float = 1e-2, removal_method: str = "exact",
                 min_width: int = 1, max_width: int | None = None, window: int = 200,
                 generator: torch.Generator | None = None, seed: int | None = None, mu: float | None = None):
        if mu is not None:  # the former name: in hhld "mu" is the mobility everywhere else
            warnings.warn("GrandCanonicalScheduler(mu=...) is now chemical_potential=...", DeprecationWarning,
                          stacklevel=2)
            chemical_potential = mu
        self.model = model
        self.loss_fn = loss_fn
        self.optimizers = _as_list(optimizers)
        self.pairs = list(pairs) if pairs is not None else find_linear_pairs(model)
        if not self.pairs:
            raise ValueError(f"no Linear -> Linear hidden-layer pair found in {type(model).__name__}; pass pairs=")
        self.chemical_potential = check_real("chemical_potential", chemical_potential)
        self.temperature = check_nonnegative("temperature", temperature)
        self.stiffness = check_nonnegative("stiffness", stiffness)
        self.interval = check_int("interval", interval, minimum=1)
        self.n_candidates = check_int("n_candidates", n_candidates, minimum=1)
        self.step_size = check_positive("step_size", step_size)
        if removal_method not in ("exact", "taylor"):
            raise ValueError(f"removal_method must be 'exact' or 'taylor', got {removal_method!r}")
        self.removal_method = removal_method
        self.min_width = check_int("min_width", min_width, minimum=1)
        self.max_width = None if max_width is None else check_int("max_width", max_width, minimum=self.min_width)
        self.window = check_int("window", window, minimum=2)
        self.target = self.N if target is None else check_int("target", target, minimum=1)
        if generator is None:
            generator = torch.Generator()
            generator.manual_seed(seed) if seed is not None else generator.seed()
        self.generator = generator
        self.history: list[dict[str, Any]] = []
        self.n_trace: list[int] = []
        self._recent: deque[int] = deque(maxlen=self.window)
        self._accepted_ratios: list[float] = []
        self._calls = 0

    @property
    def N(self) -> int:
        return sum(p.width for p in self.pairs)

    @property
    def delta_N(self) -> float:
        """Running ``Delta N = sqrt(<N^2> - <N>^2)`` over the last ``window`` calls (4.5)."""
        if len(self._recent) < 2:
            return 0.0
        t = torch.tensor(list(self._recent), dtype=torch.float64)
        return float(t.std(unbiased=False))

    @property
    def chemical_potential_estimate(self) -> float | None:
        """Mean ``Delta L / Delta N`` of the accepted moves (a reading of ``mu = dF/dN``, (4.2), the paper's
        chemical potential; hhld calls it ``chemical_potential`` because ``mu`` is the mobility elsewhere)."""
        if not self._accepted_ratios:
            return None
        return sum(self._accepted_ratios) / len(self._accepted_ratios)

    def _restraint(self, n: int) -> float:
        return 0.5 * self.stiffness * (n - self.target) ** 2

    def _uniform(self) -> float:
        return float(torch.rand((), generator=self.generator, dtype=torch.float64))

    def step(self, inputs, targets) -> dict[str, Any] | None:
        """One call per training step; returns the proposal's log entry on a proposal step."""
        self._calls += 1
        entry = None
        if self._calls % self.interval == 0:
            entry = self._propose(inputs, targets)
        n = self.N
        self.n_trace.append(n)
        self._recent.append(n)
        return entry

    def _propose(self, inputs, targets) -> dict[str, Any]:
        can_add = [p for p in self.pairs if self.max_width is None or p.width < self.max_width]
        can_remove = [p for p in self.pairs if p.width > self.min_width]
        u = self._uniform()
        kind = "add" if u < 0.5 else "remove"
        if kind == "add" and not can_add:
            kind = "remove"
        if kind == "remove" and not can_remove:
            kind = "add"
        pool = can_add if kind == "add" else can_remove
        if not pool:
            return {}
        pi = int(torch.randint(len(pool), (), generator=self.generator))
        pair = pool[pi]
        n0 = self.N
        if kind == "add":
            move = neurogenesis(self.model, pair, self.loss_fn, inputs, targets, n_candidates=self.n_candidates,
                                step_size=self.step_size, generator=self.generator, apply=False)
            dn = +1
        else:
            move = neurodegeneration(self.model, pair, self.loss_fn, inputs, targets,
                                     method=self.removal_method, apply=False)
            dn = -1
        d_omega = move.delta_loss - self.chemical_potential * dn + self._restraint(n0 + dn) - self._restraint(n0)
        if d_omega <= 0:
            accept = True
        elif self.temperature == 0:
            accept = False
        else:
            accept = self._uniform() < math.exp(-d_omega / self.temperature)
        if accept:
            if kind == "add":
                add_neurons(pair, move.w_in, move.b_in, optimizers=self.optimizers)
            else:
                remove_neurons(pair, [move.index], self.optimizers)
            self._accepted_ratios.append(move.delta_loss / dn)
        entry = dict(step=self._calls, N=self.N, move=kind, pair=pair.name, index=move.index,
                     delta_loss=move.delta_loss, delta_omega=d_omega, accepted=accept,
                     delta_N=self.delta_N, chemical_potential_estimate=self.chemical_potential_estimate)
        self.history.append(entry)
        return entry
