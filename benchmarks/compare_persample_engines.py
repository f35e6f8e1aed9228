"""Per-sample gradient norm engines on the monitor's workload matrix: hhld, Opacus 1.6, torch.func (issue 10).

    python benchmarks/compare_persample_engines.py [--quick] [--markdown] [--json FILE] [--rounds 15]
                                                   [--block 3] [--threads 1] [--only gpt_sdpa,vit] [--no-opacus]
                                                   [--func-chunk 8] [--quiet]

Engines, each asked for the per-sample squared gradient norms ``||grad l_i||^2`` (summed over the parameters
it covers) of one training step of the model as a user wrote it:

* ``hhld`` -- :class:`hhld.torch.persample.PerSampleSqNorms` (the monitor's engine; ``conv_estimator="exact"``);
* ``opacus`` -- Opacus ``GradSampleModule`` (hooks mode: materialised per-sample gradients, its own rules for
  Linear / Conv / Embedding / LayerNorm / GroupNorm / ..., its ``torch.func`` fallback for any other module
  with parameters), ``batch_first`` set from the workload, ``loss_reduction="mean"``; the per-sample norms
  formed the way Opacus's DP optimizer forms them (one norm per parameter, stacked);
* ``ghost`` -- Opacus ``GradSampleModuleFastGradientClipping(use_ghost_clipping=True)``: norms without
  per-sample gradients (``get_norm_sample()`` after the ordinary backward; no DP optimizer, no second pass);
* ``opacus+fix`` / ``ghost+fix`` -- the same after ``opacus.validators.ModuleValidator.fix`` (what Opacus
  tells a user to run: ``nn.LSTM`` / ``nn.GRU`` / ``nn.MultiheadAttention`` replaced by ``DPLSTM`` / ``DPGRU``
  / ``DPMultiheadAttention`` with the same weights). Only where ``fix`` changes the model; where it changes the
  *function* (BatchNorm -> GroupNorm) the variant is "not comparable". For a sequence-first input the Opacus
  engines take ``batch_first=False``; where that crashes they are retried with ``batch_first=True`` (what the
  hooked modules may actually see) and both outcomes are kept;
* ``layerfunc`` -- ``torch.func`` as the per-layer engine: ``GradSampleModule(force_functorch=True)`` (a
  ``vmap(grad)`` over each hooked module, from its captured input and output gradient);
* ``func`` -- plain ``torch.func``: ``vmap(grad(per-sample loss))`` over the whole model through
  ``functional_call``, ``chunk_size=--func-chunk``, after the ordinary step (a monitor cannot replace the
  user's backward); ``randomness="different"`` on models with dropout (masks differ from the step's).

Per workload and engine:

* coverage -- the fraction of the trainable dimension with per-sample norms (0 when the engine refuses the
  model or crashes; the error message is kept);
* exactness -- ``max_i |n_i - r_i| / r_i`` over the batch, ``n_i`` the engine's norm, ``r_i`` the float64
  brute-force one over the same covered parameters: ONE forward pass of a float64 copy of the model the engine
  ran, replayed with the RNG state of the engine's step (same dropout masks), ``autograd.grad`` per sample
  (``tests/torch/workloads.py``: ``per_sample_grads_graph``, ``reference_twin``); train-mode BatchNorm with its
  batch statistics held fixed (the matrix's definition);
* overhead -- one training step (forward, backward, per-sample norms, ``SGD.step``) over a plain step, 1 thread,
  ``--rounds`` interleaved rounds of ``--block`` steps per engine (order rotated each round): the ratio of the
  median process CPU times (``time.process_time``: the work of the step itself, the robust figure on a shared
  machine), and of the wall-clock medians and 10th percentiles. Engines that crash or refuse are not timed.

Workloads: the matrix's (``tests/torch/workloads.py``): nanoGPT with SDPA (dropout, B != T; B == T; no
dropout), with ``nn.MultiheadAttention``, LSTM and GRU in both layouts, the CNN with BatchNorm in eval mode
(running statistics) and in train mode, the ViT, frozen + sparse embedding, GPT-2 from a ``transformers``
config (when installed); plus the GPT and LSTM of ``benchmarks/bench_monitor_overhead.py`` at their sizes
(``bench_gpt``, ``bench_lstm``: overhead at a realistic width). ``--quick``: a smoke subset, 2 rounds of 1 step.
The results (with every step time) go to ``--json`` (default ``runs/compare_persample_engines.json``).
Opacus is optional (``pip install 'hhld[compare]'`` or ``pip install opacus --no-deps opt_einsum``): without it
the Opacus columns read "not installed".
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import datetime
import importlib.util
import json
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "torch"))  # the workload matrix and its float64 reference
sys.path.insert(0, str(ROOT / "benchmarks"))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

import bench_monitor_overhead as BMO  # noqa: E402
import workloads as W  # noqa: E402
from hhld.torch.persample import PerSampleSqNorms  # noqa: E402

ENGINES = ("hhld", "opacus", "opacus+fix", "ghost", "ghost+fix", "layerfunc", "func")
OPACUS_ENGINES = ("opacus", "opacus+fix", "ghost", "ghost+fix", "layerfunc")
DATA_SEED, RNG_SEED = 3, 1234


# ====================================================================== cases
@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    wl: W.Workload
    bn_eval: bool = False       # BatchNorm modules in eval mode (running statistics), the rest in train mode
    note: str = ""

    @property
    def stochastic(self):
        return self.wl.stochastic

    @property
    def bn_train(self):
        return bool(self.wl.coupled) and not self.bn_eval


def _bench_workload(key, per_sample, loss):
    desc, build, data, batch, _ = BMO.WORKLOADS[key]

    def data2(B, seed):
        x, y = data(B, torch.Generator().manual_seed(seed))
        return (x,), y

    return W.Workload(f"bench_{key}", "-", W._seeded(build), data2, loss, per_sample, batch=batch,
                      reference="graph", stochastic=key == "gpt", note=desc)


def _hf_workload():
    def data(B, seed):
        seq = W._skewed((B, W.SEQ), W.VOCAB, W._gen(seed))
        return (seq,), seq

    def loss(out, y):
        return W.hf_per_sample(out, y).mean()

    return dataclasses.replace(W.HF_WORKLOAD, data=data, loss=loss)


def cases(quick: bool) -> list[Case]:
    M = W.WORKLOADS
    out = [Case(n, M[n]) for n in ("gpt_sdpa", "gpt_sdpa_BeqT", "gpt_sdpa_nodrop", "gpt_mha", "lstm_tbf_cls",
                                   "lstm_bf_tag", "gru_tbf_tag", "gru_bf_cls")]
    out += [Case("cnn_bn_eval", M["cnn_bn"], bn_eval=True, note="BatchNorm in eval mode (running statistics)"),
            Case("cnn_bn_train", M["cnn_bn"], note="BatchNorm in train mode (couples the samples)"),
            Case("vit", M["vit"]), Case("frozen_sparse", M["frozen_sparse"])]
    if importlib.util.find_spec("transformers") is not None:
        out.append(Case("hf_gpt2", _hf_workload(), note="GPT2LMHeadModel from a GPT2Config, no download"))
    out += [Case("bench_gpt", _bench_workload("gpt", _bench_tokens_per_sample, BMO._ce_tokens)),
            Case("bench_lstm", _bench_workload("lstm", W.cls_per_sample, BMO._ce))]
    if quick:
        keep = ("gpt_sdpa", "gpt_sdpa_nodrop", "lstm_bf_tag", "cnn_bn_train", "frozen_sparse")
        out = [c for c in out if c.name in keep]
    return out


def _bench_tokens_per_sample(out, y):
    return F.cross_entropy(out.transpose(1, 2), y, reduction="none").mean(1)


# ====================================================================== models and data
def have_opacus() -> bool:
    try:
        import opacus  # noqa: F401
        return True
    except ImportError:
        return False


def set_mode(model: nn.Module, case: Case) -> nn.Module:
    model.train()
    if case.bn_eval:
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
    return model


def build(case: Case, fixed: bool = False) -> nn.Module:
    """The model of the case (seeded), or Opacus's ``ModuleValidator.fix`` of it (same weights)."""
    model = case.wl.build()
    if fixed:
        from opacus.validators import ModuleValidator
        model = ModuleValidator.fix(model)
    return set_mode(model, case)


