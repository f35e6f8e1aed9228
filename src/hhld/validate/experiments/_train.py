"""Models, losses and training / measuring helpers shared by the training experiments.

Models
------
* :class:`ModAddMLP` -- 2-layer MLP on one-hot ``a || b`` for modular addition. The first
  layer acting on the concatenated one-hot vectors is written as the sum of two embedding
  look-ups (``W [e_a; e_b] = W_a[:, a] + W_b[:, b]``, identical maths, no 2p-wide matmul), then
  a quadratic (``z^2``) or ReLU activation and a linear read-out to ``p`` classes.
* :class:`ModAddTransformer` -- the one-layer transformer of Nanda et al. (2023), "Progress
  measures for grokking via mechanistic interpretability", written from the paper's
  description: input tokens ``a, b, =`` (vocabulary ``p + 1``), learned token and position
  embeddings, ``d_model = 128``, one attention layer with 4 heads of width 32, an MLP with
  ``d_mlp = 512`` ReLU units, no LayerNorm, untied unembedding read at the ``=`` position.
* :func:`mlp` and :class:`CNN1D` -- small classifiers for digits / MNIST-1D.

Measuring
---------
* :func:`grad_stats_f64` -- the training-set gradient and the monitor's noise statistics
  (:func:`hhld.torch.noise.gradient_noise_stats`) on a float64 copy of the model, so that
  ``||grad L||^2`` does not saturate when float32 training has driven it below the float32
  resolution of the loss; returns ``||grad L||^2``, ``tr Sigma``, the monitor's ``D`` at the
  given learning rate and batch size, the documents' ``C = ||grad L||^2 / (D d)``
  (:func:`hhld.observables.consolidation_ratio`) and the "How to Use This Today" form
  ``C_sgd = ||g||^2 / (lr / B)`` (:func:`hhld.observables.consolidation_ratio_sgd`).
"""
from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ModAddMLP", "ModAddTransformer", "mlp", "CNN1D", "mse_onehot", "cross_entropy", "get_loss",
           "grad_stats_f64", "weight_norm", "evaluate", "train_sgd", "n_params"]


