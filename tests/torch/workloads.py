"""The real-workload matrix of the training monitor (issue 10): one table drives the tests.

Like torch's ``OptimizerInfo``, the matrix is plain data: :data:`WORKLOADS` (model builders, data,
per-sample losses), :data:`PRACTICES` (optimizer, clipping, accumulation, autocast, GradScaler, DDP,
Lightning, Hugging Face Trainer) and :data:`CELLS`, the (workload, practice) pairs that are run.
``tests/torch/test_workload_matrix.py`` runs every cell with :func:`check_cell`.

For a cell, the monitored training runs ``steps`` optimizer steps with ``log_every=1``,
``tier1_every=1`` and ``conv_estimator="exact"``, and the last step is checked against a float64
brute-force reference computed from the float32 parameters *before* that step's update, on the same
micro-batches (:func:`reference`):

* per-sample gradients ``g_i`` (the gradient of one batch element's loss; for sequence models the mean
  over its tokens) by ``torch.func`` (``functional_call`` + ``vmap(grad)``) where the model is
  deterministic and vmap supports it, else from ONE forward pass replayed with the RNG state of the
  monitored step (same dropout masks) and ``autograd.grad(l_i, params, retain_graph=True)`` per sample;
* train-mode BatchNorm couples the samples: the reference holds each BatchNorm's batch statistics fixed
  (those of the step's forward); the monitor is expected to exclude the parameters upstream of it;
* restricted to the parameters the monitor reports as covered (:func:`covered_parameters`, the single
  adapter to the monitor's coverage API), with ``B`` the samples of the optimizer step (all
  micro-batches), ``d_cov`` the covered and ``d`` the monitored dimension, ``lr`` the optimizer's lr::

    tr_sigma = B/(B-1) (mean_i |g_i|^2 - |gbar|^2)       grad_sq_norm_unbiased = |gbar|^2 - tr_sigma/B
    b_simple = tr_sigma / grad_sq_norm_unbiased          D = lr tr_sigma / (2 B d_cov)
    C = |gbar_all|^2 / (D d)                             C_sgd = |gbar_all|^2 / (lr/B)

  ``gbar_all`` is the applied batch gradient over all monitored parameters. With clipping the row
  describes the gradient ``step()`` applies: everything scales by ``c^2``,
  ``c = min(1, max_norm/|gbar_all|)`` (``b_simple`` and ``C`` unchanged), and the row records it
  (:data:`CLIP_KEYS`). With AdamW the same SGD-equivalent quantities plus one warning naming the optimizer
  as adaptive (:data:`ADAPTIVE_WARNING`).

Tolerance: 2% in float32, 5% under bf16/fp16 autocast. A failing cell names each quantity that is off
and by how much (:func:`compare`).
"""
from __future__ import annotations

import contextlib
import dataclasses
import gc
import json
import logging
import math
import os
import re
import socket
import sys
import types
import warnings
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the Hugging Face cell builds its model from a config: no downloads
import torch  # noqa: E402
import torch.utils.checkpoint  # noqa: E402,F401
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

# ====================================================================== the monitor's interface (adapter)
# Everything the matrix reads from the monitor beyond the row's numbers goes through here, so that a
# renamed key or a new method changes one place.

#: row keys that record clipping: the number of clipped steps in the interval and the clip coefficient c
CLIP_KEYS = ("clipped_steps", "clip_coef")
#: a one-time warning naming the optimizer as adaptive (preconditioned: the quantities are SGD-equivalent)
ADAPTIVE_WARNING = r"(?is)(?=.*\b{opt}\b)(?=.*(adaptive|precondition|sgd.equivalent))"
#: a warning that train-mode BatchNorm couples the samples (its upstream parameters are excluded)
COUPLING_WARNING = r"(?i)batch.?norm|coupl"
#: dynamo's recompile-limit warning (a Python warning or a log record)
RECOMPILE_WARNING = r"(?i)recompil"

MONITOR_KWARGS = dict(log_every=1, tier1_every=1, conv_estimator="exact")


def covered_parameters(mon) -> list[str]:
    """Names of the monitored parameters whose per-sample statistics enter the row."""
    if hasattr(mon, "covered_parameters"):
        return list(mon.covered_parameters())
    unc = mon.uncovered_parameters()
    return [n for n in mon.names if n not in unc]


def clip_problems(row: dict, c: float, tol: float) -> list[str]:
    """The row records that clipping happened (``c < 1``), or that it did not."""
    steps_key, coef_key = CLIP_KEYS
    if c >= 1.0:
        if row.get(steps_key, 0) not in (0, None):
            return [f"{steps_key}={row.get(steps_key)} but the checked step was not clipped"]
        return []
    out = []
    if not (row.get(steps_key) or 0) >= 1:
        out.append(f"clipping (c={c:.4g}) not recorded: row[{steps_key!r}]={row.get(steps_key)!r}")
    got = row.get(coef_key)
    if got is None or not math.isfinite(got) or abs(got - c) > tol * c:
        out.append(f"{coef_key}: monitor {got!r} vs reference {c:.6g}")
    return out


def warning_problems(messages: list[str], *, optimizer: str | None, coupling: bool, compiled: bool) -> list[str]:
    out = []
    if optimizer is not None:
        n = sum(bool(re.search(ADAPTIVE_WARNING.format(opt=re.escape(optimizer)), m)) for m in messages)
        if n != 1:
            out.append(f"expected exactly one warning naming {optimizer} as adaptive (SGD-equivalent quantities), "
                       f"got {n}")
    if coupling and not any(re.search(COUPLING_WARNING, m) for m in messages):
        out.append("no warning that the samples are coupled (train-mode BatchNorm, a batch mixing)")
    if compiled:
        rec = [m for m in messages if re.search(RECOMPILE_WARNING, m)]
        if rec:
            out.append(f"recompile warning under torch.compile: {rec[0][:160]!r}")
    return out


# ====================================================================== workloads: models
VOCAB, EMB, HEADS, SEQ = 16, 16, 2, 8


class OpaqueScale(torch.autograd.Function):
    """``x * s`` as a custom autograd Function: invisible to the per-sample engine, and without a vmap rule."""

    @staticmethod
    def forward(ctx, x, s):
        ctx.save_for_backward(x, s)
        return x * s

    @staticmethod
    def backward(ctx, g):
        x, s = ctx.saved_tensors
        return g * s, (g * x).sum(0)


class Block(nn.Module):
    """Pre-LayerNorm transformer block: attention through SDPA (qkv from one Linear) or nn.MultiheadAttention."""

    def __init__(self, E=EMB, H=HEADS, p=0.1, attn="sdpa", causal=True):
        super().__init__()
        self.E, self.H, self.p, self.attn, self.causal = E, H, p, attn, causal
        self.ln1, self.ln2 = nn.LayerNorm(E), nn.LayerNorm(E)
        if attn == "sdpa":
            self.qkv = nn.Linear(E, 3 * E)
            self.proj = nn.Linear(E, E)
        else:
            self.mha = nn.MultiheadAttention(E, H, dropout=p, batch_first=True)
        self.drop = nn.Dropout(p)
        self.mlp = nn.Sequential(nn.Linear(E, 4 * E), nn.GELU(), nn.Linear(4 * E, E), nn.Dropout(p))

    def forward(self, x):
        B, T, E = x.shape
        h = self.ln1(x)
        if self.attn == "sdpa":
            q, k, v = self.qkv(h).split(E, dim=2)
            q, k, v = (t.view(B, T, self.H, E // self.H).transpose(1, 2) for t in (q, k, v))
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.p if self.training else 0.0,
                                               is_causal=self.causal)
            y = self.proj(y.transpose(1, 2).reshape(B, T, E))
        else:
            mask = torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1) if self.causal else None
            y = self.mha(h, h, h, attn_mask=mask, need_weights=False)[0]
        x = x + self.drop(y)
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    """nanoGPT-style decoder: token embedding + learned positions ``pos(arange(T))``, pre-LN blocks,
    dropout, tied output weights."""

    def __init__(self, attn="sdpa", p=0.1, n_layer=1, checkpoint=None):
        super().__init__()
        self.checkpoint = checkpoint  # activation checkpointing of each block: None, "reentrant", "non_reentrant"
        self.tok = nn.Embedding(VOCAB, EMB)
        self.pos = nn.Embedding(SEQ, EMB)
        self.drop = nn.Dropout(p)
        self.blocks = nn.Sequential(*[Block(p=p, attn=attn) for _ in range(n_layer)])
        self.ln_f = nn.LayerNorm(EMB)
        self.lm_head = nn.Linear(EMB, VOCAB, bias=False)
        self.lm_head.weight = self.tok.weight  # tied

    def forward(self, idx):
        T = idx.shape[1]
        x = self.drop(self.tok(idx) + self.pos(torch.arange(T, device=idx.device)))
        if self.checkpoint is None:
            x = self.blocks(x)
        else:
            for b in self.blocks:
                x = torch.utils.checkpoint.checkpoint(b, x, use_reentrant=self.checkpoint == "reentrant")
        return self.lm_head(self.ln_f(x))


