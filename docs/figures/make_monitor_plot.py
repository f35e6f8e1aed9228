"""``mon.plot()`` of a short monitored training run, for docs/monitor.md.

Writes ``docs/figures/monitor_plot.png`` (committed; about 100 KB):

    .venv/bin/python docs/figures/make_monitor_plot.py [--out PATH] [--steps 300] [--seed 0] [--dpi 90]

The run: the nanoGPT-style decoder of ``benchmarks/monitor_events_gpt.py`` (SDPA attention, learned positions
``pos(arange(T))``, pre-LN, tied output) on its copy task (the second half of each 24-token sequence repeats
the first; loss on the second half), plain SGD at lr 0.5, batch 32, CPU, one thread, fixed seed, monitored by
``Monitor(model, optimizer, log_every=5, tier1_every=5)``. The loss sits near ln 16 for about 150 steps and
then falls to about 0.01 within about 40 steps. The figure is exactly what ``mon.plot()`` draws (no
annotation added): loss; C, C_sgd and C_measured with the regime thresholds; tr Sigma and B_simple;
per-sample coverage; regime bands; phase-transition and regime-change events.
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _workload():
    """benchmarks/monitor_events_gpt.py as a module (one definition of the model, task and training loop)."""
    path = ROOT / "benchmarks" / "monitor_events_gpt.py"
    spec = importlib.util.spec_from_file_location("monitor_events_gpt", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("monitor_events_gpt", mod)
    spec.loader.exec_module(mod)
    return mod


def main(argv=None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("monitor_plot.png"))
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dpi", type=int, default=90)
    args = ap.parse_args(argv)
    if args.steps < 60:
        ap.exit(2, f"make_monitor_plot.py: error: --steps must be >= 60 (the drop comes after ~150), got {args.steps}\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    torch.set_num_threads(1)
    wl = _workload()
    cfg = wl.parse(["--steps", str(args.steps), "--seeds", str(args.seed), "--attn", "sdpa", "--optimizer", "sgd",
                    "--final", str(min(50, args.steps))])
    _, mon, _ = wl.train(cfg, "sdpa", "sgd", args.seed, "fine")
    fig = mon.plot(figsize=(10, 8.5))
    fig.savefig(args.out, dpi=args.dpi)
    plt.close(fig)
    print(f"written: {args.out} ({args.out.stat().st_size / 1024:.0f} KB; {len(mon.history)} rows, "
          f"{len(mon.events)} events)")
    return args.out


if __name__ == "__main__":
    main()
