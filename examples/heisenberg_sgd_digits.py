"""HeisenbergSGD with the documents' controller on scikit-learn's digits (headless, a few seconds).

An MLP 64-64-10 is trained with HeisenbergSGD. Every ``--measure-every`` steps the effective
SGD diffusion ``D`` is measured from the per-sample gradient noise
(:func:`hhld.torch.gradient_noise_stats`) and handed to the optimizer, which computes the
documents' consolidation ratio ``C = ||g||^2 / (D d)`` and runs their "Practical Algorithm":
``C < 0.5`` -> tunneling kick ``3 sqrt(eta D)``, ``C > 10`` -> lr x 1.5 and noise x 2 (bounded,
with a cool-down). The controller's events are printed, then the documents' ``eta_opt``
prediction beside an LR range test.

    python examples/heisenberg_sgd_digits.py [--steps 400] [--seed 0]
"""
from __future__ import annotations

import argparse
import time

import torch
from torch import nn


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=0.02)
    ap.add_argument("--measure-every", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    from sklearn.datasets import load_digits

    from hhld.torch import ControllerConfig, HeisenbergSGD, eta_opt_prediction, gradient_noise_stats, lr_range_test

    t0 = time.perf_counter()
    torch.manual_seed(args.seed)
    X, y = load_digits(return_X_y=True)
    X = torch.tensor(X / 16.0, dtype=torch.float32)
    y = torch.tensor(y, dtype=torch.long)
    g = torch.Generator().manual_seed(args.seed)
    perm = torch.randperm(len(X), generator=g)
    tr, te = perm[:1400], perm[1400:]
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    loss_fn = nn.CrossEntropyLoss()
    cfg = ControllerConfig(warmup=50, cooldown=50, max_lr_factor=5.0, max_noise_factor=8.0)
    opt = HeisenbergSGD(model.parameters(), lr=args.lr, momentum=0.9, controller=cfg, seed=args.seed)

    D = None
    for step in range(args.steps):
        idx = tr[torch.randint(len(tr), (args.batch_size,), generator=g)]
        xb, yb = X[idx], y[idx]
        if step % args.measure_every == 0:
            D = gradient_noise_stats(model, loss_fn, xb, yb, lr=opt.param_groups[0]["lr"]).D
            opt.param_groups[0]["D"] = D  # the measured SGD diffusion: used by C and hbar
        opt.zero_grad()
        loss = loss_fn(model(xb), yb)
        loss.backward()
        opt.step()
        if step % 100 == 0:
            print(f"step {step:4d}  loss {loss.item():.4f}  C {opt.last_consolidation[0]:.3g}  "
                  f"lr {opt.param_groups[0]['lr']:.4g}  D_inject {opt.param_groups[0]['D_inject']:.3g}")

    with torch.no_grad():
        acc = (model(X[te]).argmax(1) == y[te]).float().mean().item()
    print(f"\ntest accuracy {acc:.3f}; {len(opt.events)} controller events:")
    for e in opt.events:
        if e["action"] == "kick":
            print(f"  step {e['step']:4d}  kick     C={e['C']:.3g}  |kick|=3*hbar={e['amplitude']:.3g}")
        else:
            print(f"  step {e['step']:4d}  explore  C={e['C']:.3g}  lr {e['lr_before']:.4g}->{e['lr_after']:.4g}  "
                  f"D_inject {e['D_inject_before']:.3g}->{e['D_inject_after']:.3g} {e['note']}")

    batches = [(X[tr[i:i + 128]], y[tr[i:i + 128]]) for i in range(0, 512, 128)]
    pred = eta_opt_prediction(model, loss_fn, batches, lr=opt.param_groups[0]["lr"], n_batches=4, n_probes=8,
                              generator=torch.Generator().manual_seed(args.seed))
    print(f"\ndocuments' eta_opt = sqrt(D Tr/N) = {pred.eta_opt:.3g} +- {pred.stderr:.2g} "
          f"(read as an lr; as eta = 1/lr it gives lr = {pred.as_inverse:.3g})  "
          f"D={pred.D:.3g} Tr={pred.hessian_trace:.3g}+-{pred.hessian_trace_stderr:.2g} N={pred.n:.0f}")
    torch.manual_seed(args.seed)  # the range test is meant for a fresh model: same init as above
    fresh = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    sgd = torch.optim.SGD(fresh.parameters(), lr=args.lr, momentum=0.9)
    res = lr_range_test(fresh, sgd, loss_fn, batches, start_lr=1e-4, end_lr=10.0, num_steps=80)
    print(f"LR range test (standard, fresh model, SGD momentum 0.9): steepest-slope lr = {res.suggested_lr:.3g}, "
          f"diverged={res.diverged} after {res.steps_run} steps")
    print(f"done in {time.perf_counter() - t0:.1f} s")
    return {"accuracy": acc, "events": opt.events, "eta_opt": pred, "range_test": res}


if __name__ == "__main__":
    main()
