"""A small transformer on a synthetic task (copy the sequence reversed) with the HHLD monitor on.

Headless, < 60 s on a laptop CPU. nn.TransformerEncoderLayer uses nn.MultiheadAttention, learned
positions come from an embedding of ``arange(T)``, the loop accumulates two micro-batches per
optimizer step, clips the gradient and uses AdamW: every parameter has exact per-sample
statistics (``noise_coverage`` 1.0), the rows describe the clipped gradient (``clip_coef``) and say
that D and C_sgd are SGD-equivalent for an adaptive optimizer (``lr_kind``).

    python examples/monitor_transformer.py [--steps 150] [--plot monitor.png]
"""
from __future__ import annotations

import argparse

import torch
from torch import nn

from hhld.torch import Monitor


class TinyTransformer(nn.Module):
    def __init__(self, vocab=12, d=32, T=8):
        super().__init__()
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Embedding(T, d)
        self.enc = nn.TransformerEncoderLayer(d, nhead=4, dim_feedforward=64, dropout=0.0, batch_first=True)
        self.head = nn.Linear(d, vocab)

    def forward(self, ids):
        pos = torch.arange(ids.shape[1], device=ids.device)
        return self.head(self.enc(self.tok(ids) + self.pos(pos)))


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--accumulate", type=int, default=2)
    ap.add_argument("--plot", default=None, help="save mon.plot() to this file")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    T, vocab = 8, 12
    model = TinyTransformer(vocab, 32, T)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    ce = nn.CrossEntropyLoss()

    def loss_fn(logits, target):
        return ce(logits.reshape(-1, vocab), target.reshape(-1))

    g = torch.Generator().manual_seed(1)
    probe = torch.randint(0, vocab, (64, T), generator=g)
    mon = Monitor(model, opt, log_every=10, tier1_every=10, loss_fn=loss_fn, hessian_batch=(probe, probe.flip(1)),
                  tier2_every=50)
    for step in range(args.steps):
        opt.zero_grad()
        tot = 0.0
        for _ in range(args.accumulate):
            x = torch.randint(0, vocab, (args.batch_size, T), generator=g)
            loss = loss_fn(model(x), x.flip(1)) / args.accumulate
            loss.backward()
            tot += loss.detach()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        row = mon.step(tot)
        if row and (row["step"] + 1) % 50 == 0:
            print(f"step {row['step']}: loss {row['loss']:.3f} C_sgd {row['C_sgd']:.3g} "
                  f"B_simple {row.get('b_simple', float('nan')):.3g} coverage {row.get('noise_coverage', 0):.2f} "
                  f"regime {row['regime']}")
    print("parameters without exact per-sample statistics:", mon.uncovered_parameters() or "none")
    mon.close()
    if args.plot:
        mon.plot(args.plot)
    df = mon.to_dataframe()
    cols = [c for c in ["step", "loss", "C_sgd", "tr_sigma", "b_simple", "noise_coverage", "clip_coef",
                        "hessian_trace", "lambda_max", "regime", "lr_kind"] if c in df.columns]
    print(df[cols].tail(5).to_string(index=False))
    return df


if __name__ == "__main__":
    main()