def fix_status(case: Case) -> tuple[str, str | None]:
    """What ``ModuleValidator.fix`` does to the case's model: ``("none", None)`` (it leaves it as it is),
    ``("same", replaced)`` (modules replaced, same function: float64, eval mode, same batch),
    ``("changed", why)`` (a different function: not comparable) or ``("crash", error)``."""
    from opacus.validators import ModuleValidator
    base = case.wl.build()
    if not ModuleValidator.validate(base, strict=False):
        return "none", None
    fixed = ModuleValidator.fix(case.wl.build())
    swaps = {(type(m).__name__, type(fixed.get_submodule(n)).__name__) for n, m in base.named_modules()
             if n and type(fixed.get_submodule(n)) is not type(m)}
    replaced = ", ".join(sorted(f"{a}->{b}" for a, b in swaps))
    inputs, _ = case.wl.data(case.wl.batch, DATA_SEED)
    with torch.no_grad():
        a = W._call(copy.deepcopy(base).double().eval(), case.wl, tuple(W._to64(t) for t in inputs))
        try:
            b = W._call(copy.deepcopy(fixed).double().eval(), case.wl, tuple(W._to64(t) for t in inputs))
        except Exception as exc:  # noqa: BLE001
            return "crash", str(EngineError(f"forward of the fixed model ({replaced})", exc))
    diff = float((a - b).abs().max() / a.abs().max())
    if diff > 1e-9:
        return "changed", f"fix changes the function ({replaced}; outputs differ by {diff:.2g} relative)"
    return "same", replaced