# ----------------------------------------------------------------------------- losses
def mse_onehot(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``mean_i ||out_i - onehot(y_i)||^2`` (a mean of per-sample losses)."""
    return ((out - F.one_hot(y, out.shape[-1]).to(out.dtype)) ** 2).sum(-1).mean()


def cross_entropy(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(out, y)


def get_loss(name: str):
    if name == "mse":
        return mse_onehot
    if name in ("ce", "cross_entropy"):
        return cross_entropy
    raise ValueError(f"loss must be 'mse' or 'ce', got {name!r}")


# ----------------------------------------------------------------------------- models
class ModAddMLP(nn.Module):
    """``p`` logits from ``x = (a, b)``: ``W_out act(W_a[a] + W_b[b] (+ bias))``."""

    def __init__(self, p: int, width: int, activation: str = "quadratic", bias: bool | None = None):
        super().__init__()
        if activation not in ("quadratic", "relu"):
            raise ValueError(f"activation must be 'quadratic' or 'relu', got {activation!r}")
        bias = (activation == "relu") if bias is None else bias
        self.activation = activation
        self.emb_a = nn.Embedding(p, width)
        self.emb_b = nn.Embedding(p, width)
        self.bias = nn.Parameter(torch.zeros(width)) if bias else None
        self.out = nn.Linear(width, p, bias=bias)
        # the init of nn.Linear(2p, width) on the one-hot concatenation: U(-1/sqrt(2p), 1/sqrt(2p))
        bound = 1.0 / math.sqrt(2 * p)
        with torch.no_grad():
            self.emb_a.weight.uniform_(-bound, bound)
            self.emb_b.weight.uniform_(-bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.emb_a(x[:, 0]) + self.emb_b(x[:, 1])
        if self.bias is not None:
            h = h + self.bias
        h = h * h if self.activation == "quadratic" else torch.relu(h)
        return self.out(h)


class ModAddTransformer(nn.Module):
    """One-layer transformer of Nanda et al. (2023) (see the module docstring).

    Only the ``=`` position's output is read, so only its query is needed: attention is
    computed for the last position over the three positions (exactly what a causal
    attention layer gives at that position), then the MLP on that position's residual.
    """

    def __init__(self, p: int, d_model: int = 128, n_heads: int = 4, d_head: int = 32, d_mlp: int = 512,
                 n_ctx: int = 3):
        super().__init__()
        self.p, self.n_heads, self.d_head = p, n_heads, d_head
        self.embed = nn.Embedding(p + 1, d_model)
        self.pos = nn.Embedding(n_ctx, d_model)
        self.W_Q = nn.Linear(d_model, n_heads * d_head, bias=False)
        self.W_K = nn.Linear(d_model, n_heads * d_head, bias=False)
        self.W_V = nn.Linear(d_model, n_heads * d_head, bias=False)
        self.W_O = nn.Linear(n_heads * d_head, d_model, bias=False)
        self.mlp_in = nn.Linear(d_model, d_mlp)
        self.mlp_out = nn.Linear(d_mlp, d_model)
        self.unembed = nn.Linear(d_model, p, bias=False)
        with torch.no_grad():  # Gaussian init with std 1/sqrt(fan-in), as in the paper's code base
            for m in (self.embed, self.pos):
                m.weight.normal_(0.0, 1.0 / math.sqrt(d_model))
            for m in (self.W_Q, self.W_K, self.W_V, self.W_O, self.mlp_in, self.mlp_out, self.unembed):
                m.weight.normal_(0.0, 1.0 / math.sqrt(m.in_features))
            self.mlp_in.bias.zero_()
            self.mlp_out.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B = x.shape[0]
        eq = torch.full((B, 1), self.p, dtype=x.dtype, device=x.device)
        tok = torch.cat([x, eq], 1)                                     # (B, 3): a, b, =
        pos = torch.arange(tok.shape[1], device=x.device).expand(B, -1)
        r = self.embed(tok) + self.pos(pos)                              # (B, 3, d)
        H, dh = self.n_heads, self.d_head
        q = self.W_Q(r[:, -1]).view(B, H, dh)                            # query of '='
        k = self.W_K(r).view(B, -1, H, dh)
        v = self.W_V(r).view(B, -1, H, dh)
        att = torch.softmax(torch.einsum("bhd,bthd->bht", q, k) / math.sqrt(dh), dim=-1)
        z = torch.einsum("bht,bthd->bhd", att, v).reshape(B, H * dh)
        r_last = r[:, -1] + self.W_O(z)
        r_last = r_last + self.mlp_out(torch.relu(self.mlp_in(r_last)))
        return self.unembed(r_last)


def mlp(d_in: int, width: int, d_out: int, depth: int = 1, activation: str = "relu") -> nn.Sequential:
    """``depth`` hidden layers of ``width`` units (ReLU or tanh)."""
    act = {"relu": nn.ReLU, "tanh": nn.Tanh}[activation]
    layers: list[nn.Module] = []
    d = d_in
    for _ in range(depth):
        layers += [nn.Linear(d, width), act()]
        d = width
    layers.append(nn.Linear(d, d_out))
    return nn.Sequential(*layers)


class CNN1D(nn.Module):
    """Small 1-D CNN for MNIST-1D: three stride-2 convolutions (ReLU) and a linear read-out."""

    def __init__(self, channels: int = 32, length: int = 40, n_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv1d(1, channels, 5, stride=2, padding=2)
        self.conv2 = nn.Conv1d(channels, channels, 3, stride=2, padding=1)
        self.conv3 = nn.Conv1d(channels, channels, 3, stride=2, padding=1)
        L = length
        for _ in range(3):
            L = (L + 1) // 2
        self.head = nn.Linear(channels * L, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.unsqueeze(1)
        h = torch.relu(self.conv1(h))
        h = torch.relu(self.conv2(h))
        h = torch.relu(self.conv3(h))
        return self.head(h.flatten(1))


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# ----------------------------------------------------------------------------- measuring
def weight_norm(model: nn.Module) -> float:
    with torch.no_grad():
        return float(torch.sqrt(sum((p.detach().double() ** 2).sum() for p in model.parameters())))


@torch.no_grad()
def evaluate(model: nn.Module, loss_fn, x: torch.Tensor, y: torch.Tensor, chunk: int = 8192) -> tuple[float, float]:
    """``(mean loss, accuracy)`` of ``model`` on ``(x, y)``."""
    was = model.training
    model.eval()
    tot_loss, correct, n = 0.0, 0, x.shape[0]
    for i in range(0, n, chunk):
        out = model(x[i:i + chunk])
        tot_loss += float(loss_fn(out, y[i:i + chunk])) * out.shape[0]
        correct += int((out.argmax(-1) == y[i:i + chunk]).sum())
    model.train(was)
    return tot_loss / n, correct / n


def _to_double(t):
    return t.double() if torch.is_tensor(t) and t.is_floating_point() else t


def grad_stats_f64(model: nn.Module, loss_fn, x: torch.Tensor, y: torch.Tensor, lr: float,
                   batch_size: int | None = None) -> dict:
    """Gradient and noise statistics of the loss on ``(x, y)`` in float64 (see the module doc).

    ``batch_size`` is the ``B`` of the monitor's ``D = lr tr Sigma / (2 B d)`` and of
    ``C_sgd = ||g||^2 B / lr`` (default: ``len(x)``, i.e. full-batch training). ``||grad L||^2``
    is the exact squared norm of the gradient of the mean loss over ``(x, y)``.
    """
    from hhld.observables import consolidation_ratio, consolidation_ratio_sgd
    from hhld.torch.noise import diffusion_from_noise, gradient_noise_stats

    m64 = copy.deepcopy(model).double()
    st = gradient_noise_stats(m64, loss_fn, _to_double(x), y, lr=lr)
    n = int(x.shape[0])
    B = n if batch_size is None else int(batch_size)
    d = st.dim
    g2 = st.batch_grad_sq_norm  # full data set: the batch gradient is the gradient of the loss
    tr = st.tr_sigma
    D = diffusion_from_noise(tr, lr, B, d)  # the monitor's D at batch B
    C_doc = float(consolidation_ratio(g2, D, dim=d)) if D > 0 else math.inf
    C_sgd = float(consolidation_ratio_sgd(g2, lr, B))
    return {"grad_sq": g2, "tr_sigma": tr, "D": D, "C": C_doc, "C_sgd": C_sgd, "b_simple": st.b_simple,
            "dim": d, "loss_f64": st.loss}


def train_sgd(model: nn.Module, loss_fn, x: torch.Tensor, y: torch.Tensor, *, lr: float, batch_size: int,
              epochs: float, generator: torch.Generator, momentum: float = 0.0,
              optimizer: str | torch.optim.Optimizer = "sgd", before_step=None) -> dict:
    """Mini-batch training for ``epochs`` passes (fractional allowed); returns final train loss
    and whether the loss stayed finite. ``optimizer``: ``"sgd"``, ``"adam"`` or a ready optimizer
    (then ``lr`` and ``momentum`` are its own); ``before_step(step, xb, yb)`` runs before each step
    (e.g. to hand a measured quantity to the optimizer). A :class:`hhld.NonFiniteError` from the
    optimizer ends the run as non-finite."""
    from hhld import NonFiniteError

    if isinstance(optimizer, torch.optim.Optimizer):
        opt = optimizer
    elif optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    elif optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=lr)
    else:
        raise ValueError(f"optimizer must be 'sgd', 'adam' or a torch optimizer, got {optimizer!r}")
    n = x.shape[0]
    steps_per_epoch = max(n // batch_size, 1)
    total = int(round(epochs * steps_per_epoch))
    finite = True
    step = 0
    model.train()
    while step < total and finite:
        perm = torch.randperm(n, generator=generator)
        for i in range(steps_per_epoch):
            if step >= total:
                break
            idx = perm[i * batch_size:(i + 1) * batch_size]
            if before_step is not None:
                before_step(step, x[idx], y[idx])
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x[idx]), y[idx])
            if not torch.isfinite(loss):
                finite = False
                break
            loss.backward()
            try:
                opt.step()
            except NonFiniteError:
                finite = False
                break
            step += 1
    return {"finite": finite, "steps": step}
