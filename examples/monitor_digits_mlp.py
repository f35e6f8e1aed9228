"""MLP on scikit-learn's bundled digits with the HHLD monitor on (headless, < 60 s).

    python examples/monitor_digits_mlp.py [--epochs 8] [--out monitor_digits.jsonl]
"""
from __future__ import annotations

import argparse

import torch
from sklearn.datasets import load_digits
from torch import nn

from hhld.torch import Monitor
from hhld.torch.sinks import JSONLSink


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--out", default=None, help="JSONL file for the monitor rows")
    args = ap.parse_args(argv)

    torch.manual_seed(0)
    X, y = load_digits(return_X_y=True)
    X = torch.tensor(X / 16.0, dtype=torch.float32)
    y = torch.tensor(y)
    n_train = 1400
    Xtr, ytr, Xte, yte = X[:n_train], y[:n_train], X[n_train:], y[n_train:]

    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10))
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    sinks = [JSONLSink(args.out)] if args.out else []
    mon = Monitor(model, opt, log_every=20, loss_fn=loss_fn, hessian_batch=(Xtr[:256], ytr[:256]),
                  tier2_every=100, sinks=sinks)
    g = torch.Generator().manual_seed(1)
    for epoch in range(args.epochs):
        perm = torch.randperm(n_train, generator=g)
        for i in range(0, n_train - args.batch_size + 1, args.batch_size):
            idx = perm[i:i + args.batch_size]
            opt.zero_grad()
            loss = loss_fn(model(Xtr[idx]), ytr[idx])
            loss.backward()
            opt.step()
            mon.step(loss)
        with torch.no_grad():
            acc = (model(Xte).argmax(1) == yte).float().mean().item()
        last = mon.history[-1]
        print(f"epoch {epoch}: loss {last['loss']:.3f} test acc {acc:.3f} C_sgd {last['C_sgd']:.3g} "
              f"C(measured D) {last.get('C_measured', float('nan')):.3g} B_simple {last.get('b_simple', float('nan')):.3g} "
              f"regime {last['regime']}")
    mon.close()
    df = mon.to_dataframe()
    cols = [c for c in ["step", "loss", "C_sgd", "C", "tr_sigma", "b_simple", "hessian_trace", "lambda_max",
                        "eta_opt", "lr_stability_bound", "regime"] if c in df.columns]
    print(df[cols].dropna(subset=["loss"]).tail(8).to_string(index=False))
    print("events:", [e for e in mon.events if e["event"] != "regime"][:5])
    return df


if __name__ == "__main__":
    main()