class RNNNet(nn.Module):
    """LSTM/GRU classifier (last step) or tagger (every step); ``batch_first`` False takes ``(T, B, F)``."""

    def __init__(self, cell="lstm", batch_first=True, task="classify", n_in=4, hidden=12, n_out=3):
        super().__init__()
        rnn = nn.LSTM if cell == "lstm" else nn.GRU
        self.rnn = rnn(n_in, hidden, batch_first=batch_first)
        self.head = nn.Linear(hidden, n_out)
        self.batch_first, self.task = batch_first, task

    def forward(self, x):
        out, _ = self.rnn(x)
        if self.task == "tag":
            return self.head(out)
        return self.head(out[:, -1] if self.batch_first else out[-1])


class PackedRNN(nn.Module):
    """Variable-length sequences packed in the forward (``pack_padded_sequence(enforce_sorted=False)``), a 2-layer
    bidirectional LSTM/GRU, then ``h_n`` and the mean of the unpacked outputs (``pad_packed_sequence``)."""

    def __init__(self, kind="lstm"):
        super().__init__()
        cls = nn.LSTM if kind == "lstm" else nn.GRU
        self.kind = kind
        self.rnn = cls(4, 8, num_layers=2, bidirectional=True, batch_first=True)
        self.fc = nn.Linear(32, 3)

    def forward(self, x, lengths):
        out, st = self.rnn(nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False))
        hn = st[0] if self.kind == "lstm" else st
        o, lens = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
        return self.fc(torch.cat([hn[-2], hn[-1], o.sum(1) / lens[:, None].to(o.dtype)], -1))


class DeepLSTM(nn.Module):
    """A stacked bidirectional LSTM, batch first, classifying the last step: ``nn.LSTM(**kw)`` (dropout between
    layers, projections)."""

    def __init__(self, **kw):
        super().__init__()
        self.rnn = nn.LSTM(4, 8, bidirectional=True, batch_first=True, **kw)
        self.fc = nn.Linear(2 * (kw.get("proj_size") or 8), 3)

    def forward(self, x):
        return self.fc(self.rnn(x)[0][:, -1])


def cnn_gn():
    """GroupNorm, a grouped convolution and an affine InstanceNorm (whose preceding bias gets a gradient of pure
    rounding noise: the sum check must not take it for a mismatch)."""
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.GroupNorm(2, 8), nn.ReLU(),
                         nn.Conv2d(8, 8, 3, padding=1, groups=2), nn.InstanceNorm2d(8, affine=True), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))


def cnn_bn():
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(), nn.Dropout(0.2),
                         nn.Linear(8 * 4 * 4, 4))


class ViT(nn.Module):
    """Conv2d patch embedding (kernel = stride = patch), a cls token expanded over the batch, a learned
    ``pos_embed`` of shape (1, N+1, E), one transformer block, a head."""

    def __init__(self, img=8, patch=4, E=EMB, n_out=4):
        super().__init__()
        n = (img // patch) ** 2
        self.patch = nn.Conv2d(3, E, kernel_size=patch, stride=patch)
        self.cls = nn.Parameter(torch.randn(1, 1, E) * 0.02)
        self.pos_embed = nn.Parameter(torch.randn(1, n + 1, E) * 0.02)
        self.block = Block(E, p=0.0, causal=False)
        self.ln = nn.LayerNorm(E)
        self.head = nn.Linear(E, n_out)

    def forward(self, x):
        p = self.patch(x).flatten(2).transpose(1, 2)
        h = torch.cat([self.cls.expand(x.shape[0], -1, -1), p], 1) + self.pos_embed
        return self.head(self.ln(self.block(h)[:, 0]))


class FrozenSparse(nn.Module):
    """Bag of embeddings (``sparse=True``) -> a frozen Linear -> a trainable head."""

    def __init__(self, V=20, E=8, n_out=3):
        super().__init__()
        self.emb = nn.Embedding(V, E, sparse=True)
        self.frozen = nn.Linear(E, E).requires_grad_(False)
        self.head = nn.Linear(E, n_out)

    def forward(self, ids):
        return self.head(torch.tanh(self.frozen(self.emb(ids).mean(1))))


class PairDistance(nn.Module):
    """Metric learning: an embedding net, the in-batch distance matrix ``torch.cdist(e, e)``, and a head on each
    sample's row of distances. The embedding net is coupled across samples (each sample's output depends on every
    other's embedding); the head keeps exact per-sample gradients with the distances held fixed."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.head = nn.Linear(6, 16), nn.Linear(16, 8), nn.Linear(2, 3)

    def forward(self, x):
        e = self.b(self.a(x).relu())
        d = torch.cdist(e, e)
        return self.head(torch.stack([d.mean(1), d.amax(1)], 1))


class Encoder(nn.Module):
    """An embedding net (normalised outputs) for a contrastive loss computed in the training loop."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(6, 16), nn.Linear(16, 8)

    def forward(self, x):
        return F.normalize(self.b(self.a(x).relu()), dim=-1)


class ManifoldMixup(nn.Module):
    """Manifold mixup inside the model: hidden rows mixed with another sample's (``h[perm]``), then a head."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(6, 16), nn.Linear(16, 3)

    def forward(self, x):
        h = self.a(x).relu()
        perm = torch.arange(h.shape[0]).roll(1)
        return self.b(0.7 * h + 0.3 * h[perm])


class OtherLayers(nn.Module):
    """Layers outside the common ones, through the engine's general (VJP) rule: ``nn.Bilinear``, ``nn.PReLU``,
    ``nn.ConvTranspose2d``, and ``nn.RMSNorm`` with its default ``eps=None``."""

    def __init__(self):
        super().__init__()
        self.bil, self.act, self.ct = nn.Bilinear(6, 6, 8), nn.PReLU(), nn.ConvTranspose2d(2, 3, 2)
        self.rms, self.fc = nn.RMSNorm(27), nn.Linear(27, 3)

    def forward(self, x):
        h = self.act(self.bil(x, x.flip(-1)))
        h = self.ct(h.view(-1, 2, 2, 2)).flatten(1)
        return self.fc(self.rms(h))


class Reparametrized(nn.Module):
    """Weights made from parameters inside the forward: ``weight_norm`` (``torch.nn.utils.parametrizations``) and
    a LoRA-style adapter written as raw matrix products beside a frozen layer (``x @ A.T @ B.T``)."""

    def __init__(self):
        super().__init__()
        self.a = nn.utils.parametrizations.weight_norm(nn.Linear(6, 16))
        self.base = nn.Linear(16, 16).requires_grad_(False)
        self.A, self.B = nn.Parameter(0.3 * torch.randn(4, 16)), nn.Parameter(0.3 * torch.randn(16, 4))
        self.fc = nn.Linear(16, 3)

    def forward(self, x):
        h = self.a(x).tanh()
        return self.fc((self.base(h) + 2.0 * (h @ self.A.T @ self.B.T)).tanh())


class PaddedEncoder(nn.Module):
    """``nn.TransformerEncoder`` (post-LN layers, batch first) under a key padding mask, the first token's state
    classified: the attention goes through ``F.multi_head_attention_forward`` with a boolean mask."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(20, EMB)
        layer = nn.TransformerEncoderLayer(EMB, HEADS, 2 * EMB, dropout=0.0, batch_first=True)
        self.enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.fc = nn.Linear(EMB, 3)

    def forward(self, ids):
        return self.fc(self.enc(self.emb(ids), src_key_padding_mask=ids == 0)[:, 0])


class TextConv(nn.Module):
    """Token models beside attention: a depthwise dilated ``Conv1d``, a strided pointwise one, a max over time,
    an ``nn.EmbeddingBag`` branch and an ``nn.Embedding(max_norm=1, padding_idx=0)`` (its rows renormalised in
    place by the forward)."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(20, 8, max_norm=1.0, padding_idx=0)
        self.dw = nn.Conv1d(8, 8, 3, groups=8, dilation=2, padding=2)
        self.pw = nn.Conv1d(8, 6, 1, stride=2)
        self.bag = nn.EmbeddingBag(20, 6, mode="mean")
        self.fc = nn.Linear(6, 3)

    def forward(self, ids):
        h = F.relu(self.pw(F.relu(self.dw(self.emb(ids).transpose(1, 2)))))
        return self.fc(h.amax(-1) + self.bag(ids))


class ChannelsLastFrozenBN(nn.Module):
    """Fine-tuning habits: a ``channels_last`` network (its input converted inside) whose ``BatchNorm2d`` stays in
    eval mode while the rest trains (running statistics: no coupling of the samples, every parameter covered)."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                 nn.Conv2d(8, 8, 3, stride=2), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 3 * 3, 4))
        self.net.to(memory_format=torch.channels_last)
        self.train()

    def train(self, mode=True):
        super().train(mode)
        self.net[1].eval()  # frozen statistics, as when fine-tuning with a small batch
        return self

    def forward(self, x):
        return self.net(x.contiguous(memory_format=torch.channels_last))


def infonce_loss(e, y):
    """InfoNCE over in-batch pairs (each sample against the next one's embedding), outside the model."""
    return F.cross_entropy(e @ e.roll(1, 0).T / 0.5, torch.arange(e.shape[0]))


def infonce_per_sample(e, y):
    return F.cross_entropy(e @ e.roll(1, 0).T / 0.5, torch.arange(e.shape[0]), reduction="none")


def small_mlp():
    return nn.Sequential(nn.Linear(6, 16), nn.LayerNorm(16), nn.GELU(), nn.Linear(16, 3))


# ====================================================================== workloads: data and losses
def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _skewed(shape, n, g, power=1.5):
    """Integers in [0, n) with a Zipf-like skew: a strong common gradient direction (|G|^2 well above
    tr_sigma/B, so the unbiased |G|^2 is not a cancellation)."""
    w = 1.0 / torch.arange(1, n + 1, dtype=torch.float64) ** power
    return torch.multinomial(w, math.prod(shape), replacement=True, generator=g).view(shape)


def lm_data(B, seed):
    seq = _skewed((B, SEQ + 1), VOCAB, _gen(seed))
    return (seq[:, :SEQ],), seq[:, 1:]


def lm_loss(out, y):
    return F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))