def twin(case: Case, fixed: bool) -> nn.Module:
    """A float64 copy for the reference (``workloads.reference_twin``: sparse embeddings dense, train-mode
    BatchNorm with its batch statistics held fixed)."""
    wl = dataclasses.replace(case.wl, build=lambda: build(case, fixed))
    t = W.reference_twin(wl, build(case, fixed).state_dict(), fixed_stats=case.bn_train)
    return set_mode(t, case)


def reference_sq_norms(case: Case, fixed: bool, rng) -> dict:
    """name -> (B,) float64 per-sample squared norms of every trainable parameter (one-graph brute force)."""
    inputs, y = case.wl.data(case.wl.batch, DATA_SEED)
    with torch.random.fork_rng(devices=[]):
        tw = twin(case, fixed)
        names = [n for n, p in tw.named_parameters() if p.requires_grad]
        G = W.per_sample_grads_graph(tw, case.wl, names, inputs, y, rng)
    out, o = {}, 0
    params = dict(tw.named_parameters())
    for n in names:
        k = params[n].numel()
        out[n] = (G[:, o:o + k] ** 2).sum(1)
        o += k
    return out


# ====================================================================== engines
def _grad_sample(p):
    """Opacus's per-sample gradients of ``p`` (a list when it accumulated several passes: concatenated)."""
    return p.grad_sample if torch.is_tensor(p.grad_sample) else torch.cat(p.grad_sample)


class EngineError(RuntimeError):
    """The engine refused the model or crashed; ``stage`` says where."""

    def __init__(self, stage, exc):
        self.stage = stage
        msg = f"{type(exc).__name__}: {exc}".replace("\n", " ")
        super().__init__(f"{stage}: {msg[:400]}")


