"""When do the monitor's events fire relative to a sharp loss drop? A nanoGPT-style decoder on a copy task (CPU).

    python benchmarks/monitor_events_gpt.py [--seeds 0 1 2] [--attn sdpa,mha] [--optimizer sgd,adamw]
                                            [--steps 500] [--out runs/monitor_events] [--markdown] [--quick] [--quiet]

Workload. A decoder with token embedding + learned positions ``pos(arange(T))``, pre-LayerNorm blocks
(the workload matrix's ``Block`` of ``tests/torch/workloads.py``: causal attention through
``F.scaled_dot_product_attention`` (``sdpa``) or ``nn.MultiheadAttention`` (``mha``), GELU MLP), tied
output weights, nanoGPT's initialisation (every weight matrix N(0, 0.02), biases 0), no dropout. Task: sequences of ``2K`` tokens whose second half repeats the first (``K`` uniform tokens from a
vocabulary of ``V``); the model reads the first ``2K - 1`` tokens and the loss is the next-token cross-entropy
on the ``K`` positions of the second half (the first half is unpredictable). The loss sits on a plateau near
``ln V`` until the model learns to attend ``K - 1`` positions back, then falls to about 0 within a few tens
of steps. Fresh batches every step from a fixed-seed generator; weights from ``torch.manual_seed(seed)``.

Monitor settings, each on its own run of the same training (the monitor does not change training: the
per-step losses of the two runs are compared bit for bit and the JSON records it):

* ``default``: ``Monitor(model, optimizer)`` (the defaults: ``log_every`` = ``tier1_every`` =
  :data:`hhld.torch.monitor.DEFAULT_TIER1_EVERY`; the values used are in the table and the JSON);
* ``fine``: ``log_every=5, tier1_every=5`` (an event every 5 steps at the earliest).

The drop, from the per-step training losses ``l_t`` of the run (not from the monitor): ``s_t`` = centred
running mean of ``l_t`` over ``--smooth`` steps (shorter windows at the ends); plateau ``L_p`` = the maximum
of ``s_t``; final ``L_f`` = the mean of ``l_t`` over the last ``--final`` steps. ``t10``, ``t50``, ``t90``:
the first steps after the maximum where ``s_t <= L_p - q (L_p - L_f)`` for ``q`` = 0.1, 0.5, 0.9. ``t50``
("the drop") is the reference of every offset; ``t10`` is the drop's onset, ``t90`` its end. No drop (``L_p
- L_f < --min-drop``): the run's offsets are ``None``.

Events. An event's step is the last step of the logging interval whose row raised it (the step at which a
training loop could act on it). Sources: ``C`` (``||g||^2/(D d)``, ``D`` the measured SGD diffusion; what the
monitor's own regime and ``phase_transition`` use whenever tier 1 measured ``D`` in the interval) and
``C_sgd`` (the documents' ``||g||^2/(lr/B)``). For the ``C_sgd`` source the library's own
:class:`hhld.torch.quantities.RegimeTracker` and :class:`~hhld.torch.quantities.PhaseTransitionDetector`
(the monitor's thresholds, patience and drop factor) are replayed over the rows; for ``C`` the monitor's
events are used, and the same replay over the rows' ``C`` is checked to give them (``replay_matches``).
Event types: ``phase_transition``; ``regime -> R`` for each regime R entered (the first row's initial label
is not a change and is left out). Two baselines that are not monitor events, replayed over the same rows with
the same detector class (lookback 5 rows): the row loss falling 10% below its maximum of the last 5 rows, and
``C_sgd`` rising 3x above its minimum of the last 5 rows (``1/C_sgd`` falling 3x).

Output: a table (text; ``--markdown`` prints it as markdown too), and under ``--out``: ``events.json`` (every
run's per-step losses, rows, events, drop steps, offsets), ``events.md`` (the table) and ``monitor_plot.png``
(``mon.plot()`` of the first seed's ``fine`` SDPA run with the drop marked). ``--quick`` is a smoke run.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "torch"))  # the workload matrix's block

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import workloads as W  # noqa: E402
from torch import nn  # noqa: E402

from hhld.torch import Monitor  # noqa: E402
from hhld.torch.quantities import PhaseTransitionDetector, RegimeTracker  # noqa: E402

SETTINGS = {"default": {}, "fine": {"log_every": 5, "tier1_every": 5}}
ATTNS = ("sdpa", "mha")
OPTIMIZERS = {"sgd": 0.5, "adamw": 3e-3}   # name -> default learning rate (chosen for a plateau then a sharp drop)
SOURCES = ("C", "C_sgd")


# ---------------------------------------------------------------------------------------------- workload
class GPT(nn.Module):
    """nanoGPT-style decoder: ``tok(idx) + pos(arange(T))``, pre-LN blocks, final LayerNorm, tied output."""

    def __init__(self, V, T, E, H, L, attn):
        super().__init__()
        self.tok, self.pos = nn.Embedding(V, E), nn.Embedding(T, E)
        self.blocks = nn.Sequential(*[W.Block(E=E, H=H, p=0.0, attn=attn, causal=True) for _ in range(L)])
        self.ln_f = nn.LayerNorm(E)
        self.head = nn.Linear(E, V, bias=False)
        self.head.weight = self.tok.weight
        for name, p in self.named_parameters():  # nanoGPT's initialisation, the same for both attention variants
            if p.dim() >= 2:
                nn.init.normal_(p, 0.0, 0.02)
            elif name.endswith("bias"):
                nn.init.zeros_(p)

    def forward(self, idx):
        x = self.tok(idx) + self.pos(torch.arange(idx.shape[1], device=idx.device))
        return self.head(self.ln_f(self.blocks(x)))


def copy_batch(g, B, K, V):
    """``(inputs, targets)``: inputs the first ``2K - 1`` tokens of ``[a, a]``, targets the second half ``a``."""
    a = torch.randint(0, V, (B, K), generator=g)
    x = torch.cat([a, a], dim=1)
    return x[:, :-1], a


def copy_loss(logits, targets):
    K = targets.shape[1]
    return F.cross_entropy(logits[:, -K:].reshape(-1, logits.shape[-1]), targets.reshape(-1))


def train(cfg, attn, opt_name, seed, setting):
    """One monitored run; returns the per-step losses and the monitor (closed)."""
    torch.manual_seed(seed)
    model = GPT(cfg.vocab, 2 * cfg.K, cfg.width, cfg.heads, cfg.layers, attn)
    lr = cfg.lr if cfg.lr is not None else OPTIMIZERS[opt_name]
    opt = (torch.optim.SGD(model.parameters(), lr=lr) if opt_name == "sgd"
           else torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*preconditions each coordinate.*")  # AdamW: labelled rows
        mon = Monitor(model, opt, **SETTINGS[setting])
    g = torch.Generator().manual_seed(10_000 + seed)
    losses = []
    for _ in range(cfg.steps):
        x, y = copy_batch(g, cfg.batch, cfg.K, cfg.vocab)
        opt.zero_grad(set_to_none=True)
        loss = copy_loss(model(x), y)
        loss.backward()
        opt.step()
        mon.step(loss)
        losses.append(loss.item())
    mon.close()
    return losses, mon, lr


# ---------------------------------------------------------------------------------------------- the drop
def smooth(xs, width):
    """Centred running mean over ``width`` steps (shorter windows at the ends): no shift in time."""
    h = width // 2
    n = len(xs)
    pre = [0.0]
    for v in xs:
        pre.append(pre[-1] + v)
    return [(pre[min(n, i + h + 1)] - pre[max(0, i - h)]) / (min(n, i + h + 1) - max(0, i - h)) for i in range(n)]


def find_drop(losses, smooth_width=11, final=50, min_drop=0.5):
    """``{"plateau", "final", "t10", "t50", "t90"}`` of the loss curve (module docstring); ``t*`` None without a drop."""
    s = smooth(losses, smooth_width)
    i_max = max(range(len(s)), key=lambda i: s[i])
    L_p = s[i_max]
    tail = losses[-final:]
    L_f = sum(tail) / len(tail)
    out = {"plateau": L_p, "final": L_f, "t10": None, "t50": None, "t90": None, "smoothed": s}
    if not (L_p - L_f >= min_drop):
        return out
    for q in (0.1, 0.5, 0.9):
        level = L_p - q * (L_p - L_f)
        out[f"t{int(q * 100)}"] = next((i for i in range(i_max, len(s)) if s[i] <= level), None)
    return out


# ---------------------------------------------------------------------------------------------- events
#: baselines (not monitor events), replayed over the rows with the library's PhaseTransitionDetector (lookback 5
#: rows): name -> (row value fed to the detector, its drop factor). A fall of 1/C_sgd by 3 is a rise of C_sgd by 3.
BASELINES = {
    "loss falls 10% (vs max of last 5 rows)": (lambda r: r.get("loss"), 1 / 0.9),
    "C_sgd rises x3 (vs min of last 5 rows)": (lambda r: 1.0 / r["C_sgd"] if r.get("C_sgd") else None, 3.0),
}


def events_by_source(mon):
    """``{source: [{"step", "type", "value"}]}``: regime changes and phase-transition events replayed over the rows
    with the library's :class:`RegimeTracker` / :class:`PhaseTransitionDetector` (the monitor's settings) for the
    sources C and C_sgd; the monitor's own events (``"monitor"``); the baselines (``"baseline"``). Checks: the
    replay over C gives the monitor's own events when every row's regime came from C."""
    rows = mon.history
    out = {}
    for src in SOURCES:
        reg = RegimeTracker(mon.thresholds, mon.regime.patience)
        pt = PhaseTransitionDetector(mon.transitions.drop_factor, mon.transitions.lookback)
        evs, first = [], True
        for r in rows:
            C = r.get(src)
            regime, changed = reg.update(C)
            if changed:
                if not first:  # the first row's label is the initial one, not a change
                    evs.append({"step": r["step"], "type": f"regime -> {regime}", "value": C})
                first = False
            if pt.update(r["step"], C) is not None:
                evs.append({"step": r["step"], "type": "phase_transition", "value": C})
        out[src] = evs
    base = []
    for name, (value, factor) in BASELINES.items():
        det = PhaseTransitionDetector(factor, 5)
        base += [{"step": r["step"], "type": name, "value": value(r)} for r in rows
                 if det.update(r["step"], value(r)) is not None]
    out["baseline"] = sorted(base, key=lambda e: e["step"])
    own, seen_first = [], False
    for e in mon.events:
        if e["event"] == "phase_transition":
            own.append({"step": e["step"], "type": "phase_transition", "value": e["C_after"]})
        elif e["event"] == "regime":
            if seen_first:
                own.append({"step": e["step"], "type": f"regime -> {e['regime']}", "value": e["C"]})
            seen_first = True
    out["monitor"] = own
    sources = {r.get("regime_from") for r in rows}
    key = lambda evs: sorted((e["step"], e["type"]) for e in evs)  # noqa: E731
    checks = {"monitor_regime_sources": sorted(x for x in sources if x),
              "replay_matches": key(own) == key(out["C"]) if sources == {"C"} else None}
    return out, checks


def offsets(evs, drop):
    """Each event with its step relative to t50 (negative: before) and its phase: ``before`` the onset t10,
    ``during`` [t10, t90], ``after`` t90 (no drop: unchanged)."""
    t10, t50, t90 = drop["t10"], drop["t50"], drop["t90"]
    res = []
    for e in evs:
        d = dict(e)
        if t50 is not None:
            d["rel_t50"] = e["step"] - t50
            d["phase"] = "before" if e["step"] < t10 else ("during" if t90 is None or e["step"] <= t90 else "after")
        res.append(d)
    return res


# ---------------------------------------------------------------------------------------------- table
EVENT_SOURCES = (*SOURCES, "baseline")


def summarize(runs):
    """One line per (optimizer, attention, monitor setting, source, event type): every firing's step relative
    to t50 per seed, and the counts before the onset / during the drop / after it."""
    lines, groups = [], {}
    for r in runs:
        label = f"{r['setting']} {r['log_every']}/{r['tier1_every']}"
        groups.setdefault((r["optimizer"], r["attn"], label), []).append(r)
    for (opt, attn, setting), rs in groups.items():
        for src in EVENT_SOURCES:
            types = sorted({e["type"] for r in rs for e in r["events"][src]},
                           key=lambda t: (t != "phase_transition", t))
            if src != "baseline" and "phase_transition" not in types:
                types.insert(0, "phase_transition")  # a detector that never fired is a result too
            for typ in types:
                counts = {"before": 0, "during": 0, "after": 0}
                per_seed, fired = [], 0
                for r in rs:
                    evs = [e for e in r["events"][src] if e["type"] == typ]
                    fired += bool(evs)
                    per_seed.append([e.get("rel_t50") for e in evs])
                    for e in evs:
                        if "phase" in e:
                            counts[e["phase"]] += 1
                lines.append({"optimizer": opt, "attn": attn, "setting": setting, "source": src, "event": typ,
                              "seeds": [r["seed"] for r in rs], "fired": fired, "runs": len(rs),
                              "rel_t50": per_seed, **counts})
    return lines


def _firings(vals, show=3):
    if not vals:
        return "never"
    txt = " ".join("?" if v is None else f"{v:+d}" for v in vals[:show])
    return txt + (f" (+{len(vals) - show} more)" if len(vals) > show else "")


def table_markdown(lines):
    out = ["| optimizer | attention | monitor (log_every/tier1_every) | source | event | fired | steps rel. t50, "
           "per seed (seeds "
           "separated by ;) | before t10 / t10-t90 / after t90 |", "|" + "---|" * 8]
    for ln in lines:
        src = "—" if ln["source"] == "baseline" else ln["source"]
        ev = f"baseline: {ln['event']}" if ln["source"] == "baseline" else f"`{ln['event']}`"
        out.append(f"| {ln['optimizer']} | {ln['attn']} | {ln['setting']} | {src} | {ev} | "
                   f"{ln['fired']}/{ln['runs']} | {'; '.join(_firings(v) for v in ln['rel_t50'])} | "
                   f"{ln['before']} / {ln['during']} / {ln['after']} |")
    return "\n".join(out)


def table_text(lines):
    cols = ["opt", "attn", "monitor", "source", "event", "fired", "steps rel. t50 (per seed)", "before/during/after"]
    rows = [[ln["optimizer"], ln["attn"], ln["setting"], ln["source"], ln["event"][:40],
             f"{ln['fired']}/{ln['runs']}", "; ".join(_firings(v) for v in ln["rel_t50"]),
             f"{ln['before']}/{ln['during']}/{ln['after']}"] for ln in lines]
    w = [max(len(c), *(len(r[i]) for r in rows)) if rows else len(c) for i, c in enumerate(cols)]
    fmt = "  ".join(f"{{:<{x}}}" for x in w)
    return "\n".join([fmt.format(*cols), fmt.format(*["-" * x for x in w])] + [fmt.format(*r).rstrip() for r in rows])


#: the summary's event kinds: label -> (source, predicate on the event type)
KINDS = {
    "monitor `phase_transition` (C)": ("C", lambda t: t == "phase_transition"),
    "regime change (C)": ("C", lambda t: t.startswith("regime")),
    "`phase_transition` replayed on C_sgd": ("C_sgd", lambda t: t == "phase_transition"),
    "regime change (C_sgd)": ("C_sgd", lambda t: t.startswith("regime")),
    "baseline: C_sgd rises x3": ("baseline", lambda t: t.startswith("C_sgd rises")),
    "baseline: loss falls 10%": ("baseline", lambda t: t.startswith("loss falls")),
}


def summary(runs, lead_window):
    """Per (optimizer, monitor setting), over attention variants and seeds: the drop's onset and end relative to
    t50, and per event kind the first firing from ``t10 - lead_window`` on (range over the runs where it fired)
    and the number of firings earlier than that."""
    groups = {}
    for r in runs:
        if r["drop"]["t50"] is not None:
            groups.setdefault((r["optimizer"], f"{r['setting']} {r['log_every']}/{r['tier1_every']}"), []).append(r)
    out = []
    for (opt, setting), rs in groups.items():
        d = {"optimizer": opt, "setting": setting, "runs": len(rs),
             "t10_rel": [r["drop"]["t10"] - r["drop"]["t50"] for r in rs],
             "t90_rel": [r["drop"]["t90"] - r["drop"]["t50"] for r in rs if r["drop"]["t90"] is not None],
             "kinds": {}}
        for label, (src, pred) in KINDS.items():
            firsts, earlier = [], 0
            for r in rs:
                start = r["drop"]["t10"] - lead_window
                evs = [e for e in r["events"][src] if pred(e["type"])]
                earlier += sum(e["step"] < start for e in evs)
                late = [e["rel_t50"] for e in evs if e["step"] >= start]
                if late:
                    firsts.append(late[0])
            d["kinds"][label] = {"first": firsts, "fired": len(firsts), "earlier": earlier}
        out.append(d)
    return out


def _span(vals):
    if not vals:
        return "—"
    lo, hi = min(vals), max(vals)
    return f"{lo:+d}" if lo == hi else f"{lo:+d} to {hi:+d}"


def summary_markdown(summ, lead_window):
    head = "| | " + " | ".join(f"{d['optimizer']}, {d['setting']}" for d in summ) + " |"
    out = [head, "|---|" + "---|" * len(summ),
           "| drop onset t10 / end t90, rel. t50 | " + " | ".join(
               f"{_span(d['t10_rel'])} / {_span(d['t90_rel'])}" for d in summ) + " |"]
    for label in KINDS:
        cells = []
        for d in summ:
            k = d["kinds"][label]
            txt = f"{_span(k['first'])} ({k['fired']}/{d['runs']})" if k["fired"] else f"never (0/{d['runs']})"
            if k["earlier"]:
                txt += f"; {k['earlier']} earlier"
            cells.append(txt)
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    out.append(f"\nCells: the first firing at or after t10 - {lead_window} steps, in steps relative to t50 (range over "
               "the runs where it fired; negative = before the drop's midpoint), (runs where it fired / runs); "
               f"\"k earlier\": firings more than {lead_window} steps before the onset t10, all runs together.")
    return "\n".join(out)


def drops_markdown(runs):
    out = ["| optimizer | attention | seed | plateau L_p | final L_f | t10 | t50 | t90 | t90 - t10 | losses equal "
           "across monitor settings |", "|" + "---|" * 10]
    seen = set()
    for r in runs:
        k = (r["optimizer"], r["attn"], r["seed"])
        if k in seen:
            continue
        seen.add(k)
        d = r["drop"]
        width = "—" if d["t10"] is None or d["t90"] is None else d["t90"] - d["t10"]
        out.append(f"| {k[0]} | {k[1]} | {k[2]} | {d['plateau']:.3f} | {d['final']:.4f} | {d['t10']} | {d['t50']} | "
                   f"{d['t90']} | {width} | {r['losses_equal_across_settings']} |")
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------- figure
def figure(mon, drop, path, title):
    """``mon.plot()`` with the drop marked: t50 a dash-dotted line, [t10, t90] a grey band (the title goes on the
    first panel: plot_monitor's own suptitle is hidden behind its figure legend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = mon.plot(figsize=(10, 8.5))
    for ax in fig.axes:
        if drop["t50"] is not None:
            ax.axvspan(drop["t10"], drop["t90"] if drop["t90"] is not None else drop["t50"], color="k", alpha=0.08,
                       lw=0, zorder=0)
            ax.axvline(drop["t50"], color="k", lw=1.6, ls="-.", zorder=2)
    fig.axes[0].set_title(title + ("\nloss drop: t50 dash-dotted, t10-t90 grey band" if drop["t50"] is not None
                                   else "\nno loss drop found"), fontsize=9)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def machine():
    """CPU model and count (``/proc/cpuinfo`` where there is one)."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} CPUs, {platform.system()}"


# ---------------------------------------------------------------------------------------------- main
class Config(argparse.Namespace):
    pass


def parse(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--attn", default="sdpa,mha", help="comma-separated subset of sdpa,mha")
    ap.add_argument("--optimizer", default="sgd,adamw", help="comma-separated subset of sgd,adamw")
    ap.add_argument("--lr", type=float, default=None, help="learning rate (default: sgd 0.5, adamw 3e-3)")
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--K", type=int, default=12, help="length of the half that is copied")
    ap.add_argument("--vocab", type=int, default=16)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--heads", type=int, default=2)
    ap.add_argument("--layers", type=int, default=1)
    ap.add_argument("--smooth", type=int, default=11, help="steps of the centred running mean defining the drop")
    ap.add_argument("--final", type=int, default=50, help="last steps whose mean loss is the final value")
    ap.add_argument("--min-drop", type=float, default=0.5, help="plateau - final below this: no drop")
    ap.add_argument("--lead-window", type=int, default=50,
                    help="summary: firings from t10 - this many steps on count as possible warnings of the drop")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("runs/monitor_events"))
    ap.add_argument("--markdown", action="store_true", help="also print the tables as markdown")
    ap.add_argument("--quick", action="store_true", help="smoke run: one seed, 150 steps, K = 4")
    ap.add_argument("--quiet", action="store_true")
    cfg = ap.parse_args(argv, namespace=Config())
    if cfg.quick:
        cfg.seeds, cfg.steps, cfg.K, cfg.final = [0], 150, 4, 20
    for name, allowed in (("attn", ATTNS), ("optimizer", tuple(OPTIMIZERS))):
        vals = [v.strip() for v in getattr(cfg, name).split(",") if v.strip()]
        bad = [v for v in vals if v not in allowed]
        if bad or not vals:
            ap.exit(2, f"monitor_events_gpt.py: error: --{name} {getattr(cfg, name)!r}: allowed values are "
                       f"{', '.join(allowed)} (comma-separated)\n")
        setattr(cfg, name, vals)
    for name in ("steps", "batch", "K", "vocab", "width", "heads", "layers", "smooth", "final", "threads"):
        if getattr(cfg, name) < 1:
            ap.exit(2, f"monitor_events_gpt.py: error: --{name} must be >= 1, got {getattr(cfg, name)}\n")
    if cfg.width % cfg.heads:
        ap.exit(2, f"monitor_events_gpt.py: error: --width {cfg.width} must be a multiple of --heads {cfg.heads}\n")
    if cfg.final > cfg.steps:
        ap.exit(2, f"monitor_events_gpt.py: error: --final {cfg.final} exceeds --steps {cfg.steps}\n")
    return cfg


def main(argv=None):
    cfg = parse(argv)
    torch.set_num_threads(cfg.threads)
    cfg.out.mkdir(parents=True, exist_ok=True)
    plan = [(o, a, s, st) for o in cfg.optimizer for a in cfg.attn for s in cfg.seeds for st in SETTINGS]
    runs, fig_made = [], None
    progress = None
    if not cfg.quiet:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        progress = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                            TimeElapsedColumn(), transient=True)
        progress.start()
        task = progress.add_task("runs", total=len(plan))
    t_start = time.perf_counter()
    try:
        losses_of = {}
        for opt_name, attn, seed, setting in plan:
            if progress:
                progress.update(task, description=f"{opt_name} {attn} seed {seed} {setting}")
            t0 = time.perf_counter()
            losses, mon, lr = train(cfg, attn, opt_name, seed, setting)
            wall = time.perf_counter() - t0
            key = (opt_name, attn, seed)
            drop = find_drop(losses, cfg.smooth, cfg.final, cfg.min_drop)
            evs, checks = events_by_source(mon)
            rec = {"optimizer": opt_name, "lr": lr, "attn": attn, "seed": seed, "setting": setting,
                   "monitor_kwargs": SETTINGS[setting], "log_every": mon.log_every,
                   "tier1_every": mon.noise.every if mon.noise is not None else None, "wall_s": wall,
                   "drop": {k: v for k, v in drop.items() if k != "smoothed"},
                   "events": {src: offsets(evs[src], drop) for src in EVENT_SOURCES},
                   "monitor_events": offsets(evs["monitor"], drop), "checks": checks,
                   "losses": losses, "rows": [{k: v for k, v in r.items()} for r in mon.history],
                   "raw_events": mon.events}
            if key in losses_of:
                same = losses_of[key] == losses
                rec["losses_equal_across_settings"] = same
                for r in runs:
                    if (r["optimizer"], r["attn"], r["seed"]) == key:
                        r["losses_equal_across_settings"] = same
            else:
                losses_of[key] = losses
                rec["losses_equal_across_settings"] = None
            runs.append(rec)
            if fig_made is None and setting == "fine" and attn == cfg.attn[0] and opt_name == cfg.optimizer[0]:
                title = (f"hhld Monitor(log_every=5, tier1_every=5): {attn.upper()} GPT copy task, {opt_name} "
                         f"lr {lr:g}, seed {seed}")
                fig_made = cfg.out / "monitor_plot.png"
                figure(mon, drop, fig_made, title)
            if progress:
                progress.advance(task)
    finally:
        if progress:
            progress.stop()
    total = time.perf_counter() - t_start
    lines = summarize(runs)
    meta = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": machine(),
            "platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "threads": cfg.threads, "command": " ".join(["python", "benchmarks/monitor_events_gpt.py"] +
                                                        (sys.argv[1:] if argv is None else list(argv))),
            "wall_s": total, "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(cfg).items()},
            "drop_definition": "t50: first step after the maximum of the centred running mean (width smooth) of the "
                               "per-step loss at or below the midpoint between that maximum (plateau) and the mean "
                               "of the last `final` losses; t10/t90: 10%/90% of the way"}
    summ = summary(runs, cfg.lead_window)
    md = (summary_markdown(summ, cfg.lead_window) + "\n\n" + drops_markdown(runs) + "\n\n" + table_markdown(lines))
    (cfg.out / "events.md").write_text(md + "\n")
    (cfg.out / "events.json").write_text(json.dumps(_finite({"meta": meta, "summary": summ, "table": lines, "runs": runs}),
                                                    indent=1, default=_json_default, allow_nan=False))
    print(f"{len(runs)} runs in {total:.0f} s ({cfg.threads} thread(s)); drop t50 per run:")
    for r in runs:
        if r["setting"] == next(iter(SETTINGS)):
            d = r["drop"]
            print(f"  {r['optimizer']:5s} {r['attn']:4s} seed {r['seed']}: plateau {d['plateau']:.3f} -> final "
                  f"{d['final']:.4f}; t10 {d['t10']}, t50 {d['t50']}, t90 {d['t90']}")
    bad = [r for r in runs if r["checks"]["replay_matches"] is False]
    if bad:
        print(f"WARNING: the replay of the detectors over C differs from the monitor's own events in {len(bad)} run(s)")
    if any(r["losses_equal_across_settings"] is False for r in runs):
        print("WARNING: the per-step losses differ between monitor settings (the monitor changed training?)")
    print()
    print(table_text(lines))
    print()
    print(md if cfg.markdown else summary_markdown(summ, cfg.lead_window))
    print(f"\nwritten: {cfg.out / 'events.json'}, {cfg.out / 'events.md'}"
          + (f", {fig_made}" if fig_made else ""))
    return 0


def _finite(o):
    """JSON-safe copy: non-finite floats as strings ("inf", "nan"), as the monitor's JSONL sink writes them."""
    if isinstance(o, float) and not math.isfinite(o):
        return str(o)
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    return o


def _json_default(o):
    if isinstance(o, (set, frozenset)):
        return sorted(o)
    if isinstance(o, torch.Tensor):
        return o.tolist()
    return str(o)


if __name__ == "__main__":
    sys.exit(main())