def lm_per_sample(out, y):
    return F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1), reduction="none").view(y.shape).mean(1)


def cls_loss(out, y):
    return F.cross_entropy(out, y)


def cls_per_sample(out, y):
    return F.cross_entropy(out, y, reduction="none")


def tag_tb_per_sample(out, y):
    """Tagger with (T, B, C) outputs: the mean over the tokens of each sequence (axis 1 is the batch)."""
    return F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1), reduction="none").view(y.shape).mean(0)


def seq_data(B, seed, *, time_first, task, T=5, n_in=4, n_out=3):
    g = _gen(seed)
    x = torch.randn(B, T, n_in, generator=g)
    y = _skewed((B, T) if task == "tag" else (B,), n_out, g, power=2.0)
    if time_first:
        x = x.transpose(0, 1).contiguous()
        y = y.t().contiguous() if task == "tag" else y
    return (x,), y


def packed_data(B, seed, T=6):
    """Sequences of lengths 1..T (unsorted) for :class:`PackedRNN`: inputs ``(x, lengths)``."""
    (x,), y = seq_data(B, seed, time_first=False, task="classify", T=T)
    return (x, torch.randint(1, T + 1, (B,), generator=_gen(seed + 7))), y


def _prototypes(n_classes, shape, seed=0):
    """Fixed class prototypes: inputs ``x = P_y + noise`` (learnable data, a common gradient direction that
    survives the first steps)."""
    return torch.randn((n_classes,) + shape, generator=_gen(seed))


def img_data(B, seed, n_out=4):
    g = _gen(seed)
    y = _skewed((B,), n_out, g, power=2.0)
    return (_prototypes(n_out, (3, 8, 8))[y] + 0.7 * torch.randn(B, 3, 8, 8, generator=g),), y


def ids_data(B, seed):
    g = _gen(seed)
    return (_skewed((B, 6), 20, g, power=1.0),), _skewed((B,), 3, g, power=2.0)


def feat_data(B, seed, n_out=3):
    g = _gen(seed)
    y = _skewed((B,), n_out, g, power=2.0)
    return (_prototypes(n_out, (6,))[y] + 0.7 * torch.randn(B, 6, generator=g),), y


def padded_lm_data(B, seed):
    """:func:`lm_data` with each sequence's targets after a random length set to ``ignore_index`` (-100)."""
    (x,), y = lm_data(B, seed)
    lengths = torch.randint(2, SEQ + 1, (B,), generator=_gen(seed + 3))
    y = y.masked_fill(torch.arange(SEQ) >= lengths[:, None], -100)
    return (x,), y


def padded_lm_loss(out, y):
    return F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1), ignore_index=-100)


def padded_lm_per_sample(out, y):
    """A sequence's share of the batch loss (a mean over the batch's unpadded tokens), times B: the terms whose
    batch mean is the applied gradient."""
    tok = F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1), ignore_index=-100, reduction="none")
    return tok.view(y.shape).sum(1) * y.shape[0] / (y != -100).sum()


CLASS_WEIGHTS = (1.0, 3.0, 0.5)


def weighted_loss(out, y):
    return F.cross_entropy(out, y, weight=torch.tensor(CLASS_WEIGHTS, dtype=out.dtype), label_smoothing=0.1)


def weighted_per_sample(out, y):
    """A sample's share of the class-weighted mean (``sum_i w_i l_i / sum_i w_i``), times B."""
    w = torch.tensor(CLASS_WEIGHTS, dtype=out.dtype)
    return F.cross_entropy(out, y, weight=w, label_smoothing=0.1, reduction="none") * y.shape[0] / w[y].sum()


def enc_ids_data(B, seed):
    """Token ids with trailing padding (id 0) and a class that the first token carries."""
    g = _gen(seed)
    y = _skewed((B,), 3, g, power=2.0)
    x = 1 + _skewed((B, SEQ), 19, g, power=1.0)
    x[:, 0] = 1 + y
    lengths = torch.randint(2, SEQ + 1, (B,), generator=g)
    return (x.masked_fill(torch.arange(SEQ) >= lengths[:, None], 0),), y


# ====================================================================== the table
@dataclass(frozen=True)
class Workload:
    name: str
    letter: str                      # the (a) ... (g); (h) in-batch pairings
    build: Callable[[], nn.Module]   # float32, train mode; seeded by the caller
    data: Callable[[int, int], tuple]  # (samples, seed) -> (inputs tuple, targets), batch on batch_dim
    loss: Callable                   # the batch loss training uses (a mean over batch elements)
    per_sample_loss: Callable        # (out, y) -> (B,) losses of the batch elements
    batch: int = 8                   # samples per optimizer step
    batch_dim: int = 0               # batch axis of the inputs ((T, B, F) inputs: 1)
    target_dim: int | None = None    # batch axis of the targets (default: batch_dim)
    reference: str = "func"          # "func" (vmap(grad)) or "graph" (one forward, autograd.grad per sample)
    stochastic: bool = False         # dropout: replay the step's RNG state
    coupled: tuple = ()              # parameters upstream of a batch coupling (train-mode BatchNorm, a
                                     # mixing of samples): expected excluded, with a warning
    pass_batch_size: bool = False    # give the monitor batch_size=
    max_norm: float = 0.05           # clip_grad_norm_'s max_norm in the clipping practice (below |g|)
    compiled: bool = False
    note: str = ""

    @property
    def ydim(self):
        return self.batch_dim if self.target_dim is None else self.target_dim


def _seeded(fn, seed=0):
    def build():
        torch.manual_seed(seed)
        return fn()
    return build