class Runner:
    """One model + SGD + engine; ``step()`` runs a training step and returns the per-sample squared norms
    (``(B,)`` float64, per-sample losses ``l_i`` unscaled) or None for ``plain``."""

    def __init__(self, case: Case, engine: str, func_chunk: int = 8, batch_first: bool | None = None):
        self.case, self.engine, self.wl = case, engine, case.wl
        # Opacus's batch_first (one flag for every hooked module): from the model's input unless given
        self.batch_first = case.wl.batch_dim == 0 if batch_first is None else batch_first
        self.fixed = engine.endswith("+fix")
        self.inputs, self.y = self.wl.data(self.wl.batch, DATA_SEED)
        self.B = self.wl.batch
        self.func_chunk = func_chunk
        self.names_of = {}
        try:
            self.model = build(case, self.fixed)
        except Exception as exc:  # noqa: BLE001 - every failure is a reported outcome
            raise EngineError("fix", exc) from exc
        self.trainable = {n: p for n, p in self.model.named_parameters() if p.requires_grad}
        self.dim = sum(p.numel() for p in self.trainable.values())
        self.wrapped = self.model
        try:
            self._attach()
        except Exception as exc:  # noqa: BLE001
            raise EngineError("wrap", exc) from exc
        self.opt = torch.optim.SGD(self.trainable.values(), lr=1e-3)
        self.covered: list[str] = []

    def _attach(self):
        e = self.engine.split("+")[0]
        bf = self.batch_first
        if e == "hhld":
            axis = self.wl.batch_dim if self.wl.pass_batch_size else None
            self.eng = PerSampleSqNorms(self.model, conv_estimator="exact", batch_axis=axis).attach()
        elif e == "opacus":
            from opacus import GradSampleModule
            self.wrapped = GradSampleModule(self.model, batch_first=bf, loss_reduction="mean")
        elif e == "layerfunc":
            from opacus import GradSampleModule
            self.wrapped = GradSampleModule(self.model, batch_first=bf, loss_reduction="mean", force_functorch=True)
        elif e == "ghost":
            from opacus.grad_sample import GradSampleModuleFastGradientClipping
            self.wrapped = GradSampleModuleFastGradientClipping(self.model, batch_first=bf, loss_reduction="mean",
                                                                use_ghost_clipping=True)
        elif e == "func":
            self._func = self._make_func()

    def _make_func(self):
        from torch.func import functional_call, grad, vmap
        model, wl = self.model, self.wl
        bd, yd = wl.batch_dim, wl.ydim
        frozen = {n: p for n, p in model.named_parameters() if not p.requires_grad}
        buffers = dict(model.named_buffers())

        def one(params, xs, yi):
            out = functional_call(model, ({**frozen, **params}, buffers), tuple(t.unsqueeze(bd) for t in xs))
            return wl.per_sample_loss(out, yi.unsqueeze(yd))[0]

        rand = "different" if wl.stochastic else "error"
        f = vmap(grad(one), in_dims=(None, tuple(bd for _ in self.inputs), yd), randomness=rand,
                 chunk_size=self.func_chunk)

        def norms():
            params = {n: p.detach() for n, p in self.trainable.items()}
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*performance drop.*")
                g = f(params, self.inputs, self.y)
            self.covered = list(g)
            return sum(v.reshape(v.shape[0], -1).double().pow(2).sum(1) for v in g.values())

        return norms

    # ------------------------------------------------------------------ one step
    def forward_backward(self):
        self.opt.zero_grad(set_to_none=True)
        if self.engine.startswith(("opacus", "ghost", "layerfunc")):
            self.wrapped.zero_grad(set_to_none=True)
            for p in self.trainable.values():  # ghost: no norm of an earlier step may be read as this one's
                if hasattr(p, "_norm_sample"):
                    del p._norm_sample
        out = self.wrapped(*self.inputs)
        loss = self.wl.loss(out, self.y)
        loss.backward()

    def norms(self):
        e = self.engine.split("+")[0]
        if e == "plain":
            return None
        if e == "hhld":
            n = self.eng.passes[-1]
            self.covered = sorted(self.eng.covered_last)
            self.eng.reset()
            self.eng.step_done()
            if n is None:
                raise RuntimeError("; ".join(self.eng.notes[-2:]) or "no norms for the pass")
            return n.double() * self.B ** 2  # the engine's norms carry the mean's 1/B
        if e in ("opacus", "layerfunc"):
            # as Opacus's DP optimizer forms them: one norm per parameter, stacked over the parameters
            have = [(n, p) for n, p in self.trainable.items() if getattr(p, "grad_sample", None) is not None]
            self.covered = [n for n, _ in have]
            rows = {n: _grad_sample(p) for n, p in have}
            try:
                per = torch.stack([g.reshape(len(g), -1).norm(2, dim=-1) for g in rows.values()], dim=1)
            except RuntimeError as exc:
                bad = [f"{n}: {len(g)} rows" for n, g in rows.items() if len(g) != self.B]
                raise RuntimeError(f"{exc} [batch {self.B}; {', '.join(bad)}]") from exc
            if per.shape[0] != self.B:
                raise RuntimeError(f"per-sample gradients with {per.shape[0]} rows for a batch of {self.B}")
            return per.double().pow(2).sum(1)
        if e == "ghost":
            n = self.wrapped.get_norm_sample()
            self.covered = list(self.trainable)
            if n.shape[0] != self.B:
                raise RuntimeError(f"norms with {n.shape[0]} rows for a batch of {self.B}")
            return n.double().pow(2)
        if e == "func":
            return self._func()
        raise ValueError(e)

    def step(self):
        self.forward_backward()
        n = self.norms()
        self.opt.step()
        return n


