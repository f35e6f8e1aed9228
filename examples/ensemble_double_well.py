"""Simulate an ensemble on the documents' 2-D double well and compare with theory.

Run: python examples/ensemble_double_well.py [--out DIR]
"""
import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import hhld  # noqa: E402
from hhld.dynamics import ConsolidationObserver, LossObserver, Simulation, TransitionObserver  # noqa: E402


def main(out: Path, n: int = 20_000, steps: int = 3000, D: float = 0.3) -> dict:
    lw = hhld.landscapes.double_well_2d()
    rng = np.random.default_rng(0)
    obs = [LossObserver(every=10), ConsolidationObserver(every=10), TransitionObserver(every=2)]
    sim = Simulation(lw, np.tile([-1.0, 0.0], (n, 1)), dt=0.01, D=D, rng=rng, observers=obs)
    sim.run(steps)
    res = sim.results()
    k, se = res["transitions"]["rate"], res["transitions"]["rate_stderr"]
    kr = hhld.theory.kramers_rate(lw, np.array([-1.0, 0.0]), D=D)
    print(f"measured escape rate {k:.4f} ± {se:.4f}; Kramers {kr.rate:.4f} (barrier {kr.barrier:.3f})")
    print(f"stationary E[C] ~ {res['consolidation']['mean'][-20:].mean():.3f}")
    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    ax[0].hist2d(res["final_theta"][:, 0], res["final_theta"][:, 1], bins=80)
    ax[0].set(title="ensemble at the end", xlabel="θ₁", ylabel="θ₂")
    ax[1].plot(res["consolidation"]["steps"], res["consolidation"]["mean"])
    ax[1].set(title="C(t) (ensemble mean)", xlabel="step", yscale="log")
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / "ensemble_double_well.png", dpi=100)
    return {"rate": k, "kramers": kr.rate}


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--out", type=Path, default=Path("runs/examples"))
    p.add_argument("--quick", action="store_true")
    a = p.parse_args()
    main(a.out, n=2000 if a.quick else 20_000, steps=1000 if a.quick else 3000)