_W = [
    Workload("gpt_sdpa", "a", _seeded(lambda: GPT("sdpa")), lm_data, lm_loss, lm_per_sample, batch=6,
             reference="graph", stochastic=True, max_norm=0.2,
             note="nanoGPT: pos(arange(T)) without a batch axis, SDPA with dropout, tied lm_head, B=6 != T=8"),
    Workload("gpt_sdpa_BeqT", "a", _seeded(lambda: GPT("sdpa")), lm_data, lm_loss, lm_per_sample, batch=SEQ,
             reference="graph", stochastic=True, note="B == T = 8 (used to be silently +8% on tr_sigma)"),
    Workload("gpt_sdpa_nodrop", "a", _seeded(lambda: GPT("sdpa", p=0.0)), lm_data, lm_loss, lm_per_sample,
             batch=6, reference="func", max_norm=0.2, note="deterministic (Lightning cell, reference cross-check)"),
    Workload("gpt_ckpt_reentrant", "a", _seeded(lambda: GPT("sdpa", n_layer=2, checkpoint="reentrant")), lm_data,
             lm_loss, lm_per_sample, batch=6, reference="graph", stochastic=True, max_norm=0.2,
             note="activation checkpointing torch.utils.checkpoint(use_reentrant=True) per block (torch's default, "
                  "and Hugging Face's gradient checkpointing): the segments recompute inside backward"),
    Workload("gpt_ckpt_nonreentrant", "a", _seeded(lambda: GPT("sdpa", n_layer=2, checkpoint="non_reentrant")),
             lm_data, lm_loss, lm_per_sample, batch=6, reference="graph", stochastic=True, max_norm=0.2,
             note="activation checkpointing with use_reentrant=False (saved-tensor hooks)"),
    Workload("gpt_mha", "b", _seeded(lambda: GPT("mha")), lm_data, lm_loss, lm_per_sample, batch=6,
             reference="graph", stochastic=True, max_norm=0.2,
             note="nn.MultiheadAttention(batch_first=True, dropout=0.1) reads its projections directly"),
    Workload("lstm_tbf_cls", "c", _seeded(lambda: RNNNet("lstm", batch_first=False)),
             lambda B, s: seq_data(B, s, time_first=True, task="classify"), cls_loss, cls_per_sample,
             batch=16, batch_dim=1, target_dim=0, reference="graph",
             note="(T, B, F) input, no batch_size=: the batch axis must be found (or a clear error); "
                  "torch.func cannot vmap nn.LSTM (in-place ops), so the graph reference"),
    Workload("lstm_bf_tag", "c", _seeded(lambda: RNNNet("lstm", batch_first=True, task="tag")),
             lambda B, s: seq_data(B, s, time_first=False, task="tag"), lm_loss, lm_per_sample,
             reference="graph", note="batch_first=True tagger"),
    Workload("gru_tbf_tag", "c", _seeded(lambda: RNNNet("gru", batch_first=False, task="tag")),
             lambda B, s: seq_data(B, s, time_first=True, task="tag"), lm_loss, tag_tb_per_sample,
             batch_dim=1, reference="graph", pass_batch_size=True, note="(T, B, F) tagger with batch_size="),
    Workload("gru_bf_cls", "c", _seeded(lambda: RNNNet("gru", batch_first=True)),
             lambda B, s: seq_data(B, s, time_first=False, task="classify"), cls_loss, cls_per_sample,
             batch=16, reference="graph", note="batch_first=True classifier"),
    Workload("lstm_packed", "c", _seeded(PackedRNN), packed_data, cls_loss, cls_per_sample, reference="graph",
             note="pack_padded_sequence(enforce_sorted=False) in the forward, 2-layer bidirectional LSTM, h_n and "
                  "pad_packed_sequence (was not covered: coverage 2%)"),
    Workload("gru_packed", "c", _seeded(lambda: PackedRNN("gru")), packed_data, cls_loss, cls_per_sample,
             reference="graph", note="the same with a GRU"),
    Workload("lstm_dropout", "c", _seeded(lambda: DeepLSTM(num_layers=3, dropout=0.3)), lambda B, s: seq_data(B, s, time_first=False, task="classify"),
             cls_loss, cls_per_sample, reference="graph", stochastic=True,
             note="nn.LSTM(num_layers=3, dropout=0.3): the masks between layers replayed from the generator's state "
                  "(was not covered: coverage 1%)"),
    Workload("lstm_proj", "c", _seeded(lambda: DeepLSTM(num_layers=2, proj_size=3)), lambda B, s: seq_data(B, s, time_first=False, task="classify"),
             cls_loss, cls_per_sample, reference="graph",
             note="nn.LSTM(proj_size=3), 2 layers, bidirectional (was not covered: coverage 1.5%)"),
    Workload("cnn_bn", "d", _seeded(cnn_bn), img_data, cls_loss, cls_per_sample, batch=16, reference="graph",
             stochastic=True, coupled=("0.weight", "0.bias"), max_norm=0.1,
             note="BatchNorm2d (train mode) + Dropout: reference with the batch statistics held fixed; "
                  "conv 0 (upstream of the BatchNorm) expected excluded with a warning"),
    Workload("cnn_gn", "d", _seeded(cnn_gn), img_data, cls_loss, cls_per_sample, batch=16, reference="func",
             max_norm=0.1, note="GroupNorm, grouped conv, affine InstanceNorm (no batch coupling)"),
    Workload("vit", "e", _seeded(ViT), img_data, cls_loss, cls_per_sample, batch=16, reference="func", max_norm=0.1,
             note="patch Conv2d, cls token + pos_embed raw nn.Parameters"),
    Workload("frozen_sparse", "f", _seeded(FrozenSparse), ids_data, cls_loss, cls_per_sample, reference="func",
             note="a frozen Linear and nn.Embedding(sparse=True); SGD only (sparse gradients)"),
    Workload("pair_cdist", "h", _seeded(PairDistance), feat_data, cls_loss, cls_per_sample, reference="graph",
             coupled=("a.weight", "a.bias", "b.weight", "b.bias"),
             note="in-batch distances torch.cdist(e, e) (metric learning): the embedding net expected coupled, with "
                  "a warning (was reported covered, tr_sigma 17x)"),
    Workload("infonce_outside", "h", _seeded(Encoder), feat_data, infonce_loss, infonce_per_sample,
             reference="graph", coupled=("a.weight", "a.bias", "b.weight", "b.bias"),
             note="a contrastive loss over in-batch pairs computed in the training loop, from the model's outputs: "
                  "every parameter expected coupled, with a warning (was reported covered, tr_sigma +43%)"),
    Workload("mixup_hidden", "h", _seeded(ManifoldMixup), feat_data, cls_loss, cls_per_sample, reference="graph",
             coupled=("a.weight", "a.bias"),
             note="manifold mixup 0.7 h + 0.3 h[perm] inside the model: the layer before it expected coupled, with a "
                  "warning (was reported covered, tr_sigma +10%)"),
    Workload("other_layers", "i", _seeded(OtherLayers), feat_data, cls_loss, cls_per_sample, reference="func",
             note="Bilinear, PReLU, ConvTranspose2d, RMSNorm(eps=None) (under bf16 autocast these were uncovered; "
                  "RMSNorm's default eps was taken from the half type)"),
    Workload("reparametrized", "i", _seeded(Reparametrized), feat_data, cls_loss, cls_per_sample, reference="graph",
             note="weight_norm and a raw-matmul LoRA adapter (under bf16/fp16 autocast the weights' half copies made "
                  "their sums fail the float32 check: uncovered)"),
    Workload("lm_padded", "a", _seeded(lambda: GPT("sdpa", p=0.0)), padded_lm_data, padded_lm_loss,
             padded_lm_per_sample, batch=6, reference="graph", max_norm=0.2,
             note="targets padded with ignore_index=-100: the loss is a mean over the batch's unpadded tokens, so "
                  "a sequence weighs by its length"),
    Workload("encoder_padmask", "b", _seeded(PaddedEncoder), enc_ids_data, cls_loss, cls_per_sample, batch=16,
             reference="graph", max_norm=0.1, note="nn.TransformerEncoder (2 post-LN layers) with "
                                                   "src_key_padding_mask"),
    Workload("text_conv", "i", _seeded(TextConv), ids_data, cls_loss, cls_per_sample, reference="graph",
             note="depthwise dilated Conv1d, strided pointwise Conv1d, EmbeddingBag, Embedding(max_norm=1) (its in-place "
                  "renormalisation has no vmap rule: the graph reference)"),
    Workload("chlast_frozen_bn", "d", _seeded(ChannelsLastFrozenBN), img_data, cls_loss, cls_per_sample, batch=16,
             reference="graph", max_norm=0.1, note="channels_last, BatchNorm2d kept in eval mode (fine-tuning)"),
    Workload("weighted_ce", "i", _seeded(small_mlp), feat_data, weighted_loss, weighted_per_sample,
             reference="graph", note="cross_entropy(weight=class weights, label_smoothing=0.1): a weighted mean"),
    Workload("compiled_mlp", "g", _seeded(small_mlp), feat_data, cls_loss, cls_per_sample, batch=32, reference="func",
             compiled=True, note="torch.compile(backend='aot_eager'), 10 steps (above dynamo's recompile limit 8)"),
]
WORKLOADS = {w.name: w for w in _W}


@dataclass(frozen=True)
class Practice:
    name: str
    optimizer: str = "sgd"           # "sgd", "momentum", "adamw"
    lr: float = 0.05
    clip: bool = False               # clip_grad_norm_(params, workload.max_norm) between backward and step
    accum: int = 1                   # micro-batches per optimizer step (each loss divided by their number)
    autocast: torch.dtype | None = None
    param_dtype: torch.dtype | None = None  # the model and its float inputs in this dtype (pure bf16 training)
    scaler: bool = False             # torch.amp.GradScaler
    runner: str = "loop"             # "loop", "ddp", "lightning", "hf"
    weight_decay: float = 0.0        # SGD's L2 decay: step() applies p.grad + weight_decay * p
    note: str = ""

    @property
    def low_precision(self) -> bool:
        return self.autocast is not None or self.param_dtype is not None

    @property
    def tol(self):
        return 0.05 if self.low_precision else 0.02