class Plain(Runner):
    def __init__(self, case, func_chunk=8):
        super().__init__(case, "plain", func_chunk)


# ====================================================================== measurements
def measure_exactness(case: Case, engine: str, func_chunk: int, refs: dict,
                      batch_first: bool | None = None) -> tuple[dict, Runner | None]:
    """Coverage and the max relative error of one step at the initial weights (see the module doc)."""
    res = {"status": "ok", "error": None, "coverage": 0.0, "max_rel_err": None}
    try:
        r = Runner(case, engine, func_chunk, batch_first)
    except EngineError as exc:
        res.update(status="refused" if exc.stage == "wrap" else "crash", error=str(exc))
        return res, None
    torch.manual_seed(RNG_SEED)
    rng = torch.get_rng_state()
    try:
        r.forward_backward()
        n = r.norms()
    except Exception as exc:  # noqa: BLE001
        res.update(status="crash", error=str(EngineError("step", exc)))
        return res, None
    if not bool(torch.isfinite(n).all()):
        res.update(status="crash", error=f"step: non-finite per-sample norms {n.tolist()}")
        return res, None
    key = "fixed" if r.fixed else "base"
    if key not in refs:
        refs[key] = reference_sq_norms(case, r.fixed, rng if case.stochastic else None)
    ref = refs[key]
    covered = [c for c in r.covered if c in ref]
    unknown = [c for c in r.covered if c not in ref]
    if unknown:
        res.update(status="crash", error=f"covered parameters not in the model: {unknown}")
        return res, None
    want = sum(ref[c] for c in covered) if covered else torch.zeros(r.B, dtype=torch.float64)
    rel = (n - want).abs() / want.clamp_min(1e-300)
    res.update(coverage=sum(r.trainable[c].numel() for c in covered) / r.dim, max_rel_err=float(rel.max()),
               n_covered=len(covered), n_params=len(r.trainable),
               uncovered=[c for c in r.trainable if c not in covered])
    if engine == "func" and case.stochastic:
        res["masks_differ"] = True  # vmap(randomness="different") draws its own dropout masks
    if engine == "hhld":
        res["hhld_reasons"] = {k: v for k, v in r.eng.reasons.items()}
        res["hhld_coupled"] = sorted(r.eng.coupled)
    if engine.split("+")[0] in ("opacus", "layerfunc"):
        # per-parameter errors: where a wrong sum comes from
        worst = None
        for c in covered:
            g = _grad_sample(r.trainable[c])
            if len(g) != r.B:
                continue
            e = float(((g.reshape(r.B, -1).double().pow(2).sum(1) - ref[c]).abs() / ref[c].clamp_min(1e-300)).max())
            if worst is None or e > worst[1]:
                worst = (c, e)
        if worst:
            res["worst_param"] = {"name": worst[0], "max_rel_err": worst[1]}
    return res, r


