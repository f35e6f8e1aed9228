"""Experiment 10b: the monitor's D (effective temperature) against model width.

The documents (Best Takeaways 14): "overparameterization increases effective temperature:
T_eff = D/eta, more parameters -> higher D". Measured: one-hidden-layer ReLU MLPs of
increasing width on scikit-learn's bundled digits, plain SGD at a fixed learning rate and
batch size. For each width and seed the monitor's diffusion per coordinate
``D = lr tr Sigma/(2 B d)`` (:func:`hhld.torch.noise.gradient_noise_stats`, per-sample
gradients, averaged over several batches) is measured at initialisation and after a short
training run. ``T_eff = D/eta`` with the documents' ``eta = 1/lr`` is ``D lr``: at a fixed
learning rate it has the same width dependence as ``D``. Fitted: the slope of ``log D``
against ``log d`` (d = number of parameters) with its standard error, and the same for the
total diffusion ``D d = lr tr Sigma/(2B)``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..base import Cell, Experiment, ExperimentConfig, ExperimentReport, Row, claim, register
from ._common import figure, fmt, group, linfit
from ._data import DATA_SOURCES, digits
from ._train import cross_entropy, mlp, n_params, train_sgd


@dataclass(frozen=True)
class WidthConfig(ExperimentConfig):
    widths: tuple[int, ...] = (16, 32, 64, 128, 256, 512, 1024)
    depth: int = 1
    lr: float = 0.1
    batch_size: int = 32
    n_batches: int = 8
    train_epochs: float = 1.0
    seeds: tuple[int, ...] = (0, 1)
    z: float = 2.0          # significance: slope more than z standard errors from 0


    @classmethod
    def full(cls):
        return cls(widths=(8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096), n_batches=32, train_epochs=5.0,
                   seeds=(0, 1, 2, 3, 4))

    @classmethod
    def smallest(cls):
        return cls(widths=(16, 64, 256), n_batches=4, train_epochs=0.5, seeds=(0,))


def measure_D(model, X, y, lr: float, batch_size: int, n_batches: int, seed: int) -> dict:
    from hhld.torch.noise import gradient_noise_stats

    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(X.shape[0], generator=g)
    Ds, trs, g2 = [], [], []
    for i in range(n_batches):
        idx = perm[i * batch_size:(i + 1) * batch_size]
        st = gradient_noise_stats(model, cross_entropy, X[idx], y[idx], lr=lr)
        Ds.append(st.D)
        trs.append(st.tr_sigma)
        g2.append(st.grad_sq_norm_unbiased)
    return {"D": float(np.mean(Ds)), "D_se": float(np.std(Ds, ddof=1) / math.sqrt(len(Ds))) if len(Ds) > 1 else math.nan,
            "tr_sigma": float(np.mean(trs)), "grad_sq": float(np.mean(g2))}


@register
class Width(Experiment):
    name = "width"
    title = "Effective temperature against model width: does D grow with the number of parameters?"
    description = ("The monitor's per-coordinate SGD diffusion D = lr·tr Σ/(2Bd) of ReLU MLPs of increasing width on "
                   "digits, at initialisation and after a short training run; slope of log D against log d.")
    config_cls = WidthConfig

    def cells(self, config, seeds):
        return [Cell(self.name, {"width": int(w)}, int(s)) for w in config.widths for s in seeds]

    def run_cell(self, config, cell):
        Xtr, ytr, _, _ = digits(0, n_train=1200)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cell.seed)
            model = mlp(Xtr.shape[1], int(cell.key["width"]), 10, depth=config.depth)
        d = n_params(model)
        init = measure_D(model, Xtr, ytr, config.lr, config.batch_size, config.n_batches, cell.seed + 1)
        train_sgd(model, cross_entropy, Xtr, ytr, lr=config.lr, batch_size=config.batch_size,
                  epochs=config.train_epochs, generator=torch.Generator().manual_seed(cell.seed + 2))
        trained = measure_D(model, Xtr, ytr, config.lr, config.batch_size, config.n_batches, cell.seed + 3)
        return {"width": int(cell.key["width"]), "n_params": d, "init": init, "trained": trained}

    def summarize(self, config, results):
        from hhld.theory import effective_temperature

        rows: list[Row] = []
        data: dict = {}
        fig, axes = figure(2, 1, w=5.2, h=4.0)
        by = group(results, "width")
        widths = sorted(k[0] for k in by)
        P = np.array([by[(w,)][0]["n_params"] for w in widths], float)
        for ph, ax in (("init", axes[0][0]), ("trained", axes[0][1])):
            D = np.array([np.mean([r[ph]["D"] for r in by[(w,)]]) for w in widths])
            Dse = np.array([np.std([r[ph]["D"] for r in by[(w,)]], ddof=1) / math.sqrt(len(by[(w,)]))
                            if len(by[(w,)]) > 1 else np.mean([r[ph]["D_se"] for r in by[(w,)]]) for w in widths])
            T = np.array([float(effective_temperature(x, 1.0 / config.lr)) for x in D])
            xs = np.log(np.repeat(P, [len(by[(w,)]) for w in widths]))
            ys = np.log(np.concatenate([[r[ph]["D"] for r in by[(w,)]] for w in widths]))
            fit = linfit(xs, ys)
            ytot = np.log(np.concatenate([[r[ph]["D"] * r["n_params"] for r in by[(w,)]] for w in widths]))
            fit_tot = linfit(xs, ytot)
            s, se = fit["slope"], fit["slope_se"]
            if not (math.isfinite(s) and math.isfinite(se)):
                v = "inconclusive"
            elif s - config.z * se > 0:
                v = "holds"
            elif s + config.z * se < 0:
                v = "fails"
            else:
                v = "inconclusive"
            label = "at initialisation" if ph == "init" else f"after {config.train_epochs:g} epoch(s) of SGD"
            rows.append(Row(
                prediction=f"more parameters -> higher D (and T_eff = D/η), {label}",
                documents_value=claim("width_temperature"),
                measured=s, uncertainty=se,
                error=(f"slope of log D vs log(params); D from {fmt(D[0])} (d={int(P[0])}) to {fmt(D[-1])} "
                       f"(d={int(P[-1])}); total diffusion D·d slope {fmt(fit_tot['slope'])} ± "
                       f"{fmt(fit_tot['slope_se'])}"),
                verdict=v,
                notes=(f"verdict: holds if slope > {config.z:g} SE above 0, fails if more than {config.z:g} SE below 0; "
                       f"D = lr·tr Σ/(2Bd) per coordinate, lr {config.lr:g}, B {config.batch_size}, mean over "
                       f"{config.n_batches} batches; T_eff = D/η with η = 1/lr is D·lr (same slope); "
                       f"{len(by[(widths[0],)])} seeds; data: {DATA_SOURCES['digits']}")))
            ax.errorbar(P, D, yerr=Dse, fmt="o-", label="D per coordinate")
            ax.plot(P, D * P / P[0], "s--", label="D·d / d_min (total diffusion, rescaled)")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("parameters d")
            ax.set_ylabel("monitor's D")
            ax.set_title(f"{label}: slope {fmt(s)} ± {fmt(se)}")
            ax.legend(fontsize=7)
            data[ph] = {"widths": widths, "n_params": P.tolist(), "D": D.tolist(), "D_se": Dse.tolist(),
                        "T_eff": T.tolist(), "fit_log_D": fit, "fit_log_total_diffusion": fit_tot}
        fig.tight_layout()
        return ExperimentReport(rows=rows, figures={"width_D": fig},
                                notes=f"Data: {DATA_SOURCES['digits']}; one-hidden-layer ReLU MLPs (PyTorch default "
                                      f"initialisation), plain SGD.", data=data)