_P = [
    Practice("sgd"),
    Practice("momentum", optimizer="momentum"),
    Practice("adamw", optimizer="adamw", lr=1e-3),
    Practice("clip", clip=True),
    Practice("accum2", accum=2),
    Practice("accum3", accum=3),
    Practice("accum4", accum=4),
    Practice("bf16", autocast=torch.bfloat16),
    Practice("fp16_scaler", autocast=torch.float16, scaler=True,
             note="CPU fp16 autocast: nn.LSTM fails in oneDNN ('could not create a primitive descriptor'), "
                  "so no LSTM cell"),
    Practice("ddp_gloo", runner="ddp", note="2 processes on gloo, 4 samples each; B = 8 (the global batch)"),
    Practice("ddp_gloo_nosync_accum2", runner="ddp", accum=2,
             note="2 processes on gloo, 2 equal micro-batches each, the first under DDP's no_sync()"),
    Practice("ddp_gloo_nosync_accum3_clip", runner="ddp", accum=3, clip=True,
             note="2 processes on gloo, 3 equal micro-batches each, the first two under DDP's no_sync(), then "
                  "clip_grad_norm_"),
    Practice("adamw_clip_accum2_bf16", optimizer="adamw", lr=1e-3, clip=True, accum=2, autocast=torch.bfloat16,
             note="the practices together: AdamW, clip_grad_norm_, 2 micro-batches, bf16 autocast"),
    Practice("fp16_scaler_clip_accum2", clip=True, accum=2, autocast=torch.float16, scaler=True,
             note="GradScaler: unscale_ before clip_grad_norm_, 2 micro-batches"),
    Practice("momentum_clip_accum4", optimizer="momentum", clip=True, accum=4),
    Practice("momentum_wd", optimizer="momentum", weight_decay=0.05,
             note="SGD with momentum and weight_decay (the ResNet recipe, with a decay large enough to show): the "
                  "rows describe p.grad + weight_decay * p"),
    Practice("momentum_wd_clip_accum2", optimizer="momentum", weight_decay=0.05, clip=True, accum=2),
    Practice("bf16_params_adamw", optimizer="adamw", lr=1e-3, param_dtype=torch.bfloat16,
             note="pure bfloat16 training (model.to(torch.bfloat16), bf16 inputs, AdamW), as in LLM fine-tuning"),
    Practice("bf16_params_clip_accum2", clip=True, accum=2, param_dtype=torch.bfloat16),
    Practice("lightning_accum2_clip", accum=2, clip=True, runner="lightning",
             note="accumulate_grad_batches=2, gradient_clip_val=max_norm, through hhld.torch.callbacks"),
    Practice("hf_trainer", optimizer="adamw", lr=1e-3, accum=2, runner="hf",
             note="transformers.Trainer, gradient_accumulation_steps=2, default AdamW and max_grad_norm=1"),
]
PRACTICES = {p.name: p for p in _P}


@dataclass(frozen=True)
class Cell:
    workload: str
    practice: str
    steps: int = 2                   # optimizer steps run; the last one is checked

    @property
    def id(self):
        return f"{self.workload}-{self.practice}"


_CELLS = {
    "gpt_sdpa": ["sgd", "momentum", "momentum_wd", "adamw", "clip", "accum2", "bf16", "fp16_scaler", "adamw_clip_accum2_bf16",
                 "bf16_params_adamw"],
    "gpt_sdpa_BeqT": ["sgd"],
    "gpt_ckpt_reentrant": ["sgd", "accum2", "bf16"],
    "gpt_ckpt_nonreentrant": ["sgd", "clip"],
    "gpt_sdpa_nodrop": ["lightning_accum2_clip", "ddp_gloo_nosync_accum3_clip"],
    "gpt_mha": ["sgd", "clip", "accum3", "bf16"],
    "lstm_tbf_cls": ["sgd", "accum2"],
    "lstm_bf_tag": ["sgd", "momentum", "accum4", "bf16", "ddp_gloo", "ddp_gloo_nosync_accum2", "momentum_clip_accum4"],
    "gru_tbf_tag": ["sgd", "accum2"],
    "gru_bf_cls": ["adamw", "fp16_scaler"],
    "lstm_packed": ["sgd", "accum2", "clip", "bf16"],
    "gru_packed": ["sgd", "momentum"],
    "lstm_proj": ["sgd", "accum2"],
    "lstm_dropout": ["sgd", "accum2", "bf16"],
    "cnn_bn": ["sgd", "momentum", "clip", "accum2", "bf16", "fp16_scaler", "fp16_scaler_clip_accum2", "momentum_wd",
               "momentum_wd_clip_accum2"],
    "cnn_gn": ["sgd", "clip", "bf16_params_adamw"],
    "vit": ["sgd", "adamw", "clip", "bf16", "fp16_scaler", "fp16_scaler_clip_accum2", "bf16_params_clip_accum2"],
    "frozen_sparse": ["sgd", "accum2"],
    "compiled_mlp": ["sgd", "adamw"],
    "pair_cdist": ["sgd", "clip"],
    "infonce_outside": ["sgd", "accum2"],
    "mixup_hidden": ["sgd"],
    "other_layers": ["sgd", "bf16", "fp16_scaler"],
    "reparametrized": ["sgd", "bf16", "fp16_scaler"],
    "lm_padded": ["sgd", "clip", "accum2", "bf16"],
    "encoder_padmask": ["sgd", "clip"],
    "text_conv": ["sgd", "accum2"],
    "chlast_frozen_bn": ["sgd", "momentum", "fp16_scaler"],
    "weighted_ce": ["sgd", "accum2"],
}
CELLS = [Cell(w, p, steps=10 if WORKLOADS[w].compiled else 2) for w, ps in _CELLS.items() for p in ps]
HF_CELL = "hf_gpt2-hf_trainer"  # the Hugging Face cell: its own model (a tiny GPT2 from a config)


def train_monitored_and_not(build, batches, loss_fn, lr, monitor_kw, check_history):
    """Train ``build()`` on ``batches`` (a list of ``(inputs tuple, targets)``) with plain SGD twice, without and with
    ``Monitor(**monitor_kw)``, from the same global seed; ``check_history(mon.history)`` is asserted. Returns
    ``(plain, monitored)``, each ``(model, torch.rand(3) drawn after training)``: equal weights, buffers and draws mean
    the monitor left training as it was."""
    from hhld.torch import Monitor

    def train(monitored):
        model = build()
        opt = torch.optim.SGD(model.parameters(), lr=lr)
        mon = Monitor(model, opt, **monitor_kw) if monitored else None
        torch.manual_seed(123)
        for inputs, y in batches:
            opt.zero_grad()
            loss = loss_fn(model(*inputs), y)
            loss.backward()
            opt.step()
            if mon is not None:
                mon.step(loss)
        if mon is not None:
            assert check_history(mon.history)
            mon.close()
        return model, torch.rand(3)

    return train(False), train(True)


def same_training(plain, monitored) -> bool:
    (a, ra), (b, rb) = plain, monitored
    return (all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
            and all(torch.equal(p, q) for p, q in zip(a.buffers(), b.buffers())) and torch.equal(ra, rb))


# ====================================================================== one monitored run
@dataclass
class StepRecord:
    """What the reference needs from the checked step, and what the monitor said."""

    row: dict
    names: list                      # monitored parameters (names in the plain model)
    covered: list                    # the monitor's covered parameters
    dim: int
    lr: float
    state: dict                      # the plain model's state_dict before the checked step's update
    micro: list                      # [(inputs tuple, targets)] of the checked step
    rngs: list | None                # torch RNG state before each micro-batch's forward
    applied: dict                    # name -> gradient step() applied (read in a step post-hook)
    max_norm: float | None
    messages: list = field(default_factory=list)  # warnings and torch log records of the whole run
    events: list = field(default_factory=list)
    history: list = field(default_factory=list)
    world: int = 1
    extra: dict = field(default_factory=dict)  # runner-specific (micro-batch losses, the Trainer's log history)
    weight_decay: float = 0.0        # the optimizer's L2 decay (step() applies p.grad + weight_decay * p)