def q10(ts):
    """The 10th percentile (interpolated within the data: no extrapolation below the fastest step)."""
    return statistics.quantiles(ts, n=10, method="inclusive")[0] if len(ts) > 1 else ts[0]


def time_engines(runners: dict, rounds: int, block: int, warmup: int = 2) -> dict:
    """Interleaved rounds (engine order rotated each round). Per engine: wall-clock median and 10th percentile,
    and the median process CPU time (``time.process_time``: what the step itself consumed, insensitive to the
    time slices other jobs take on a shared machine), each as a ratio to ``plain``."""
    keys = list(runners)
    failed = {}
    for k in keys:
        try:
            for _ in range(warmup):
                runners[k].step()
        except Exception as exc:  # noqa: BLE001
            failed[k] = str(EngineError("timing", exc))
    keys = [k for k in keys if k not in failed]
    wall = {k: [] for k in keys}
    cpu = {k: [] for k in keys}
    for rd in range(rounds):
        order = keys[rd % len(keys):] + keys[:rd % len(keys)]
        for k in order:
            for _ in range(block):
                c0, t0 = time.process_time(), time.perf_counter()
                runners[k].step()
                wall[k].append(time.perf_counter() - t0)
                cpu[k].append(time.process_time() - c0)
    stats = {}
    for k in keys:
        stats[k] = {"ms": 1e3 * statistics.median(wall[k]), "q10_ms": 1e3 * q10(wall[k]),
                    "cpu_ms": 1e3 * statistics.median(cpu[k]), "times_ms": [round(1e3 * t, 3) for t in wall[k]],
                    "cpu_times_ms": [round(1e3 * t, 3) for t in cpu[k]]}
    out = {"plain": stats.pop("plain")}
    p = out["plain"]
    for k, st in stats.items():
        st.update(median_ratio=st["ms"] / p["ms"], q10_ratio=st["q10_ms"] / p["q10_ms"],
                  cpu_ratio=st["cpu_ms"] / p["cpu_ms"])
        out[k] = st
    for k, msg in failed.items():
        out[k] = {"error": msg}
    return out


def run_case(case: Case, engines, args, log) -> dict:
    res = {"case": case.name, "workload": case.wl.name, "batch": case.wl.batch, "note": case.note or case.wl.note,
           "engines": {}}
    fix = None
    if any(e in OPACUS_ENGINES for e in engines):
        fix, fix_msg = fix_status(case)
        res["fix"] = {"status": fix, "message": fix_msg}
    refs: dict = {}
    runners = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for e in engines:
            if e.endswith("+fix") and fix == "none":
                res["engines"][e] = {"status": "n/a", "error": "ModuleValidator.fix leaves this model as it is"}
                continue
            if e.endswith("+fix") and fix in ("changed", "crash"):
                res["engines"][e] = {"status": "not comparable" if fix == "changed" else "crash", "error": fix_msg,
                                     "coverage": 0.0}
                continue
            t0 = time.perf_counter()
            r_ex, _ = measure_exactness(case, e, args.func_chunk, refs)
            bf = None
            if e in OPACUS_ENGINES and case.wl.batch_dim == 1:
                r_ex["batch_first"] = False
                if r_ex["status"] != "ok":
                    # a sequence-first input: the flag says batch_first=False, but the modules Opacus hooks may
                    # see the batch first (a classifier head after out[-1]; DPLSTM's RNNLinear always does)
                    alt, _ = measure_exactness(case, e, args.func_chunk, refs, batch_first=True)
                    if alt["status"] == "ok":
                        alt.update(batch_first=True, with_batch_first_false=r_ex["error"])
                        r_ex, bf = alt, True
                    else:
                        r_ex["with_batch_first_true"] = alt["error"]
            res["engines"][e] = r_ex
            if r_ex["status"] == "ok":
                runners[e] = Runner(case, e, args.func_chunk, bf)
            log(f"  {case.name} {e}: {r_ex['status']} cov {r_ex.get('coverage', 0):.3f} "
                f"err {r_ex.get('max_rel_err')} ({time.perf_counter() - t0:.1f} s)"
                + (f" -- {r_ex['error'][:160]}" if r_ex.get("error") else ""))
        if args.rounds > 0 and runners:
            torch.manual_seed(RNG_SEED)
            timing = time_engines({"plain": Plain(case, args.func_chunk), **runners}, args.rounds, args.block)
            res["plain"] = timing.pop("plain")
            for e, t in timing.items():
                res["engines"][e]["timing"] = t
                if "error" in t:
                    res["engines"][e]["status"] = "crash"
                    res["engines"][e]["error"] = t["error"]
    return res


