"""Experiment 7: does the consolidation ratio C(t) predict the grokking epoch?

Modular addition ``(a + b) mod p`` with ``p = 113`` and a training fraction of 0.3, trained
full-batch with AdamW (Power et al. 2022; Nanda et al. 2023). Models:

* ``mlp_quadratic_mse`` -- 2-layer MLP on one-hot ``a || b``, quadratic activation, MSE on
  one-hot targets, no biases (Gromov 2023): groks within a few hundred epochs on a CPU;
* ``mlp_relu_ce`` -- the same with ReLU units, biases and cross-entropy: groks after a few
  thousand epochs;
* ``transformer`` -- the one-layer transformer of Nanda et al. (2023) (full scale only).

Every ``eval_every`` epochs the run records test/train loss and accuracy, the weight norm,
and -- on a float64 copy of the model, so that nothing saturates late in training -- the
training-set gradient ``||grad L||^2``, the monitor's gradient-noise trace ``tr Sigma`` and
diffusion ``D = lr tr Sigma / (2 B d)`` (B = the training set: full batch), the documents'
``C = ||grad L||^2/(D d)`` and their "How to Use This Today" form ``C_sgd = ||g||^2/(lr/B)``.

**Online predictors.** Each predictor sees only what has been recorded so far and *commits*
once, at the evaluation where its rule fires; its prediction is "grokking is happening now",
i.e. the predicted grokking epoch is the commit epoch. The documents' rules:

* ``C<1`` / ``C<0.5`` / ``C_sgd<1`` -- C crosses its critical value (Best Takeaways 4, 13:
  "C < 1 quantum search", "C < 0.5: phase transition detected (may grok)"; How to Use This
  Today: "C ≈ 1 critical state, where grokking often begins"): fires at the first evaluation
  on the other side of the threshold from where C started (either direction);
* ``C drop x10`` / ``C drop x3`` -- "sharp drops: phase transitions imminent": fires when the
  running median (3 evaluations) of C falls below 1/factor of its maximum over the trailing
  ``drop_window`` epochs (not before ``drop_window`` epochs of history).

Baselines (not from the documents): test loss falls 10% below its running maximum
("test-loss peak"), weight norm falls 2% below its running maximum ("weight-norm peak"),
test accuracy passes 5%.

The observed grokking epochs are the first evaluations with test accuracy >= 95% (``t95``)
and >= 50% (``t50``). Scores per predictor over all runs: |error| in epochs and in % of the
observed epoch, lead time (observed - commit), and how many runs it committed strictly
before the event. A run stops ``stop_margin`` x t95 epochs after t95 (a later commit could
only be late).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..base import Cell, Experiment, ExperimentConfig, ExperimentReport, Row, claim, register
from ._common import figure, fmt
from ._data import modular_addition
from ._train import ModAddMLP, ModAddTransformer, evaluate, get_loss, grad_stats_f64, n_params, weight_norm

MODELS = {
    # name: (loss, adam betas, warm-up steps)
    "mlp_quadratic_mse": ("mse", (0.9, 0.999), 0),
    "mlp_relu_ce": ("ce", (0.9, 0.999), 0),
    "transformer": ("ce", (0.9, 0.98), 10),
}


@dataclass(frozen=True)
class GrokkingConfig(ExperimentConfig):
    #: every cell's key carries its run's (model, lr, wd, max_epochs, eval_every); the rest only plans or scores
    plan_fields = ("seeds", "runs", "transformer_seeds", "rel_tol", "partly_tol", "min_before_frac")

    p: int = 113
    train_frac: float = 0.3
    width: int = 512
    #: runs: (model, learning rate, weight decay, max epochs, evaluate every ... epochs)
    runs: tuple[tuple[str, float, float, int, int], ...] = (
        ("mlp_quadratic_mse", 5e-3, 1.0, 600, 5),
        ("mlp_quadratic_mse", 3e-3, 2.0, 600, 5),
    )
    seeds: tuple[int, ...] = (0, 1)
    drop_window: int = 50          # epochs: the trailing window of the sharp-drop rule
    stop_margin: float = 0.1       # stop at t95 * (1 + stop_margin) (+ one evaluation)
    rel_tol: float = 0.05          # verdict tolerance on the median |error| of a predictor ...
    partly_tol: float = 0.25       # ... "partly" up to this
    min_before_frac: float = 0.75  # ... and it must commit before the event in this fraction of runs
    transformer_seeds: int = 1     # the transformer runs only the first seeds (10-15 min each on a CPU)


    @classmethod
    def full(cls):
        runs = tuple(("mlp_quadratic_mse", lr, wd, 1500, 5) for lr in (2e-3, 5e-3, 1e-2) for wd in (0.5, 1.0, 2.0))
        runs += tuple(("mlp_relu_ce", lr, wd, me, 50) for lr, wd, me in ((1e-3, 1.0, 20000), (2e-3, 1.0, 15000),
                                                                          (1e-3, 2.0, 15000)))
        runs += (("transformer", 1e-3, 1.0, 20000, 100),)
        return cls(runs=runs, seeds=(0, 1, 2), drop_window=100, transformer_seeds=3)

    @classmethod
    def smallest(cls):
        return cls(p=31, train_frac=0.5, width=256, runs=(("mlp_quadratic_mse", 1e-2, 1.0, 400, 5),), seeds=(0,))


# ----------------------------------------------------------------------------- online predictors
class _Predictor:
    """Commits once; ``commit`` is the epoch at which the rule fired (None: not yet / never)."""

    documents = True
    key = ""

    def __init__(self, name: str):
        self.name = name
        self.commit: int | None = None

    def update(self, epoch: int, obs: dict) -> None:
        if self.commit is None:
            v = obs.get(self.key)
            if v is not None and math.isfinite(v) and self._fires(epoch, v):
                self.commit = int(epoch)

    def _fires(self, epoch: int, v: float) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError


class Crossing(_Predictor):
    """Fires when ``obs[key]`` is first on the other side of ``threshold`` from its first value."""

    def __init__(self, name, key, threshold):
        super().__init__(name)
        self.key, self.threshold, self.side = key, threshold, None

    def _fires(self, epoch, v):
        s = v > self.threshold
        if self.side is None:
            self.side = s
            return False
        return s != self.side


class SharpDrop(_Predictor):
    """Fires when the running median (3 evaluations) of ``obs[key]`` falls below 1/factor of the
    largest running median in the trailing ``window`` epochs."""

    def __init__(self, name, key, factor, window):
        super().__init__(name)
        self.key, self.factor, self.window = key, factor, window
        self.raw: list[float] = []
        self.start: int | None = None
        self.med: list[tuple[int, float]] = []

    def _fires(self, epoch, v):
        self.raw.append(v)
        m = float(np.median(self.raw[-3:]))
        past = [x for (e, x) in self.med if epoch - e <= self.window]
        self.med.append((epoch, m))
        if self.start is None:
            self.start = epoch
        # burn-in: the trailing window must be full
        return epoch - self.start >= self.window and len(self.raw) >= 3 and m * self.factor <= max(past)


class PeakDrop(_Predictor):
    """Baseline: fires when ``obs[key]`` falls ``drop`` (fraction) below its running maximum."""

    documents = False

    def __init__(self, name, key, drop):
        super().__init__(name)
        self.key, self.drop, self.peak = key, drop, -math.inf

    def _fires(self, epoch, v):
        self.peak = max(self.peak, v)
        return v < (1.0 - self.drop) * self.peak


class Passing(_Predictor):
    """Baseline: fires when ``obs[key] >= level``."""

    documents = False

    def __init__(self, name, key, level):
        super().__init__(name)
        self.key, self.level = key, level

    def _fires(self, epoch, v):
        return v >= self.level


def make_predictors(drop_window: int) -> list[_Predictor]:
    return [
        Crossing("C crosses 1", "C", 1.0),
        Crossing("C crosses 0.5", "C", 0.5),
        Crossing("C_sgd crosses 1", "C_sgd", 1.0),
        SharpDrop("C drops x10", "C", 10.0, drop_window),
        SharpDrop("C drops x3", "C", 3.0, drop_window),
        SharpDrop("C_sgd drops x10", "C_sgd", 10.0, drop_window),
        PeakDrop("test-loss peak", "test_loss", 0.10),
        PeakDrop("weight-norm peak", "weight_norm", 0.02),
        Passing("test acc passes 5%", "test_acc", 0.05),
    ]


def _build(model: str, p: int, width: int):
    if model == "mlp_quadratic_mse":
        return ModAddMLP(p, width, "quadratic")
    if model == "mlp_relu_ce":
        return ModAddMLP(p, width, "relu")
    if model == "transformer":
        return ModAddTransformer(p)
    raise ValueError(f"unknown grokking model {model!r}; known: {sorted(MODELS)}")


def run_grokking(config: GrokkingConfig, model_name: str, lr: float, wd: float, max_epochs: int,
                 eval_every: int, seed: int, device: str = "cpu") -> dict:
    """One full-batch AdamW run with online predictors; returns series, events and commits."""
    loss_name, betas, warmup = MODELS[model_name]
    loss_fn = get_loss(loss_name)
    data = modular_addition(config.p, config.train_frac, seed)
    xtr, ytr, xte, yte = (data[k].to(device) for k in ("x_train", "y_train", "x_test", "y_test"))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _build(model_name, config.p, config.width).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=wd, betas=betas)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup) if warmup else 1.0)
    preds = make_predictors(config.drop_window)
    keys = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "weight_norm", "grad_sq", "tr_sigma",
            "D", "C", "C_sgd")
    series: dict[str, list] = {k: [] for k in keys}
    t95 = t50 = t_mem = None
    stop_at = max_epochs
    for epoch in range(max_epochs + 1):
        if epoch % eval_every == 0 or epoch == max_epochs:
            trl, tra = evaluate(model, loss_fn, xtr, ytr)
            tel, tea = evaluate(model, loss_fn, xte, yte)
            st = grad_stats_f64(model, loss_fn, xtr, ytr, lr=lr)
            obs = {"epoch": epoch, "train_loss": trl, "train_acc": tra, "test_loss": tel, "test_acc": tea,
                   "weight_norm": weight_norm(model), "grad_sq": st["grad_sq"], "tr_sigma": st["tr_sigma"],
                   "D": st["D"], "C": st["C"], "C_sgd": st["C_sgd"]}
            for k in keys:
                series[k].append(obs[k])
            for pr in preds:
                pr.update(epoch, obs)
            if t_mem is None and tra >= 0.99:
                t_mem = epoch
            if t50 is None and tea >= 0.5:
                t50 = epoch
            if t95 is None and tea >= 0.95:
                t95 = epoch
                stop_at = min(max_epochs, int(math.ceil(t95 * (1 + config.stop_margin))) + eval_every)
            if epoch >= stop_at:
                break
        if epoch == max_epochs:
            break
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(xtr), ytr)
        loss.backward()
        opt.step()
        sched.step()
    return {
        "t95": t95, "t50": t50, "t_memorize": t_mem, "epochs_run": int(series["epoch"][-1]),
        "n_params": n_params(model), "n_train": int(xtr.shape[0]),
        "commits": {pr.name: pr.commit for pr in preds},
        "documents_predictor": {pr.name: pr.documents for pr in preds},
        "series": series,
    }


def score(commits: list, events: list) -> dict:
    """Scores of one predictor over runs: |error| (epochs, %), lead time, committed-before count."""
    errs, rels, leads, before, fired = [], [], [], 0, 0
    n = 0
    for c, t in zip(commits, events):
        if t is None:
            continue
        n += 1
        if c is None:
            errs.append(math.inf)
            rels.append(math.inf)
            continue
        fired += 1
        errs.append(abs(c - t))
        rels.append(abs(c - t) / t if t > 0 else math.inf)
        leads.append(t - c)
        before += int(c < t)
    med = lambda v: float(np.median(v)) if v else math.nan  # noqa: E731
    return {"n_runs": n, "fired": fired, "before": before, "median_abs_err": med(errs),
            "median_rel_err": med(rels), "mean_lead": float(np.mean(leads)) if leads else math.nan,
            "sd_lead": float(np.std(leads, ddof=1)) if len(leads) > 1 else math.nan,
            "rel_errs": rels, "leads": leads}


@register
class Grokking(Experiment):
    name = "grokking"
    title = "Grokking on modular addition: does C(t) predict the grokking epoch?"
    description = ("Modular addition mod p (training fraction 0.3), full-batch AdamW; C(t) measured in float64 "
                   "every few epochs; the documents' C-based rules as online predictors against the observed "
                   "grokking epoch and simple baselines.")
    config_cls = GrokkingConfig

    def cells(self, config, seeds):
        out = []
        for (m, lr, wd, me, ev) in config.runs:
            ss = list(seeds)[:config.transformer_seeds] if m == "transformer" else seeds
            out += [Cell(self.name, {"model": m, "lr": lr, "wd": wd, "max_epochs": me, "eval_every": ev}, int(s))
                    for s in ss]
        return out

    def run_cell(self, config, cell):
        from ..base import device

        k = cell.key
        return run_grokking(config, k["model"], float(k["lr"]), float(k["wd"]), int(k["max_epochs"]),
                            int(k["eval_every"]), cell.seed, device=device())

    def summarize(self, config, results):
        runs = [(c, r) for c, r in results]
        sc = _Scores(runs, config)
        rows: list[Row] = (_headline_rows(sc) + _per_model_rows(sc) + _observed_rows(sc) + _predictor_rows(sc)
                           + _critical_c_rows(runs))
        notes = (f"Data: {config.p}×{config.p} table of (a+b) mod {config.p}, training fraction {config.train_frac}, "
                 f"split and initialisation from the cell seed; full-batch AdamW. C(t) from float64 gradients on the "
                 f"whole training set; D = lr·tr Σ/(2 B d) with B = the training set (full batch). Each predictor's "
                 f"predicted epoch is its commit epoch; 'before' means strictly before the observed event.")
        fig = self._figure(runs)
        data = {"scores": {nm: {k: {kk: vv for kk, vv in s.items()} for k, s in v.items()}
                           for nm, v in sc.scores.items()},
                "runs": [{"model": c.key["model"], "lr": c.key["lr"], "wd": c.key["wd"], "seed": c.seed,
                          "t95": r["t95"], "t50": r["t50"], "t_memorize": r["t_memorize"], "commits": r["commits"],
                          "n_params": r["n_params"]} for c, r in runs]}
        return ExperimentReport(rows=rows, figures={"grokking_C": fig}, notes=notes, data=data)

    @staticmethod
    def _figure(runs):
        """One row of panels per model (each has its own epoch range: ~10² for the quadratic MLP,
        ~10⁴ for the ReLU MLP), one colour per run, the legend outside the axes."""
        import matplotlib

        models = sorted({c.key["model"] for c, _ in runs})
        fig, axes = figure(3, len(models), w=5.2, h=3.6)
        for row, m in zip(axes, models):
            ax_acc, ax_c, ax_g = row
            sel = [(c, r) for c, r in runs if c.key["model"] == m]
            cmap = matplotlib.colormaps["tab10" if len(sel) <= 10 else "viridis"]
            for i, (c, r) in enumerate(sel):
                s = r["series"]
                col = cmap(i % 10) if len(sel) <= 10 else cmap(i / max(len(sel) - 1, 1))
                lab = f"lr={c.key['lr']:g} wd={c.key['wd']:g} s{c.seed}"
                ax_acc.plot(s["epoch"], s["test_acc"], color=col, label=lab)
                ax_acc.plot(s["epoch"], s["train_acc"], color=col, ls=":", lw=0.8)
                ax_c.semilogy(s["epoch"], s["C"], color=col)
                ax_c.semilogy(s["epoch"], s["C_sgd"], color=col, ls="--", lw=0.8)
                ax_g.semilogy(s["epoch"], s["grad_sq"], color=col)
                if r["t95"] is not None:
                    for ax in (ax_acc, ax_c, ax_g):
                        ax.axvline(r["t95"], color=col, lw=0.6, alpha=0.6)
            for ax in (ax_acc, ax_c, ax_g):
                ax.set_xlabel("epoch")
            ax_c.axhline(1.0, color="k", lw=0.8, ls="-.")
            ax_c.axhline(0.5, color="grey", lw=0.8, ls="-.")
            ax_acc.set_ylabel("accuracy (solid test, dotted train)")
            ax_c.set_ylabel("C (solid: ‖∇L‖²/(D d); dashed: C_sgd)", fontsize=8)
            ax_g.set_ylabel("‖∇L‖² (float64, training set)")
            ax_acc.set_title(f"{m} ({len(sel)} runs); vertical lines: t95", fontsize=9)
            ax_g.legend(*ax_acc.get_legend_handles_labels(), fontsize=6, ncol=1 + len(sel) // 14,
                        loc="upper left", bbox_to_anchor=(1.02, 1.0))
        fig.tight_layout()
        return fig


class _Scores:
    """What every row builder of :meth:`Grokking.summarize` reads: the runs, the predictors' names
    (the documents' rules and the baselines), the observed events and each predictor's score."""

    def __init__(self, runs, config):
        self.runs, self.config = runs, config
        self.names = list(runs[0][1]["commits"]) if runs else []
        self.is_doc = runs[0][1]["documents_predictor"] if runs else {}
        self.t95s = [r["t95"] for _, r in runs]
        self.t50s = [r["t50"] for _, r in runs]
        self.grokked = [t for t in self.t95s if t is not None]
        self.scores = {nm: {"t95": score([r["commits"][nm] for _, r in runs], self.t95s),
                            "t50": score([r["commits"][nm] for _, r in runs], self.t50s)} for nm in self.names}
        self.models = sorted({c.key["model"] for c, _ in runs})
        self.doc_names = [nm for nm in self.names if self.is_doc.get(nm)]
        self.base_names = [nm for nm in self.names if not self.is_doc.get(nm)]

    def verdict(self, s) -> str:
        c = self.config
        if s["n_runs"] == 0:
            return "inconclusive"
        ok_before = s["before"] >= c.min_before_frac * s["n_runs"]
        if s["median_rel_err"] <= c.rel_tol and ok_before:
            return "holds"
        if s["median_rel_err"] <= c.partly_tol and s["before"] >= 0.5 * s["n_runs"]:
            return "partly"
        return "fails"

    @property
    def tol_note(self) -> str:
        c = self.config
        return (f"tolerance: median |error| <= {100 * c.rel_tol:g}% of the observed epoch and a commit strictly "
                f"before the event in >= {100 * c.min_before_frac:g}% of runs (partly: <= {100 * c.partly_tol:g}% "
                f"and >= 50%)")


def _err_text(s) -> str:
    if s["fired"] == 0:
        return f"never fired in {s['n_runs']} grokking runs"
    return (f"median |err| {_f(s['median_abs_err'])} ep ({_f(100 * s['median_rel_err'])}%); "
            f"committed before t95 in {s['before']}/{s['n_runs']} runs, fired in {s['fired']}")


def _lead_text(s) -> str:
    return f"lead {fmt(s['mean_lead'])} ± {fmt(s['sd_lead'])} ep (mean ± sd over fired runs)"


def _best_of(cands, sc):
    """The candidate with the smallest median |error|, then the most commits before the event."""
    return min(cands, key=lambda nm: (sc[nm]["median_rel_err"], -sc[nm]["before"]), default=None)


def _headline_rows(sc: _Scores) -> list[Row]:
    """The best documents' predictor against t95 (all models pooled)."""
    best = _best_of(sc.doc_names, {nm: sc.scores[nm]["t95"] for nm in sc.names})
    if not sc.grokked:
        return [Row("Grokking epoch predicted from C(t)", claim("grokking_epoch"), None, None,
                    "no run grokked within its budget", "inconclusive", sc.tol_note)]
    if best is None:
        return []
    s = sc.scores[best]["t95"]
    return [Row(
        prediction=f"Grokking epoch predicted from C(t) (best documents' rule: {best})",
        documents_value=claim("grokking_epoch"),
        measured=_measured(s),
        uncertainty=None, error=_err_text(s), verdict=sc.verdict(s),
        notes=f"measured = median |error| in % of t95 over {s['n_runs']} grokking runs ({', '.join(sc.models)}); "
              + sc.tol_note)]


def _per_model_rows(sc: _Scores) -> list[Row]:
    """The same per model, when several: the pooled median is dominated by the model with most runs, and
    the documents' setting (delayed generalisation, thousands of epochs) is the ReLU MLP / transformer."""
    rows: list[Row] = []
    if len(sc.models) <= 1 or not sc.doc_names:
        return rows
    for m in sc.models:
        idx = [j for j, (c, _) in enumerate(sc.runs) if c.key["model"] == m]
        per = {nm: score([sc.runs[j][1]["commits"][nm] for j in idx], [sc.t95s[j] for j in idx]) for nm in sc.names}
        if per[sc.doc_names[0]]["n_runs"] == 0:
            continue
        bm, bb = _best_of(sc.doc_names, per), _best_of(sc.base_names, per)
        s = per[bm]
        base_txt = (f"; best baseline '{bb}': median |err| {_f(100 * per[bb]['median_rel_err'])}%, before t95 "
                    f"in {per[bb]['before']}/{per[bb]['n_runs']}" if bb is not None else "")
        rows.append(Row(
            prediction=f"Grokking epoch predicted from C(t), {m} only (best documents' rule: {bm})",
            documents_value=claim("grokking_epoch"), measured=_measured(s), uncertainty=None,
            error=_err_text(s) + base_txt, verdict=sc.verdict(s),
            notes=f"measured = median |error| in % of t95 over the {s['n_runs']} grokking runs of {m}; "
                  + sc.tol_note))
    return rows


def _observed_rows(sc: _Scores) -> list[Row]:
    """The observed grokking epochs per model (observations, not tests)."""
    rows: list[Row] = []
    for m in sc.models:
        sel = [(c, r) for c, r in sc.runs if c.key["model"] == m]
        g = [r["t95"] for _, r in sel if r["t95"] is not None]
        g50 = [r["t50"] for _, r in sel if r["t50"] is not None]
        mem = [r["t_memorize"] for _, r in sel if r["t_memorize"] is not None]
        if g:
            meas = float(np.median(g))
            unc = float(np.std(g, ddof=1) / math.sqrt(len(g))) if len(g) > 1 else None
            txt = (f"t95 in [{min(g)}, {max(g)}] over {len(g)}/{len(sel)} runs; t50 median "
                   f"{fmt(float(np.median(g50))) if g50 else 'n/a'}; memorised (train acc 99%) at median "
                   f"{fmt(float(np.median(mem))) if mem else 'n/a'}")
        else:
            meas, unc, txt = "did not grok", None, f"0/{len(sel)} runs reached 95% test accuracy"
        rows.append(Row(
            prediction=f"Observed grokking epoch (test acc >= 95%), {m}, p={sc.config.p}",
            documents_value=claim("grokking_epoch"), measured=meas, uncertainty=unc, error=txt,
            verdict="inconclusive",
            notes="an observation, not a test: the documents do not state the model, optimiser or schedule "
                  "behind their epoch, so epoch counts are not comparable across setups"))
    return rows


def _predictor_rows(sc: _Scores) -> list[Row]:
    """One row per predictor (the documents' rules, then the baselines)."""
    rows: list[Row] = []
    for nm in sc.doc_names + sc.base_names:
        s, s50 = sc.scores[nm]["t95"], sc.scores[nm]["t50"]
        doc = sc.is_doc.get(nm)
        rows.append(Row(
            prediction=f"online predictor '{nm}' -> grokking epoch" + ("" if doc else " (baseline)"),
            documents_value=claim("grokking_C_predicts") if doc else "— (baseline, not a documents' claim)",
            measured=_measured(s),
            uncertainty=None, error=_err_text(s), verdict=sc.verdict(s),
            notes=f"{_lead_text(s)}; vs t50: median |err| {_f(100 * s50['median_rel_err'])}%, before t50 in "
                  f"{s50['before']}/{s50['n_runs']}. " + sc.tol_note))
    return rows


def _critical_c_rows(runs) -> list[Row]:
    """C at the grokking transition (test accuracy first >= 50%) against the documents' critical value."""
    c_at = []
    for _, r in runs:
        if r["t50"] is None:
            continue
        i = r["series"]["epoch"].index(r["t50"])
        c_at.append((r["series"]["C"][i], r["series"]["C_sgd"][i]))
    if not c_at:
        return []
    cm = float(np.median([a for a, _ in c_at]))
    csm = float(np.median([b for _, b in c_at]))
    lo, hi = 0.5, 2.0
    return [Row(
        prediction="C at the grokking transition (test acc first >= 50%) is critical (C ≈ 1)",
        documents_value=claim("grokking_C_critical") if _has_claim("grokking_C_critical")
        else claim("consolidation_regimes"),
        measured=cm, uncertainty=None,
        error=f"median C = {fmt(cm)}, median C_sgd = {fmt(csm)} over {len(c_at)} runs; "
              f"range of C: [{fmt(min(a for a, _ in c_at))}, {fmt(max(a for a, _ in c_at))}]",
        verdict="holds" if lo <= cm <= hi else "fails",
        notes=f"tolerance: C in [{lo}, {hi}] (a factor 2 around 1); C = ||grad L||^2/(D d) with the "
              "monitor's D at the full batch, gradients in float64")]


def _f(x) -> str:
    return "∞" if x == math.inf else fmt(x)


def _measured(s: dict):
    """Median |error| in %, or a text when the predictor missed (never fired) in half the runs or more."""
    if s["fired"] == 0:
        return "never fired"
    if not math.isfinite(s["median_rel_err"]):
        return f"missed in {s['n_runs'] - s['fired']}/{s['n_runs']} runs"
    return 100 * s["median_rel_err"]


def _has_claim(cid: str) -> bool:
    from ..base import claims

    return cid in claims()