class _LogCatcher(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []
        self._seen = set()

    def emit(self, record):
        if id(record) not in self._seen:  # a record reaching two of the loggers is counted once
            self._seen.add(id(record))
            self.messages.append(record.getMessage())


#: torch's loggers that do not propagate to "torch" (torch._logging gives them their own handlers)
_TORCH_LOGGERS = ("torch", "torch._dynamo", "torch._inductor")


@contextlib.contextmanager
def capture_messages():
    """Python warnings and torch's WARNING log records (dynamo warns through logging)."""
    h = _LogCatcher()
    for name in _TORCH_LOGGERS:
        logging.getLogger(name).addHandler(h)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        out: list = []
        try:
            yield out
        finally:
            for name in _TORCH_LOGGERS:
                logging.getLogger(name).removeHandler(h)
            out.extend(str(x.message) for x in w)
            out.extend(h.messages)


def split_batch(inputs, y, k, dim, ydim=None):
    """``k`` equal micro-batches along the batch axis (``ydim`` that of the targets, default ``dim``)."""
    ins = [torch.chunk(t, k, dim) for t in inputs]
    ys = torch.chunk(y, k, dim if ydim is None else ydim)
    return [(tuple(t[j] for t in ins), ys[j]) for j in range(k)]


def make_optimizer(pr: Practice, params):
    if pr.optimizer == "sgd":
        return torch.optim.SGD(params, lr=pr.lr, weight_decay=pr.weight_decay)
    if pr.optimizer == "momentum":
        return torch.optim.SGD(params, lr=pr.lr, momentum=0.9, weight_decay=pr.weight_decay)
    if pr.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=pr.lr, weight_decay=0.01)
    raise ValueError(pr.optimizer)


def _clone_state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _grad_recorder(named, store):
    def post(opt, args, kwargs):
        store.clear()
        for n, p in named.items():
            if p.grad is not None:
                g = p.grad.detach()
                store[n] = (g.to_dense() if g.is_sparse else g).clone()
    return post


def train_loop(wl: Workload, pr: Practice, steps: int, *, rank: int = 0, world: int = 1, ddp: bool = False):
    """Run ``steps`` optimizer steps of the plain training loop with the monitor; the last is recorded."""
    from hhld.torch import Monitor

    model = wl.build()
    if pr.param_dtype is not None:
        model = model.to(pr.param_dtype)
    net = model
    if ddp:
        net = nn.parallel.DistributedDataParallel(model)
    if wl.compiled:
        net = torch.compile(model, backend="aot_eager")
    named = {n: p for n, p in model.named_parameters() if p.requires_grad}
    opt = make_optimizer(pr, list(named.values()))
    scaler = torch.amp.GradScaler("cpu", init_scale=256.0) if pr.scaler else None
    kw = dict(MONITOR_KWARGS)
    if scaler is not None:
        kw["scaler"] = scaler
    if wl.pass_batch_size:
        kw["batch_size"] = wl.batch // world
    applied: dict = {}
    with capture_messages() as messages:
        mon = Monitor(net, opt, **kw)
        opt.register_step_post_hook(_grad_recorder(named, applied))
        row = None
        for s in range(steps):
            inputs, y = wl.data(wl.batch, 100 + s)
            if pr.param_dtype is not None:
                inputs = tuple(x.to(pr.param_dtype) if x.is_floating_point() else x for x in inputs)
            if ddp:  # this rank's share of the global batch
                inputs, y = split_batch(inputs, y, world, wl.batch_dim, wl.ydim)[rank]
            micro = split_batch(inputs, y, pr.accum, wl.batch_dim, wl.ydim)
            last = s == steps - 1
            if last:
                state, rngs = _clone_state(model), []
            opt.zero_grad(set_to_none=True)
            total = 0.0
            for j, (xi, yi) in enumerate(micro):
                if last:
                    rngs.append(torch.get_rng_state())
                # under DDP, every micro-batch but the last accumulates locally (the usual no_sync pattern)
                sync = contextlib.nullcontext() if not ddp or j == len(micro) - 1 else net.no_sync()
                with sync, (torch.autocast("cpu", dtype=pr.autocast) if pr.autocast else contextlib.nullcontext()):
                    loss = wl.loss(net(*xi), yi) / pr.accum
                    (scaler.scale(loss) if scaler is not None else loss).backward()
                total += float(loss.detach())
            if pr.clip:
                if scaler is not None:
                    scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(list(named.values()), wl.max_norm)
            if scaler is not None:
                scaler.step(opt)
                scaler.update()
            else:
                opt.step()
            row = mon.step(total)
        covered = covered_parameters(mon)
        names, dim, lr = list(mon.names), mon.dim, float(opt.param_groups[0]["lr"])
        mon.close()
    return StepRecord(row=row, names=names, covered=covered, dim=dim, lr=lr, state=state, micro=micro, rngs=rngs,
                      applied=dict(applied), max_norm=wl.max_norm if pr.clip else None, messages=messages,
                      events=list(mon.events), history=list(mon.history), world=world, weight_decay=pr.weight_decay)


# ---------------------------------------------------------------------- DDP (2 processes on gloo)
def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def in_gloo_group(rank, world, port, body, *args):
    """In a spawned worker: join a gloo process group of ``world`` ranks on ``port``, run ``body(*args)``,
    tear the group down, and leave the process.

    The DDP module ``body`` built is garbage in reference cycles by then: it (and the process group it holds)
    is collected before the teardown; left to interpreter exit, gloo's teardown aborted rank 1 ("terminate
    called without an active exception") in about 1 spawn in 15. Even so it still aborted a rank about once
    in ten full test runs under xdist, in the interpreter's own teardown: so a worker that finished leaves
    with ``os._exit(0)`` (only then: an exception in ``body`` reaches the spawn's error file)."""
    import torch.distributed as dist

    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        body(*args)
    finally:
        gc.collect()
        dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def ddp_worker(rank, world, port, workload, practice, steps, out_dir):
    in_gloo_group(rank, world, port, _ddp_train_and_write, rank, world, workload, practice, steps, out_dir)


def _ddp_train_and_write(rank, world, workload, practice, steps, out_dir):
    torch.set_num_threads(1)
    wl, pr = WORKLOADS[workload], PRACTICES[practice]
    rec = train_loop(wl, pr, steps, rank=rank, world=world, ddp=True)
    if rank == 0:  # data only: the row and messages as JSON, the tensors as npz
        meta = {k: getattr(rec, k) for k in ("row", "names", "covered", "dim", "lr", "messages", "events",
                                             "history", "world")}
        with open(os.path.join(out_dir, "rec.json"), "w") as f:
            json.dump(meta, f, default=str)
        np.savez(os.path.join(out_dir, "rec.npz"),
                 **{f"state/{k}": v.numpy() for k, v in rec.state.items()},
                 **{f"applied/{k}": v.numpy() for k, v in rec.applied.items()})


def run_ddp(wl: Workload, pr: Practice, steps: int, tmp_dir: str, world: int = 2) -> StepRecord:
    torch.multiprocessing.spawn(ddp_worker, args=(world, _free_port(), wl.name, pr.name, steps, tmp_dir),
                                nprocs=world, join=True)
    with open(os.path.join(tmp_dir, "rec.json")) as f:
        meta = json.load(f)
    arr = np.load(os.path.join(tmp_dir, "rec.npz"))
    state = {k[6:]: torch.from_numpy(arr[k]) for k in arr.files if k.startswith("state/")}
    applied = {k[8:]: torch.from_numpy(arr[k]) for k in arr.files if k.startswith("applied/")}
    inputs, y = wl.data(wl.batch, 100 + steps - 1)  # the global batch of the checked step
    # no dropout masks to replay (rngs=None): the DDP cells take workloads without dropout
    return StepRecord(state=state, applied=applied, micro=[(inputs, y)], rngs=None,
                      max_norm=wl.max_norm if pr.clip else None, **meta)


