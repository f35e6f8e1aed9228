"""Small architectures for the per-sample engine tests (GPT-style with SDPA or MHA, recurrent classifiers, a
ViT-style model, a CNN with BatchNorm)."""
import math, torch
from torch import nn
import torch.nn.functional as F

class GPT(nn.Module):
    def __init__(self, V=17, T=8, E=16, H=2, L=2, attn="sdpa", p=0.0, tied=True):
        super().__init__()
        self.tok = nn.Embedding(V, E); self.pos = nn.Embedding(T, E)
        self.blocks = nn.ModuleList()
        for _ in range(L):
            b = nn.Module()
            b.ln1 = nn.LayerNorm(E); b.ln2 = nn.LayerNorm(E)
            if attn == "sdpa":
                b.qkv = nn.Linear(E, 3 * E); b.proj = nn.Linear(E, E)
            else:
                b.mha = nn.MultiheadAttention(E, H, dropout=p, batch_first=True)
            b.mlp = nn.Sequential(nn.Linear(E, 4 * E), nn.GELU(), nn.Linear(4 * E, E))
            self.blocks.append(b)
        self.lnf = nn.LayerNorm(E); self.head = nn.Linear(E, V, bias=False)
        if tied: self.head.weight = self.tok.weight
        self.drop = nn.Dropout(p); self.H = H; self.attn = attn; self.p = p
    def forward(self, idx):
        B, T = idx.shape
        x = self.drop(self.tok(idx) + self.pos(torch.arange(T, device=idx.device)))
        mask = torch.triu(torch.ones(T, T, dtype=torch.bool), 1)
        for b in self.blocks:
            h = b.ln1(x)
            if self.attn == "sdpa":
                q, k, v = b.qkv(h).split(h.shape[-1], dim=2)
                q, k, v = (t.view(B, T, self.H, -1).transpose(1, 2) for t in (q, k, v))
                y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=self.p if self.training else 0)
                y = b.proj(y.transpose(1, 2).reshape(B, T, -1))
            else:
                y = b.mha(h, h, h, attn_mask=mask, need_weights=False)[0]
            x = x + self.drop(y)
            x = x + b.mlp(b.ln2(x))
        return self.head(self.lnf(x))

class RNNCls(nn.Module):
    def __init__(self, cell="lstm", F_=5, H=8, C=3, batch_first=True, layers=1, bidir=False):
        super().__init__()
        R = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[cell]
        self.rnn = R(F_, H, num_layers=layers, batch_first=batch_first, bidirectional=bidir)
        self.fc = nn.Linear(H * (2 if bidir else 1), C); self.bf = batch_first
    def forward(self, x):
        out = self.rnn(x)[0]
        last = out[:, -1] if self.bf else out[-1]
        return self.fc(last)

class ViT(nn.Module):
    def __init__(self, E=16, P=4, img=8, C=3, ncls=4):
        super().__init__()
        n = (img // P) ** 2
        self.patch = nn.Conv2d(C, E, P, P)
        self.cls = nn.Parameter(torch.randn(1, 1, E) * .1)
        self.pos_embed = nn.Parameter(torch.randn(1, n + 1, E) * .1)
        self.block = nn.TransformerEncoderLayer(E, 2, 32, dropout=0.0, batch_first=True, norm_first=True)
        self.head = nn.Linear(E, ncls)
    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], 1) + self.pos_embed
        return self.head(self.block(x)[:, 0])

def cnn_bn(p=0.0):
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(p),
                         nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 4 * 4, 3))