# ====================================================================== report
LABELS = {"hhld": "hhld PerSampleSqNorms", "opacus": "Opacus hooks", "opacus+fix": "Opacus hooks after fix",
          "ghost": "Opacus ghost", "ghost+fix": "Opacus ghost after fix",
          "layerfunc": "per-layer torch.func (Opacus force_functorch)", "func": "torch.func vmap(grad)"}


def _note(notes: list, text: str) -> int:
    if text not in notes:
        notes.append(text)
    return notes.index(text) + 1


def accuracy_cell(r: dict, notes: list) -> str:
    st = r["status"]
    if st == "n/a":
        return "="
    if st in ("not installed", "skipped"):
        return st
    if st != "ok":
        msg = r.get("error") or st
        if r.get("with_batch_first_true"):
            msg = f"with batch_first=False: {msg}; with batch_first=True: {r['with_batch_first_true']}"
        return f"**{st}** [{_note(notes, msg)}]"
    err = r["max_rel_err"]
    flag = ""
    if err > 1e-3:
        flag = " (other dropout masks)" if r.get("masks_differ") else " **WRONG**"
    cov = r["coverage"]
    txt = f"{cov:.2f}" if cov == 1 or cov < 0.995 else f"{cov:.4f}"  # a small hole stays visible
    txt = f"{txt} · {err:.1e}{flag}"
    if r.get("with_batch_first_false"):
        txt += f" [{_note(notes, 'with batch_first=False: ' + r['with_batch_first_false'])}, batch_first=True]"
    return txt


def overhead_cell(r: dict) -> str:
    t = r.get("timing") or {}
    if "cpu_ratio" not in t:
        return "-" if r["status"] != "n/a" else "="
    wrong = " (wrong)" if r["status"] == "ok" and r["max_rel_err"] > 1e-3 and not r.get("masks_differ") else ""
    return f"**{t['cpu_ratio']:.2f}x**{wrong} (wall {t['median_ratio']:.2f}x, q10 {t['q10_ratio']:.2f}x)"