# ---------------------------------------------------------------------- Lightning
def run_lightning(wl: Workload, pr: Practice, steps: int) -> StepRecord:
    import lightning.pytorch as pl

    from hhld.torch.callbacks import lightning_callback

    k = pr.accum
    check = steps - 1
    seen: dict = {"micro": [], "losses": []}

    class Lit(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = wl.build()

        def training_step(self, batch, idx):
            *xs, y = batch
            if wl.batch_dim != 0:
                raise NotImplementedError("the Lightning cell takes batch-first workloads")
            if idx == check * k:
                seen["state"] = _clone_state(self.net)
                seen["rng"] = []
            if check * k <= idx < (check + 1) * k:
                seen["micro"].append((tuple(xs), y))
                seen["rng"].append(torch.get_rng_state())
            loss = wl.loss(self.net(*xs), y)
            if check * k <= idx < (check + 1) * k:
                seen["losses"].append(float(loss.detach()))
            return loss

        def configure_optimizers(self):
            return make_optimizer(pr, [p for p in self.parameters() if p.requires_grad])

    # one DataLoader batch = one micro-batch
    xs, ys = [], []
    for s in range(steps):
        inputs, y = wl.data(wl.batch, 100 + s)
        for xi, yi in split_batch(inputs, y, k, 0):
            xs.append(xi)
            ys.append(yi)
    ds = torch.utils.data.TensorDataset(*[torch.cat([x[j] for x in xs]) for j in range(len(xs[0]))], torch.cat(ys))
    loader = torch.utils.data.DataLoader(ds, batch_size=wl.batch // k, shuffle=False)
    cb = lightning_callback(**MONITOR_KWARGS)
    lit = Lit()
    named = {n.removeprefix("net."): p for n, p in lit.named_parameters() if p.requires_grad}
    applied: dict = {}

    class Recorder(pl.Callback):
        def on_train_start(self, trainer, pl_module):
            trainer.optimizers[0].register_step_post_hook(_grad_recorder(named, applied))

    with capture_messages() as messages:
        trainer = pl.Trainer(max_steps=steps, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False, accumulate_grad_batches=k,
                             gradient_clip_val=wl.max_norm, callbacks=[cb, Recorder()])
        trainer.fit(lit, loader)
        mon = cb.monitor
        covered = [n.removeprefix("net.") for n in covered_parameters(mon)]
    return StepRecord(row=mon.history[-1] if mon.history else None, names=[n.removeprefix("net.") for n in mon.names],
                      covered=covered, dim=mon.dim, lr=pr.lr, state=seen["state"], micro=seen["micro"],
                      rngs=seen["rng"], applied=applied, max_norm=wl.max_norm, messages=messages,
                      events=list(mon.events), history=list(mon.history),
                      extra={"losses": seen["losses"], "global_step": trainer.global_step,
                             "callback_metrics": {k: float(v) for k, v in trainer.callback_metrics.items()}})


# ---------------------------------------------------------------------- Hugging Face Trainer
def hf_config():
    from transformers import GPT2Config

    return GPT2Config(vocab_size=VOCAB, n_positions=SEQ, n_embd=EMB, n_layer=2, n_head=HEADS, resid_pdrop=0.0,
                      embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0, loss_type="ForCausalLM")


def hf_build():
    from transformers import GPT2LMHeadModel

    torch.manual_seed(0)
    return GPT2LMHeadModel(hf_config())


def hf_per_sample(out, y):
    """GPT2LMHeadModel's loss of one sequence: the mean over its shifted tokens."""
    logits = out.logits if hasattr(out, "logits") else out
    return lm_per_sample(logits[:, :-1], y[:, 1:])


def hf_dataset(n, seed):
    seq = _skewed((n, SEQ), VOCAB, _gen(seed))
    return [{"input_ids": s, "labels": s.clone()} for s in seq]


HF_WORKLOAD = Workload("hf_gpt2", "-", hf_build, None, None, hf_per_sample, batch=8, reference="graph",
                       note="tiny GPT2LMHeadModel from a GPT2Config (2 layers, no dropout, no download)")


def run_hf(steps: int, out_dir: str, accum: int = 2) -> StepRecord:
    from transformers import PrinterCallback, Trainer, TrainerCallback, TrainingArguments

    from hhld.torch.callbacks import HFMonitorCallback

    wl = HF_WORKLOAD
    b = wl.batch // accum
    ds = hf_dataset(wl.batch * steps, 7)
    model = hf_build()
    named = {n: p for n, p in model.named_parameters() if p.requires_grad}
    applied: dict = {}
    seen: dict = {"micro": [], "rng": []}
    check = steps - 1

    class Recorder(TrainerCallback):
        def on_train_begin(self, args, state, control, optimizer=None, **kw):
            inner = getattr(optimizer, "optimizer", optimizer)
            inner.register_step_post_hook(_grad_recorder(named, applied))

    def pre(module, args, kwargs):
        if torch.is_grad_enabled() and module.training:
            seen.setdefault("calls", 0)
            c = seen["calls"]
            seen["calls"] = c + 1
            if c == check * accum:
                seen["state"] = _clone_state(model)
            if check * accum <= c < (check + 1) * accum:
                seen["micro"].append(((kwargs["input_ids"].clone(),), kwargs["labels"].clone()))
                seen["rng"].append(torch.get_rng_state())
                seen["num_items"] = kwargs.get("num_items_in_batch")

    h = model.register_forward_pre_hook(pre, with_kwargs=True)
    cb = HFMonitorCallback(**MONITOR_KWARGS)
    args = TrainingArguments(output_dir=out_dir, per_device_train_batch_size=b, gradient_accumulation_steps=accum,
                             max_steps=steps, learning_rate=1e-3, lr_scheduler_type="constant", warmup_steps=0,
                             logging_steps=1, save_strategy="no", report_to=[], use_cpu=True, seed=0,
                             dataloader_drop_last=True, disable_tqdm=True)
    with capture_messages() as messages:
        trainer = Trainer(model=model, args=args, train_dataset=ds, callbacks=[cb, Recorder()])
        trainer.remove_callback(PrinterCallback)
        # the order of the samples is the Trainer's (a seeded random sampler): read it from the recorded batches
        trainer.train()
        h.remove()
        mon = cb.monitor
        covered = covered_parameters(mon)
    # the objective the Trainer optimises: with num_items_in_batch, the summed token losses of the step over its
    # token count (transformers 5.24 counts all T labels of a GPT2 sequence, the loss sums T - 1): a sample's loss
    # is its token mean times B (T - 1) / num_items
    n = seen.get("num_items")
    scale = 1.0 if n is None else wl.batch * (SEQ - 1) / float(n)
    trained = dataclasses.replace(wl, per_sample_loss=lambda out, y: hf_per_sample(out, y) * scale)
    return StepRecord(row=mon.history[-1] if mon.history else None, names=list(mon.names), covered=covered,
                      dim=mon.dim, lr=1e-3, state=seen["state"], micro=seen["micro"], rngs=seen["rng"],
                      applied=applied, max_norm=args.max_grad_norm, messages=messages, events=list(mon.events),
                      history=list(mon.history),
                      extra={"global_step": trainer.state.global_step, "log_history": list(trainer.state.log_history),
                             "workload": trained, "loss_scale": scale})


# ====================================================================== the float64 reference
def _to64(t):
    return t.double() if t.is_floating_point() else t


def _fixed_stats_forward(self, x):
    """BatchNorm with the batch statistics of this forward held fixed (no gradient through them)."""
    dims = [0] + list(range(2, x.dim()))
    xd = x.detach()
    mean, var = xd.mean(dims), xd.var(dims, unbiased=False)
    return F.batch_norm(x, mean, var, self.weight, self.bias, False, 0.0, self.eps)


def reference_twin(wl: Workload, state: dict, *, fixed_stats: bool):
    """A float64 copy of the model at ``state``: sparse embeddings made dense (same values), train-mode
    BatchNorm with its batch statistics held fixed when ``fixed_stats``."""
    twin = wl.build()
    twin.load_state_dict(state)
    twin.double().train()
    if getattr(twin, "checkpoint", None) is not None:
        twin.checkpoint = None  # the same blocks without recomputation (which vmap / autograd.grad cannot take)
    for m in twin.modules():
        if isinstance(m, nn.Embedding):
            m.sparse = False
        if fixed_stats and isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.forward = types.MethodType(_fixed_stats_forward, m)
    return twin


def _call(twin, wl, inputs):
    out = twin(*inputs)
    return out.logits if hasattr(out, "logits") else out


def per_sample_grads_graph(twin, wl, names, inputs, y, rng):
    """(b, d) per-sample gradients from ONE forward pass (replayed with the RNG state ``rng``)."""
    params = dict(twin.named_parameters())
    plist = [params[n] for n in names]
    if rng is not None:
        torch.set_rng_state(rng)
    losses = wl.per_sample_loss(_call(twin, wl, tuple(_to64(t) for t in inputs)), y)
    rows = []
    for i in range(losses.shape[0]):
        gs = torch.autograd.grad(losses[i], plist, retain_graph=True, allow_unused=True)
        rows.append(torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(gs, plist)]))
    return torch.stack(rows)


def per_sample_grads_func(twin, wl, names, inputs, y):
    """(b, d) per-sample gradients by torch.func: functional_call + vmap(grad)."""
    from torch.func import functional_call, grad, vmap

    params = {n: p.detach() for n, p in twin.named_parameters()}
    buffers = dict(twin.named_buffers())
    sub = {n: params[n] for n in names}
    fixed = {n: p for n, p in params.items() if n not in sub}
    bd = wl.batch_dim

    def one(sub, xs, yi):
        out = functional_call(twin, ({**fixed, **sub}, buffers), tuple(t.unsqueeze(bd) for t in xs))
        return wl.per_sample_loss(out, yi.unsqueeze(wl.ydim))[0]

    xs = tuple(_to64(t) for t in inputs)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*performance drop.*batching rule")
        g = vmap(grad(one), in_dims=(None, tuple(bd for _ in xs), wl.ydim))(sub, xs, y)
    return torch.cat([g[n].reshape(g[n].shape[0], -1) for n in names], 1)


