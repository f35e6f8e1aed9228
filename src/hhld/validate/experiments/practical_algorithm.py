"""Experiment: the documents' "Practical Algorithm" (Best Takeaways 13) as an optimizer.

The documents' recipe, run at every step on the consolidation ratio ``C = ||grad||^2 / (D dim)``::

    if C < 0.5:  theta += 3 sqrt(eta D) * random_direction()      # "strategic reset"
    if C > 10:   learning_rate *= 1.5;  add_noise *= 2.0          # "increase exploration"

It is :class:`hhld.torch.HeisenbergSGD`'s controller. ``D`` is the effective diffusion of SGD,
``lr tr Sigma / (2 B d)``, measured from per-sample gradients every ``measure_every`` steps
(:func:`hhld.torch.gradient_noise_stats`, as the monitor does) and handed to the optimizer;
``eta = 1/lr`` (the documents' "learning inertia"); the injected noise starts at 0 and the first
boost sets it to the measured D. Two readings of the recipe:

* **literal** -- the documents' constants at every step after step 10, nothing else: no bound on
  lr or noise, no pause between actions;
* **bounded** -- HeisenbergSGD's default controller: the same constants, lr at most 10x and the
  noise at most 16x their first values, and 20 steps between actions.

Both start from the same learning rate as plain SGD (``lr``), on the same initialisation and the
same batches, and are compared with (a) plain SGD at that learning rate and (b) plain SGD at the
learning rate the LR range test suggests (a standard method, not the documents'), on the two
tasks of the ``optimal_lr`` experiment: an MLP on digits and a 1-D CNN on MNIST-1D. Measured: the
final test accuracy (mean and standard error over seeds) and the paired difference per seed.
Verdict on "it works better": holds when the documents' algorithm is more accurate by more than
2 SE of the paired difference; fails when it is less accurate by more than 2 SE, or when the
upper end of the 2-SE interval of the gain stays below 1 point of accuracy (no useful gain);
inconclusive otherwise.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..base import Cell, Experiment, ExperimentConfig, ExperimentReport, Row, claim, register
from ._common import figure, fmt, mean_se
from ._train import cross_entropy, evaluate, train_sgd
from .optimal_lr import TASKS, _task_data, _task_model

ARMS = {
    "sgd": "SGD at the starting lr",
    "sgd_range_test": "SGD at the LR range test's lr",
    "documents": "documents' algorithm, literal",
    "documents_bounded": "documents' algorithm, bounded (HeisenbergSGD default)",
}


@dataclass(frozen=True)
class PracticalConfig(ExperimentConfig):
    tasks: tuple[str, ...] = ("mlp_digits", "cnn_mnist1d")
    lr: float = 0.05             # starting learning rate of SGD and of the documents' algorithm
    epochs: float = 4.0
    batch_size: int = 32
    measure_every: int = 10      # steps between measurements of SGD's diffusion D (the D in C)
    mnist1d_samples: int = 2000
    range_steps: int = 100
    seeds: tuple[int, ...] = (0, 1)

    @classmethod
    def full(cls):
        return cls(epochs=15.0, mnist1d_samples=5000, range_steps=200, seeds=(0, 1, 2, 3, 4))

    @classmethod
    def smallest(cls):
        return cls(tasks=("mlp_digits",), epochs=1.0, range_steps=40, seeds=(0, 1))


def _controller(arm: str):
    from hhld.torch import ControllerConfig

    if arm == "documents":  # the documents' constants, every step after step 10, no bounds
        return ControllerConfig(kick_threshold=0.5, explore_threshold=10.0, lr_factor=1.5, noise_factor=2.0,
                                kick_factor=3.0, max_lr_factor=1e12, max_noise_factor=1e12, warmup=10, cooldown=0)
    return ControllerConfig()  # HeisenbergSGD's bounded default


def run_arm(config: PracticalConfig, task: str, arm: str, seed: int) -> dict:
    """Train one arm from the seed's initialisation on the seed's batches; final test accuracy and
    what the controller did."""
    from hhld.torch import HeisenbergSGD, gradient_noise_stats, lr_range_test

    Xtr, ytr, Xte, yte = _task_data(task, config, seed)
    model = _task_model(task, Xtr.shape[1], seed)
    out: dict = {"arm": arm}
    lr = config.lr
    if arm == "sgd_range_test":
        B = config.batch_size
        perm = torch.randperm(Xtr.shape[0], generator=torch.Generator().manual_seed(seed + 104729))
        loader = [(Xtr[perm[i:i + B]], ytr[perm[i:i + B]]) for i in range(0, Xtr.shape[0] - B + 1, B)]
        rt = lr_range_test(model, torch.optim.SGD(model.parameters(), lr=1e-5), cross_entropy, loader,
                           start_lr=1e-4, end_lr=30.0, num_steps=config.range_steps)
        lr = float(rt.suggested_lr) if rt.suggested_lr else config.lr
        out["range_suggested"] = rt.suggested_lr
    before = None
    opt: str | torch.optim.Optimizer = "sgd"
    trace: dict = {"C": [], "lr": []}
    if arm.startswith("documents"):
        opt = HeisenbergSGD(model.parameters(), lr=config.lr, controller=_controller(arm), seed=seed)

        def before(step, xb, yb):
            g = opt.param_groups[0]
            if step % config.measure_every == 0:
                D = float(gradient_noise_stats(model, cross_entropy, xb, yb, lr=g["lr"]).D)
                if math.isfinite(D) and D > 0:
                    g["D"] = D  # the measured SGD diffusion, in C and in hbar
            if opt.last_consolidation[0] is not None:
                trace["C"].append(float(opt.last_consolidation[0]))
                trace["lr"].append(float(g["lr"]))

    run = train_sgd(model, cross_entropy, Xtr, ytr, lr=lr, batch_size=config.batch_size, epochs=config.epochs,
                    generator=torch.Generator().manual_seed(seed + 7919), optimizer=opt, before_step=before)
    finite = run["finite"] and all(bool(torch.isfinite(p).all()) for p in model.parameters())
    te_loss, te_acc = evaluate(model, cross_entropy, Xte, yte) if finite else (math.inf, 0.0)
    if not math.isfinite(te_loss):
        te_loss, te_acc, finite = math.inf, 0.0, False
    out.update({"lr": lr, "test_acc": te_acc, "test_loss": te_loss, "finite": finite, "steps": run["steps"]})
    if arm.startswith("documents"):
        ev = opt.events
        C = np.asarray(trace["C"])
        out.update({"final_lr": float(opt.param_groups[0]["lr"]), "max_lr": max(trace["lr"], default=config.lr),
                    "final_D_inject": float(opt.param_groups[0]["D_inject"]),
                    "kicks": sum(e["action"] == "kick" for e in ev),
                    "explores": sum(e["action"] == "explore" for e in ev),
                    "frac_C_above_10": float(np.mean(C > 10)) if C.size else math.nan,
                    "frac_C_below_half": float(np.mean(C < 0.5)) if C.size else math.nan,
                    "median_C": float(np.median(C)) if C.size else math.nan})
    return out


def _verdict(diff: np.ndarray, finite: np.ndarray) -> str:
    m, se = mean_se(diff)
    if not np.all(finite):
        return "fails"
    if not math.isfinite(se):
        return "inconclusive"
    if m > 2 * se and m > 0:
        return "holds"
    if m < -2 * se or m + 2 * se < 0.01:
        return "fails"
    return "inconclusive"


@register
class PracticalAlgorithm(Experiment):
    name = "practical_algorithm"
    title = "The documents' Practical Algorithm (C < 0.5: kick; C > 10: lr ×1.5, noise ×2) vs SGD"
    config_cls = PracticalConfig
    description = ("The documents' Practical Algorithm as HeisenbergSGD's controller (literal and bounded) against "
                   "plain SGD at the same starting lr and at the LR range test's lr, on an MLP / digits and a 1-D "
                   "CNN / MNIST-1D: final test accuracy over seeds, paired differences, what the controller did.")

    def cells(self, config, seeds):
        return [Cell(self.name, {"task": t, "arm": a}, int(s)) for t in config.tasks for a in ARMS for s in seeds]

    def run_cell(self, config, cell):
        return run_arm(config, cell.key["task"], cell.key["arm"], cell.seed)

    def summarize(self, config, results):
        rows, data = [], {}
        tasks = [t for t in config.tasks if any(c.key["task"] == t for c, _ in results)]
        fig, axes = figure(len(tasks), 1, w=5.2, h=4.0)
        for ti, task in enumerate(tasks):
            by = {a: {c.seed: r for c, r in results if c.key["task"] == task and c.key["arm"] == a} for a in ARMS}
            seeds = sorted(set.intersection(*(set(v) for v in by.values())))
            acc = {a: np.array([by[a][s]["test_acc"] for s in seeds]) for a in ARMS}
            fin = {a: np.array([bool(by[a][s]["finite"]) for s in seeds]) for a in ARMS}
            summary = {a: dict(zip(("mean", "se"), mean_se(acc[a]))) for a in ARMS}
            doc_info = {a: {k: [by[a][s].get(k) for s in seeds]
                            for k in ("final_lr", "max_lr", "kicks", "explores", "frac_C_above_10",
                                      "frac_C_below_half", "median_C", "steps")}
                        for a in ("documents", "documents_bounded")}
            data[task] = {"seeds": seeds, "accuracy": {a: acc[a].tolist() for a in ARMS}, "summary": summary,
                          "finite": {a: fin[a].tolist() for a in ARMS},
                          "range_lr": [by["sgd_range_test"][s]["lr"] for s in seeds], "controller": doc_info}
            label = TASKS[task]
            for arm in ("documents", "documents_bounded"):
                for ref in ("sgd", "sgd_range_test"):
                    diff = acc[arm] - acc[ref]
                    m, se = mean_se(diff)
                    ref_text = f"SGD at lr {config.lr:g}" if ref == "sgd" else (
                        f"SGD at the range test's lr ({fmt(float(np.median(data[task]['range_lr'])))} median)")
                    info = doc_info[arm]
                    rows.append(Row(
                        prediction=f"{label}: the documents' Practical Algorithm "
                                   f"({'literal' if arm == 'documents' else 'bounded'}) trains better than {ref_text}",
                        documents_value=claim("practical_algorithm"),
                        measured=(summary[arm]["mean"] if fin[arm].all()
                                  else f"diverged in {int((~fin[arm]).sum())}/{len(seeds)} runs"),
                        uncertainty=summary[arm]["se"] if fin[arm].all() else None,
                        error=(f"test acc {fmt(summary[arm]['mean'])} vs {fmt(summary[ref]['mean'])} ± "
                               f"{fmt(summary[ref]['se'], 2)}; paired diff {fmt(m)} ± {fmt(se, 2)}; diverged "
                               f"{int((~fin[arm]).sum())}/{len(seeds)}; lr {config.lr:g} → max "
                               f"{fmt(float(np.median(info['max_lr'])))}; C > 10 at "
                               f"{fmt(100 * float(np.nanmedian(np.asarray(info['frac_C_above_10'], float))))}% of "
                               f"steps, kicks {int(np.sum(info['kicks']))}"),
                        verdict=_verdict(diff, fin[arm]),
                        notes=("holds: more accurate than the comparison by > 2 SE of the paired difference over "
                               f"{len(seeds)} seeds; fails: less accurate by > 2 SE, a diverged run (counted as "
                               "accuracy 0), or a 2-SE interval of the gain below +1 point; else inconclusive. Same "
                               "initialisation and "
                               "batches per seed; C = ||g||²/(D·d) with D the measured SGD diffusion every "
                               f"{config.measure_every} steps; {config.epochs:g} epochs, batch {config.batch_size}.")))
            ax = axes[0][ti]
            names = list(ARMS)
            ax.bar(range(len(names)), [summary[a]["mean"] for a in names],
                   yerr=[0 if not math.isfinite(summary[a]["se"]) else summary[a]["se"] for a in names],
                   color=["tab:gray", "tab:blue", "tab:red", "tab:orange"])
            ax.set_xticks(range(len(names)))
            ax.set_xticklabels(["SGD", "SGD @ range", "documents\n(literal)", "documents\n(bounded)"], fontsize=7)
            ax.set_ylabel("final test accuracy")
            ax.set_title(label, fontsize=9)
            lo = min(summary[a]["mean"] for a in names)
            ax.set_ylim(max(0.0, lo - 0.1), 1.0)
        fig.tight_layout()
        notes = ("The documents give the recipe, not its setting: D is the measured SGD diffusion (lr·tr Σ/(2B·d)), "
                 "η = 1/lr, the injected noise starts at 0 and its first boost is the measured D. 'literal' applies "
                 "the recipe at every step after step 10 with no bounds; 'bounded' is HeisenbergSGD's default "
                 "(lr ≤ 10×, noise ≤ 16×, 20 steps between actions).")
        return ExperimentReport(rows=rows, figures={"accuracy": fig}, notes=notes, data=data)
