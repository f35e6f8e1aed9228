"""Experiment 9: the documents' optimal learning rate ``eta_opt = sqrt(D Tr(grad^2 L)/N)``.

Two tasks: a small 1-D CNN on MNIST-1D (generated locally by the ``mnist1d`` package's
generator) and an MLP on scikit-learn's bundled digits. Plain mini-batch SGD (batch ``B``),
a fixed budget of epochs, cross-entropy.

* **Grid search** (the reference): final held-out loss after the budget for each learning
  rate of a log grid and several seeds; the optimum is the grid point of the smallest mean
  held-out loss, refined by a parabola through it and its neighbours in ``log lr``; its
  uncertainty is the bootstrap (over seeds) spread of ``log10`` of the refined optimum.
* **LR range test** (:func:`hhld.torch.lr.lr_range_test`, standard, not from the documents):
  the steepest-descent suggestion, from the initialisation of each seed.
* **The documents' formula** with the monitor's quantities at initialisation
  (:func:`hhld.torch.lr.eta_opt_prediction`: ``D = lr tr Sigma/(2 B d)`` from per-sample
  gradients over several batches, ``Tr grad^2 L`` by Hutchinson, ``N`` = number of
  parameters). Because the monitor's ``D`` is proportional to the learning rate it is
  measured at, ``eta_opt(lr) = sqrt(lr a)`` with ``a = tr Sigma Tr/(2 B d N)`` measured once
  (at lr = 1). Readings:

  - *as a learning rate, self-consistent*: ``eta = eta_opt(eta)`` gives ``eta = a``;
  - *as an inertia (eta = 1/lr), self-consistent*: ``1/lr = eta_opt(lr)`` gives ``lr = a^(-1/3)``;
  - *evaluated at the grid optimum* (a consistency check: if the formula were right it would
    return the optimum it is evaluated at): ``sqrt(lr* a)`` and its inverse ``1/sqrt(lr* a)``.

Each prediction's error against the grid optimum: ratio, ``|log10 ratio|`` and relative error.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..base import Cell, Experiment, ExperimentConfig, ExperimentReport, Row, claim, register
from ._common import figure, fmt, group
from ._data import DATA_SOURCES, digits, mnist1d
from ._train import CNN1D, cross_entropy, evaluate, mlp, n_params, train_sgd

TASKS = {
    "cnn_mnist1d": "1-D CNN (3 conv layers) on MNIST-1D",
    "mlp_digits": "MLP 64-128-10 on digits",
}


@dataclass(frozen=True)
class OptimalLRConfig(ExperimentConfig):
    tasks: tuple[str, ...] = ("mlp_digits", "cnn_mnist1d")
    lr_grid: tuple[float, ...] = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
    epochs: float = 4.0
    batch_size: int = 32
    mnist1d_samples: int = 2000
    n_probes: int = 16
    noise_batches: int = 8
    range_steps: int = 100
    seeds: tuple[int, ...] = (0, 1)
    tol_factor: float = 2.0       # holds: prediction within this factor of the grid optimum (+ 2 sd of it)
    partly_factor: float = 4.0


    @classmethod
    def full(cls):
        grid = tuple(float(f"{x:.3g}") for x in 10 ** np.linspace(-3, 0.5, 15))
        return cls(lr_grid=grid, epochs=15.0, mnist1d_samples=5000, n_probes=64, noise_batches=16,
                   range_steps=200, seeds=(0, 1, 2, 3, 4))

    @classmethod
    def smallest(cls):
        return cls(tasks=("mlp_digits",), lr_grid=(0.01, 0.1, 1.0), epochs=1.0, n_probes=4, noise_batches=2,
                   range_steps=40, seeds=(0,))


def _task_data(task: str, config: OptimalLRConfig, seed: int):
    if task == "mlp_digits":
        return digits(0, n_train=1200)
    if task == "cnn_mnist1d":
        return mnist1d(config.mnist1d_samples, seed=0)
    raise ValueError(f"unknown task {task!r}; known: {sorted(TASKS)}")


def _task_model(task: str, d_in: int, seed: int):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if task == "mlp_digits":
            return mlp(d_in, 128, 10)
        return CNN1D(32, length=d_in)


def run_grid_point(config, task: str, lr: float, seed: int) -> dict:
    Xtr, ytr, Xte, yte = _task_data(task, config, seed)
    model = _task_model(task, Xtr.shape[1], seed)
    init_loss, _ = evaluate(model, cross_entropy, Xte, yte)
    g = torch.Generator().manual_seed(seed + 7919)
    out = train_sgd(model, cross_entropy, Xtr, ytr, lr=lr, batch_size=config.batch_size, epochs=config.epochs,
                    generator=g)
    te_loss, te_acc = evaluate(model, cross_entropy, Xte, yte) if out["finite"] else (math.inf, 0.0)
    if not math.isfinite(te_loss):
        te_loss, te_acc = math.inf, 0.0
    return {"lr": lr, "test_loss": te_loss, "test_acc": te_acc, "init_loss": init_loss, "finite": out["finite"]}


def run_predictions(config, task: str, seed: int) -> dict:
    from hhld.torch.lr import eta_opt_prediction, lr_range_test

    Xtr, ytr, Xte, yte = _task_data(task, config, seed)
    model = _task_model(task, Xtr.shape[1], seed)
    B = config.batch_size
    g = torch.Generator().manual_seed(seed + 104729)
    perm = torch.randperm(Xtr.shape[0], generator=g)
    batches = [(Xtr[perm[i * B:(i + 1) * B]], ytr[perm[i * B:(i + 1) * B]]) for i in range(config.noise_batches)]
    pred = eta_opt_prediction(model, cross_entropy, batches, lr=1.0, n="params", n_probes=config.n_probes,
                              n_batches=config.noise_batches, generator=torch.Generator().manual_seed(seed + 1))
    a = pred.eta_opt ** 2  # eta_opt(lr) = sqrt(lr * a)
    a_se = 2 * pred.stderr * pred.eta_opt
    # N = number of training samples instead of parameters
    a_nsamples = a * n_params(model) / Xtr.shape[0]
    # LR range test from the same initialisation (state restored afterwards)
    opt = torch.optim.SGD(model.parameters(), lr=1e-5)
    loader = [(Xtr[perm[i:i + B]], ytr[perm[i:i + B]]) for i in range(0, Xtr.shape[0] - B + 1, B)]
    rt = lr_range_test(model, opt, cross_entropy, loader, start_lr=1e-4, end_lr=30.0, num_steps=config.range_steps)
    return {"a": a, "a_se": a_se, "a_nsamples": a_nsamples, "D_per_lr": pred.D, "D_per_lr_se": pred.D_stderr,
            "hessian_trace": pred.hessian_trace, "hessian_trace_se": pred.hessian_trace_stderr,
            "n_params": n_params(model), "n_train": int(Xtr.shape[0]), "batch_size": B,
            "range_suggested": rt.suggested_lr, "range_min_loss_lr": rt.min_loss_lr, "range_diverged": rt.diverged,
            "range_lrs": rt.lrs, "range_losses": rt.smoothed_losses}


def grid_optimum(lrs, losses_by_seed) -> tuple[float, int]:
    """Refined optimum of the mean loss over seeds (parabola in log lr through the best grid
    point and its neighbours, clipped to them) and the index of the best grid point."""
    L = np.asarray(losses_by_seed, float)  # (seeds, lrs)
    L = np.where(np.isfinite(L), L, np.nan)
    mean = np.nanmean(np.where(np.isnan(L), np.nanmax(L) * 2 if np.isfinite(np.nanmax(L)) else 1e9, L), 0)
    i = int(np.argmin(mean))
    x = np.log10(np.asarray(lrs, float))
    if 0 < i < len(lrs) - 1:
        y = mean[i - 1:i + 2]
        xx = x[i - 1:i + 2]
        c = np.polyfit(xx, y, 2)
        if c[0] > 0:
            xv = float(np.clip(-c[1] / (2 * c[0]), xx[0], xx[2]))
            return 10 ** xv, i
    return float(lrs[i]), i


def bootstrap_sd(lrs, losses_by_seed, n_boot: int = 200, seed: int = 0) -> float:
    L = np.asarray(losses_by_seed, float)
    if L.shape[0] < 2:
        return math.nan
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(n_boot):
        idx = rng.integers(0, L.shape[0], L.shape[0])
        vals.append(math.log10(grid_optimum(lrs, L[idx])[0]))
    return float(np.std(vals, ddof=1))


@register
class OptimalLR(Experiment):
    name = "optimal_lr"
    title = "Optimal learning rate: the documents' η_opt = √(D·Tr∇²L/N) vs grid search and the LR range test"
    description = ("Grid search of the SGD learning rate (several seeds) on a 1-D CNN / MNIST-1D and an MLP / digits, "
                   "the LR range test, and the documents' η_opt from the monitor's D and Hutchinson trace at "
                   "initialisation, in both readings of η.")
    config_cls = OptimalLRConfig

    def cells(self, config, seeds):
        cells = []
        for t in config.tasks:
            cells += [Cell(self.name, {"task": t, "kind": "grid", "lr": float(lr)}, int(s))
                      for lr in config.lr_grid for s in seeds]
            cells += [Cell(self.name, {"task": t, "kind": "predict", "lr": 0.0}, int(s)) for s in seeds]
        return cells

    def run_cell(self, config, cell):
        k = cell.key
        if k["kind"] == "grid":
            return run_grid_point(config, k["task"], float(k["lr"]), cell.seed)
        return run_predictions(config, k["task"], cell.seed)

    def summarize(self, config, results):
        rows: list[Row] = []
        data: dict = {}
        tasks = [t for t in config.tasks if any(c.key["task"] == t for c, _ in results)]
        fig, axes = figure(len(tasks), 1, w=5.4, h=4.2)
        lt, pt = math.log10(config.tol_factor), math.log10(config.partly_factor)
        for ti, task in enumerate(tasks):
            grid = [(c, r) for c, r in results if c.key["task"] == task and c.key["kind"] == "grid"]
            preds = [r for c, r in results if c.key["task"] == task and c.key["kind"] == "predict"]
            seeds = sorted({c.seed for c, _ in grid})
            lrs = sorted({float(c.key["lr"]) for c, _ in grid})
            by = group(grid, "lr")
            L = np.array([[next(r["test_loss"] for c, r in grid if c.seed == s and float(c.key["lr"]) == lr)
                           for lr in lrs] for s in seeds])
            lr_opt, i_best = grid_optimum(lrs, L)
            sd = bootstrap_sd(lrs, L)
            a = float(np.mean([p["a"] for p in preds]))
            a_sd = float(np.std([p["a"] for p in preds], ddof=1)) if len(preds) > 1 else preds[0]["a_se"]
            a_ns = float(np.mean([p["a_nsamples"] for p in preds]))
            rs = [p["range_suggested"] for p in preds if p["range_suggested"] is not None]
            cands = {
                "documents' η_opt as the learning rate (self-consistent: η = η_opt(η))": (a, "lr"),
                "documents' η_opt as inertia, lr = 1/η_opt (self-consistent)": (a ** (-1 / 3), "inv"),
                "documents' η_opt evaluated at the grid optimum, as lr": (math.sqrt(lr_opt * a), "lr"),
                "documents' η_opt evaluated at the grid optimum, lr = 1/η_opt": (1 / math.sqrt(lr_opt * a), "inv"),
                "LR range test (steepest descent), baseline": (float(np.exp(np.mean(np.log(rs)))) if rs else math.nan,
                                                              "base"),
            }
            unc_opt = 2 * sd if math.isfinite(sd) else 0.0
            task_data = {"lrs": lrs, "test_loss": L.tolist(), "lr_opt": lr_opt, "lr_opt_log10_sd": sd,
                         "grid_best": lrs[i_best], "a": a, "a_sd": a_sd, "a_nsamples": a_ns,
                         "hessian_trace": [p["hessian_trace"] for p in preds],
                         "D_per_lr": [p["D_per_lr"] for p in preds], "n_params": preds[0]["n_params"],
                         "range_suggested": rs, "predictions": {}}
            for label, (val, kind) in cands.items():
                if not (val and math.isfinite(val) and val > 0):
                    rows.append(Row(f"{TASKS[task]}: {label}", claim("optimal_lr") if kind != "base" else
                                    "— (standard method, not a documents' claim)", None, None, "no finite prediction",
                                    "inconclusive"))
                    continue
                dl = abs(math.log10(val / lr_opt))
                rel = abs(val - lr_opt) / lr_opt
                v = "holds" if dl <= lt + unc_opt else ("partly" if dl <= pt + unc_opt else "fails")
                task_data["predictions"][label] = {"value": val, "ratio": val / lr_opt, "abs_log10_ratio": dl,
                                                   "rel_err": rel}
                rows.append(Row(
                    prediction=f"{TASKS[task]}: {label}",
                    documents_value=claim("optimal_lr") if kind != "base" else "— (standard method, not a documents' claim)",
                    measured=val, uncertainty=(a_sd if kind == "lr" and "self-consistent" in label else None),
                    error=f"grid optimum {fmt(lr_opt)} (best grid point {lrs[i_best]:g}); ratio {fmt(val / lr_opt)}, "
                          f"rel. err {fmt(100 * rel)}%",
                    verdict=v,
                    notes=f"tolerance: within a factor {config.tol_factor:g} of the grid optimum (partly: "
                          f"{config.partly_factor:g}), widened by 2 bootstrap sd of log10(optimum) = "
                          f"{fmt(unc_opt)}; N = parameters ({preds[0]['n_params']}); with N = training samples the "
                          f"self-consistent lr reading would be {fmt(a_ns)}"))
            rows.append(Row(
                prediction=f"{TASKS[task]}: grid-search optimum (reference)",
                documents_value=claim("optimal_lr"), measured=lr_opt,
                uncertainty=None, error=f"bootstrap sd of log10(lr*) over seeds: {fmt(sd)}; {len(seeds)} seeds x "
                                        f"{len(lrs)} learning rates",
                verdict="inconclusive",
                notes=f"the reference, not a test: SGD, batch {config.batch_size}, {config.epochs:g} epochs, minimum "
                      f"held-out cross-entropy; the documents' number is for ImageNet/ResNet-50"))
            ax = axes[0][ti]
            for si, s in enumerate(seeds):
                ax.loglog(lrs, np.where(np.isfinite(L[si]), L[si], np.nan), "o-", alpha=0.5, label=f"seed {s}")
            ax.axvline(lr_opt, color="k", lw=1.2, label="grid optimum")
            styles = ["--", ":", "-.", (0, (1, 3)), (0, (5, 2))]
            for ci, ((label, (val, _)), ls) in enumerate(zip(cands.items(), styles)):
                if val and math.isfinite(val):
                    ax.axvline(val, ls=ls, color=f"C{ci + 2}", lw=1.2, label=label[:60])
            ax.set_xlabel("learning rate")
            ax.set_ylabel(f"held-out loss after {config.epochs:g} epochs")
            ax.set_title(TASKS[task])
            ax.legend(fontsize=6)
            data[task] = task_data
        fig.tight_layout()
        notes = (f"Data: {DATA_SOURCES['mnist1d']}; {DATA_SOURCES['digits']}. The monitor's D is proportional to the "
                 f"learning rate it is measured at, so η_opt(lr) = √(lr·a), a = tr Σ·Tr∇²L/(2 B d N), measured at "
                 f"initialisation; the documents' ImageNet numbers are not re-run here.")
        return ExperimentReport(rows=rows, figures={"optimal_lr": fig}, notes=notes, data=data)