def reference_grads(wl: Workload, rec: StepRecord, method: str | None = None):
    """Per-sample gradients ``(B, d)`` of the monitored parameters over all micro-batches, and the
    applied (unclipped) batch gradient ``(d,)`` of the true model, both float64."""
    method = method or wl.reference
    coupled = bool(wl.coupled)
    k = len(rec.micro)
    with torch.random.fork_rng(devices=[]):
        twin = reference_twin(wl, rec.state, fixed_stats=coupled)
        rows = []
        for j, (xi, yi) in enumerate(rec.micro):
            rng = rec.rngs[j] if rec.rngs else None
            if method == "func":
                rows.append(per_sample_grads_func(twin, wl, rec.names, xi, yi))
            else:
                rows.append(per_sample_grads_graph(twin, wl, rec.names, xi, yi, rng))
        G = torch.cat(rows)
        # the batch gradient of the true model (coupled BatchNorm included): the gradient step() applies
        true = reference_twin(wl, rec.state, fixed_stats=False) if coupled else twin
        params = dict(true.named_parameters())
        plist = [params[n] for n in rec.names]
        total = 0
        for j, (xi, yi) in enumerate(rec.micro):
            if rec.rngs:
                torch.set_rng_state(rec.rngs[j])
            total = total + wl.per_sample_loss(_call(true, wl, tuple(_to64(t) for t in xi)), yi).mean() / k
        gs = torch.autograd.grad(total, plist, allow_unused=True)
        gall = torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(gs, plist)])
    return G.detach(), gall.detach()


def reference_loss(wl: Workload, rec: StepRecord) -> float:
    """The step's loss in float64: the mean of the per-sample losses over all its micro-batches."""
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        twin = reference_twin(wl, rec.state, fixed_stats=False)
        tot, n = 0.0, 0
        for j, (xi, yi) in enumerate(rec.micro):
            if rec.rngs:
                torch.set_rng_state(rec.rngs[j])
            ls = wl.per_sample_loss(_call(twin, wl, tuple(_to64(t) for t in xi)), yi)
            tot, n = tot + float(ls.sum()), n + ls.shape[0]
    return tot / n


def _slices(rec: StepRecord):
    """Column ranges of each monitored parameter in the flattened gradient."""
    out, o = {}, 0
    for n in rec.names:
        m = rec.state[n].numel()
        out[n] = (o, o + m)
        o += m
    return out


def reference(wl: Workload, rec: StepRecord, G=None, gall=None) -> dict:
    """The reference row of the checked step (see the module docstring)."""
    if G is None:
        G, gall = reference_grads(wl, rec)
    sl = _slices(rec)
    cols = [i for n in rec.covered for i in range(*sl[n])]
    d_cov = len(cols)
    B = G.shape[0]
    gsq_all = float((gall ** 2).sum())
    c = 1.0
    if rec.max_norm:
        c = min(1.0, rec.max_norm / (math.sqrt(gsq_all) + 1e-6))
    # the gradient step() applies: the clipped batch gradient, plus the optimizer's L2 decay (the same R = wd p in
    # every sample's gradient)
    R = (rec.weight_decay * torch.cat([rec.state[n].double().reshape(-1) for n in rec.names])
         if rec.weight_decay else torch.zeros_like(gall))
    g_app = c * gall + R
    gsq_app = float((g_app ** 2).sum())
    out = {"B": B, "d": rec.dim, "d_cov": d_cov, "clip_coef": c, "grad_sq_norm": gsq_app,
           "C_sgd": gsq_app / (rec.lr / B), "noise_coverage": d_cov / rec.dim, "gbar_all": gall}
    if d_cov:
        Gc = c * G[:, cols] + R[cols]
        gbar = Gc.mean(0)
        gb2 = float((gbar ** 2).sum())
        m2 = float((Gc ** 2).sum(1).mean())
        tr = B / (B - 1) * (m2 - gb2)
        gu = gb2 - tr / B
        D = rec.lr * tr / (2 * B * d_cov)
        out.update(tr_sigma=tr, grad_sq_norm_unbiased=gu, b_simple=tr / gu if gu > 0 else math.inf,
                   D=D, C=gsq_app / (D * rec.dim) if D > 0 else math.inf, cancellation=gu / gb2)
    return out


QUANTITIES = ("grad_sq_norm", "tr_sigma", "grad_sq_norm_unbiased", "b_simple", "D", "C", "C_sgd")


def compare(row: dict | None, ref: dict, tol: float) -> list[str]:
    """Each quantity within ``tol`` of the reference; a problem names the quantity and the relative error."""
    if row is None:
        return ["no history row for the checked step"]
    out = []
    for k in QUANTITIES:
        want = ref.get(k)
        if want is None:  # no covered parameter: the noise quantities are undefined
            if row.get(k) is not None:
                out.append(f"{k}: monitor {row.get(k)!r} but no parameter is reported covered")
            continue
        got = row.get(k)
        if not isinstance(got, (int, float)) or isinstance(got, bool):
            out.append(f"{k}: monitor {got!r} vs reference {want:.6g}")
            continue
        rel = (got - want) / abs(want) if want else math.inf
        if not math.isfinite(got) or not abs(rel) <= tol:
            out.append(f"{k}: monitor {got:.6g} vs reference {want:.6g} (relative error {rel:+.1%}, "
                       f"tolerance {tol:.0%})")
    got = row.get("noise_coverage")
    if got is None or abs(got - ref["noise_coverage"]) > 1e-9:
        out.append(f"noise_coverage: monitor {got!r} vs covered/monitored dimension {ref['noise_coverage']:.6g} "
                   f"({ref['d_cov']}/{ref['d']})")
    return out


def run_cell(cell_id: str, tmp_dir: str) -> tuple[Workload, Practice, StepRecord]:
    if cell_id == HF_CELL:
        rec = run_hf(2, tmp_dir)
        return rec.extra["workload"], PRACTICES["hf_trainer"], rec
    cell = next(c for c in CELLS if c.id == cell_id)
    wl, pr = WORKLOADS[cell.workload], PRACTICES[cell.practice]
    if pr.runner == "ddp":
        return wl, pr, run_ddp(wl, pr, cell.steps, tmp_dir)
    if pr.runner == "lightning":
        return wl, pr, run_lightning(wl, pr, cell.steps)
    torch.manual_seed(1234)  # the dropout masks of the run (replayed by the reference)
    return wl, pr, train_loop(wl, pr, cell.steps)


def check_cell(cell_id: str, tmp_dir: str, info: dict | None = None) -> list[str]:
    """Run a cell and return its problems (empty: within tolerance, every expectation met); ``info`` (a dict)
    receives the record and the reference row."""
    wl, pr, rec = run_cell(cell_id, tmp_dir)
    G, gall = reference_grads(wl, rec)
    ref = reference(wl, rec, G, gall)
    if info is not None:
        info.update(rec=rec, ref=ref)
    problems = []
    # the reference itself: its batch gradient is the one the optimizer applied (same masks, same batch)
    app = torch.cat([rec.applied[n].double().reshape(-1) if n in rec.applied else
                     torch.zeros(hi - lo, dtype=torch.float64) for n, (lo, hi) in _slices(rec).items()])
    err = float((app - ref["clip_coef"] * gall).norm() / app.norm())
    if err > (0.05 if pr.low_precision else 1e-4):
        problems.append(f"REFERENCE: its batch gradient differs from the applied one by {err:.2%} (setup bug)")
    if pr.clip and ref["clip_coef"] > 0.95:
        problems.append(f"REFERENCE: clipping practice but c = {ref['clip_coef']:.3f} (max_norm too large)")
    if ref.get("cancellation", 1) < 0.5:
        problems.append(f"REFERENCE: |G|^2 unbiased is only {ref['cancellation']:.2f} of |gbar|^2 (ill-conditioned "
                        "cell: choose data with a stronger common gradient)")
    problems += compare(rec.row, ref, pr.tol)
    if rec.row is not None:
        problems += clip_problems(rec.row, ref["clip_coef"], pr.tol)
    if wl.coupled:
        bad = [n for n in wl.coupled if n in rec.covered]
        if bad:
            problems.append(f"parameters upstream of a batch coupling reported covered: {bad}")
    elif len(rec.covered) < len(rec.names):
        unc = [n for n in rec.names if n not in rec.covered]
        more = " ..." if len(unc) > 6 else ""
        problems.append(f"coverage {ref['noise_coverage']:.3f} < 1: uncovered {unc[:6]}{more}")
    problems += warning_problems(rec.messages, optimizer="AdamW" if pr.optimizer == "adamw" else None,
                                 coupling=bool(wl.coupled), compiled=wl.compiled)
    skipped = [e for e in rec.events if e.get("event") == "skipped_step"]
    if skipped:
        problems.append(f"{len(skipped)} skipped_step event(s): {skipped[0]}")
    return problems