def table(results: list, engines, markdown: bool) -> str:
    notes: list = []
    labels = [LABELS[e] for e in engines]
    acc = [[f"{r['case']} (B={r['batch']})"] + [accuracy_cell(r["engines"][e], notes) for e in engines]
           for r in results]
    ovh = []
    for r in results:
        p = r.get("plain")
        pl = f"{p['cpu_ms']:.1f} ms (wall {p['ms']:.1f})" if p else "-"
        ovh.append([f"{r['case']} (B={r['batch']})", pl] + [overhead_cell(r["engines"][e]) for e in engines])

    def fmt(head, rows):
        if markdown:
            return ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)] + \
                   ["| " + " | ".join(x) + " |" for x in rows]
        w = [max(len(str(x[i])) for x in [head] + rows) for i in range(len(head))]
        return ["  ".join(str(x).ljust(w[i]) for i, x in enumerate(row)).rstrip() for row in [head] + rows]

    lines = ["Coverage · exactness (coverage: fraction of the trainable dimension with per-sample norms; max "
             "relative error of the per-sample squared norms against the float64 one-graph brute force)", ""]
    lines += fmt(["workload"] + labels, acc)
    lines += ["", "Overhead: one training step with the engine over a plain step -- median process CPU time "
              "(wall-clock median, wall-clock 10th percentile)", ""]
    lines += fmt(["workload", "plain step CPU"] + labels, ovh)
    lines.append("")
    lines += [f"[{i}] {n}" for i, n in enumerate(notes, 1)]
    return "\n".join(lines)


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
            "threads": torch.get_num_threads()}
    for mod in ("opacus", "transformers"):
        try:
            info[mod] = __import__(mod).__version__
        except ImportError:
            info[mod] = None
    return info


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: 5 workloads, 2 rounds of 1 step")
    ap.add_argument("--rounds", type=int, default=None, help="interleaved timing rounds (default 15; quick 2)")
    ap.add_argument("--block", type=int, default=None, help="steps per engine per round (default 3; quick 1)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--only", default=None, help="comma-separated workload names")
    ap.add_argument("--no-opacus", action="store_true", help="leave the Opacus engines out")
    ap.add_argument("--func-chunk", type=int, default=8, help="torch.func vmap chunk_size")
    ap.add_argument("--markdown", action="store_true", help="print the table as markdown")
    ap.add_argument("--json", default="runs/compare_persample_engines.json", help="where to write the results")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    if args.rounds is None:
        args.rounds = 2 if args.quick else 15
    if args.block is None:
        args.block = 1 if args.quick else 3
    if args.rounds < 0 or args.block < 1 or args.threads < 1 or args.func_chunk < 1:
        ap.error("--rounds must be >= 0 and --block, --threads, --func-chunk >= 1")
    torch.set_num_threads(args.threads)
    all_cases = cases(args.quick and not args.only)
    if args.only:
        want = args.only.split(",")
        known = {c.name for c in cases(False)}
        bad = [w for w in want if w not in known]
        if bad:
            ap.error(f"unknown workload(s) {bad}; choose from {sorted(known)}")
        all_cases = [c for c in cases(False) if c.name in want]
    opacus = have_opacus() and not args.no_opacus
    engines = [e for e in ENGINES if opacus or e not in OPACUS_ENGINES]

    def log(msg):
        if not args.quiet:
            print(msg, file=sys.stderr, flush=True)

    t0 = time.time()
    load0 = os.getloadavg()
    info = machine()
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(f"{when}; torch {info['torch']}, opacus {info['opacus'] or 'not installed'}, transformers "
          f"{info['transformers']}; {info['cpu']} ({info['cpus']} CPUs), {args.threads} thread(s); "
          f"load average at start {tuple(round(x, 2) for x in load0)}")
    results = []
    for c in all_cases:
        res = run_case(c, engines, args, log)
        if not opacus:
            for e in OPACUS_ENGINES:
                res["engines"][e] = {"status": "skipped" if args.no_opacus else "not installed", "error": None}
        results.append(res)
    load1 = os.getloadavg()
    shown = list(ENGINES) if not args.no_opacus else engines
    out = {"date": when, "command": " ".join([Path(sys.argv[0]).name] + (argv if argv is not None else sys.argv[1:])),
           "machine": info, "load_start": load0, "load_end": load1, "rounds": args.rounds, "block": args.block,
           "func_chunk": args.func_chunk, "engines": shown, "results": results}
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=1, default=str))
    print(table(results, shown, args.markdown))
    print(f"\nload average at end {tuple(round(x, 2) for x in load1)}; {time.time() - t0:.0f} s"
          + (f"; wrote {args.json}" if args.json else ""))
    return out


if __name__ == "__main__":
    main()
