"""The GPU measurements of issue 13 in one run: one markdown table, with the device's name.

    python benchmarks/gpu.py                    # on CUDA: the full sizes, within --budget-s (480 s)
    python benchmarks/gpu.py --smoke            # any machine: the same code at tiny sizes (CPU without CUDA)
    python benchmarks/gpu.py --json out.json --out table.md

Rows (each part has its own time budget; a part that fails or runs out of time says so in its row):

1. **Ensemble**, 10^7 particles, float32, overdamped Euler-Maruyama (D = 0.05, dt = 0.01), on the
   2-D double well and a d = 100 diagonal quadratic: hhld ``Simulation.run`` (the reference steps,
   whole-array torch operations on the device), the same step fused by ``torch.compile``
   (inductor), and a plain hand-written in-place torch update, against the memory-bandwidth bound:
   a step must at least read and write the positions (8 d bytes per particle-step in float32), at
   the bandwidth of a device-to-device copy measured in the same run.
2. **Monitor overhead** on a nanoGPT-style model (``hhld.torch.Monitor`` with its default
   settings): median step time monitored / plain, interleaved blocks.
3. **Grokking**: one full-scale transformer run of the validation suite (modular addition,
   p = 113, AdamW, the full configuration's transformer row): epochs to 95 % test accuracy and wall
   time (``hhld.validate.experiments.grokking.run_grokking``).
4. **The quick validation suite**: the wall time of ``hhld validate --quick`` (all experiments;
   ``--smoke``: one small experiment).

Goals (issue 13): the ensemble at >= 50 % of the bandwidth bound; the full suite in under 30
minutes (measured separately: ``hhld validate --full``).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------------ helpers
def _sync(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _best_time(fn, device, repeats: int, deadline: float) -> float:
    """Best wall time of ``fn()`` over ``repeats`` calls (fewer when the deadline comes first)."""
    fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
        if time.perf_counter() > deadline:
            break
    return min(times)


def device_name(device) -> str:
    import torch

    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        return f"{p.name} ({p.total_memory / 2**30:.0f} GiB), CUDA {torch.version.cuda}"
    return f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores (no CUDA)"


def copy_bandwidth(device, n_bytes: int, deadline: float) -> float:
    """Bytes per second of a device-to-device copy (read + write counted)."""
    import torch

    src = torch.empty(n_bytes // 4, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    t = _best_time(lambda: dst.copy_(src), device, 10, deadline)
    return 2 * src.numel() * 4 / t


# ------------------------------------------------------------------------------------------------ 1. ensemble
def ensemble(device, n: int, steps: int, deadline: float, compile_too: bool = True) -> list[dict]:
    import torch

    from hhld.dynamics import Simulation
    from hhld.landscapes import anisotropic_quadratic, double_well_2d, form_gradient

    D, dt = 0.05, 0.01
    sigma = math.sqrt(2 * D * dt)
    bw = copy_bandwidth(device, min(4 * n * 100, 2 * 10**9), deadline)
    rows = []
    for name, land in (("2-D double well", double_well_2d()), ("quadratic, d = 100", anisotropic_quadratic(100))):
        d = land.dim
        m = n if d == 2 else max(n // 50, 1000)  # 1e7 x 100 floats would be 4 GB per array: 2e5 particles
        gen = torch.Generator(device=device).manual_seed(0)
        theta0 = torch.zeros(m, d, dtype=torch.float32, device=device)
        sim = Simulation(land, theta0, dt=dt, D=D, rng=gen)
        bound = bw / (8 * d)  # particle-steps/s: read and write the positions once
        row = {"workload": f"{name}, {m:.0e} particles, f32", "bound": bound, "bandwidth": bw}
        row["hhld"] = m * steps / _best_time(lambda: sim.run(steps), device, 5, deadline)
        form = land.gradient_form()
        consts = tuple(torch.as_tensor(c, dtype=torch.float32, device=device) for c in form.constants())
        th = torch.zeros(m, d, device=device)
        g = form_gradient(form, th, consts)
        noise = torch.empty_like(th)

        def plain():  # the hand-written in-place update
            for _ in range(steps):
                noise.normal_(0.0, sigma, generator=gen)
                th.add_(g, alpha=-dt).add_(noise)
                g.copy_(form_gradient(form, th, consts))

        row["plain"] = m * steps / _best_time(plain, device, 5, deadline)
        if compile_too:
            try:
                upd = torch.compile(lambda z, t, gg: ((z * sigma + gg * (-dt)) + t,
                                                      form_gradient(form, (z * sigma + gg * (-dt)) + t, consts)))
                st = {"th": th.clone(), "g": g.clone()}

                def compiled():
                    for _ in range(steps):
                        z = torch.empty_like(st["th"]).normal_(generator=gen)
                        st["th"], st["g"] = upd(z, st["th"], st["g"])

                row["compiled"] = m * steps / _best_time(compiled, device, 5, deadline)
            except Exception as exc:  # noqa: BLE001 - inductor may be unavailable (no compiler, no triton)
                row["compiled_error"] = f"{type(exc).__name__}: {exc}"[:200]
        rows.append(row)
    return rows


# ------------------------------------------------------------------------------------------------ 2. monitor
def gpt_model(vocab=65, T=64, E=128, H=4, n_layer=2, p=0.1):
    """A nanoGPT-style decoder (the shape of tests/torch/workloads.py's GPT, two blocks)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln1, self.ln2 = nn.LayerNorm(E), nn.LayerNorm(E)
            self.qkv, self.proj = nn.Linear(E, 3 * E), nn.Linear(E, E)
            self.mlp = nn.Sequential(nn.Linear(E, 4 * E), nn.GELU(), nn.Linear(4 * E, E), nn.Dropout(p))
            self.drop = nn.Dropout(p)

        def forward(self, x):
            B, T_, _ = x.shape
            q, k, v = self.qkv(self.ln1(x)).split(E, dim=2)
            q, k, v = (t.view(B, T_, H, E // H).transpose(1, 2) for t in (q, k, v))
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=p if self.training else 0.0, is_causal=True)
            x = x + self.drop(self.proj(y.transpose(1, 2).reshape(B, T_, E)))
            return x + self.mlp(self.ln2(x))

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.tok, self.pos = nn.Embedding(vocab, E), nn.Embedding(T, E)
            self.blocks = nn.Sequential(*[Block() for _ in range(n_layer)])
            self.ln_f = nn.LayerNorm(E)
            self.head = nn.Linear(E, vocab, bias=False)
            self.head.weight = self.tok.weight

        def forward(self, idx):
            x = self.tok(idx) + self.pos(torch.arange(idx.shape[1], device=idx.device))
            return self.head(self.ln_f(self.blocks(x)))

    return GPT()


def monitor_overhead(device, batch: int, rounds: int, block: int, deadline: float) -> dict:
    import torch
    import torch.nn.functional as F

    from hhld.torch import Monitor

    T, vocab = 64, 65
    g = torch.Generator().manual_seed(0)
    data = torch.randint(0, vocab, (batch, T + 1), generator=g).to(device)
    x, y = data[:, :-1], data[:, 1:]
    runners = {}
    for mode in ("plain", "monitor"):
        torch.manual_seed(0)
        model = gpt_model(vocab=vocab, T=T).to(device)
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        mon = Monitor(model, opt) if mode == "monitor" else None
        runners[mode] = (model, opt, mon)

    def step(mode):
        model, opt, mon = runners[mode]
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x).reshape(-1, vocab), y.reshape(-1))
        loss.backward()
        opt.step()
        if mon is not None:
            mon.step(loss)

    for mode in runners:  # warm-up
        for _ in range(block):
            step(mode)
    _sync(device)
    times = {m: [] for m in runners}
    for r in range(rounds):
        for mode in (list(runners) if r % 2 == 0 else list(runners)[::-1]):
            t0 = time.perf_counter()
            for _ in range(block):
                step(mode)
            _sync(device)
            times[mode].append((time.perf_counter() - t0) / block)
        if time.perf_counter() > deadline:
            break
    for _, _, mon in runners.values():
        if mon is not None:
            mon.close()
    plain, monitored = statistics.median(times["plain"]), statistics.median(times["monitor"])
    return {"plain_ms": 1e3 * plain, "monitor_ms": 1e3 * monitored, "ratio": monitored / plain,
            "rounds": len(times["plain"]), "batch": batch}


# ------------------------------------------------------------------------------------------------ 3. grokking
def grokking(device, smoke: bool) -> dict:
    from hhld.validate.experiments.grokking import GrokkingConfig, run_grokking

    if smoke:
        cfg, (model, lr, wd, max_epochs, every) = GrokkingConfig.smallest(), ("transformer", 1e-3, 1.0, 3, 1)
    else:
        cfg = GrokkingConfig.full()
        model, lr, wd, max_epochs, every = next(r for r in cfg.runs if r[0] == "transformer")
    t0 = time.perf_counter()
    out = run_grokking(cfg, model, lr, wd, max_epochs, every, seed=0, device=str(device))
    return {"t95": out["t95"], "epochs_run": out["epochs_run"], "max_epochs": max_epochs,
            "wall_s": time.perf_counter() - t0, "p": cfg.p}


# ------------------------------------------------------------------------------------------------ 4. quick suite
def quick_suite(smoke: bool, timeout_s: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="hhld-gpu-bench-") as tmp:
        cmd = [sys.executable, "-m", "hhld.cli", "validate", "--quick", "--quiet", "--out", str(Path(tmp) / "v")]
        if smoke:
            cmd += ["--only", "energy_entropy", "--seeds", "1"]
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=max(timeout_s, 1.0), cwd=ROOT)
        except subprocess.TimeoutExpired:
            return {"wall_s": time.perf_counter() - t0, "status": f"not finished within {timeout_s:.0f} s"}
        status = "ok" if proc.returncode == 0 else f"exit {proc.returncode}: {proc.stderr.strip()[-200:]}"
        return {"wall_s": time.perf_counter() - t0, "status": status, "only": "energy_entropy" if smoke else "all"}


# ------------------------------------------------------------------------------------------------ main
def _m(x) -> str:
    return "—" if x is None else f"{x / 1e6:,.1f} M"


def _row(label, hhld="—", reference="—", ratio="—", note="") -> str:
    return f"| {label} | {hhld} | {reference} | {ratio} | {note} |"


def _ensemble_rows(row: dict) -> list[str]:
    if "error" in row:
        return [_row("ensemble", note=row["error"])]
    comp = row.get("compiled")
    note = (f"particle-steps/s; bound = copy bandwidth {row['bandwidth'] / 1e9:.0f} GB/s / (8 d bytes); "
            f"torch.compile (inductor) {_m(comp) if comp else row.get('compiled_error', '—')}"
            + (f" = {comp / row['bound']:.0%} of the bound" if comp else ""))
    return [_row(f"ensemble {row['workload']}: hhld vs bandwidth bound", _m(row["hhld"]), _m(row["bound"]),
                 f"{row['hhld'] / row['bound']:.0%}", note),
            _row(f"ensemble {row['workload']}: hhld vs plain in-place torch", _m(row["hhld"]), _m(row["plain"]),
                 f"{row['hhld'] / row['plain']:.2f}×", "goal ≥ 50 % of the bound")]


def _monitor_row(mon: dict) -> str:
    return _row(f"monitor overhead, nanoGPT (batch {mon['batch']}, default settings)",
                f"{mon['monitor_ms']:.2f} ms/step", f"{mon['plain_ms']:.2f} ms/step", f"{mon['ratio']:.2f}×",
                f"median of {mon['rounds']} interleaved rounds")


def _grokking_row(gk: dict) -> str:
    t95 = "not reached" if gk["t95"] is None else f"{gk['t95']} epochs"
    return _row(f"grokking transformer, p = {gk['p']}: epochs to 95 % test accuracy", t95,
                note=f"{gk['wall_s']:.0f} s wall, {gk['epochs_run']} of {gk['max_epochs']} epochs run")


def _suite_row(qs: dict) -> str:
    return _row(f"validation suite --quick ({qs.get('only', 'all')}), wall time", f"{qs['wall_s']:.0f} s",
                note=qs.get("status", ""))


def table(res: dict) -> str:
    lines = [f"**Device:** {res['device']} · {res['date']} · torch {res['torch']}"
             + (" · SMOKE RUN (tiny sizes, figures meaningless)" if res["smoke"] else ""), "",
             "| measurement | hhld | reference | ratio | note |", "|---|---:|---:|---:|---|"]
    for row in res.get("ensemble", []):
        lines += _ensemble_rows(row)
    for key, label, make in (("monitor", "monitor overhead, nanoGPT", _monitor_row),
                             ("grokking", "grokking transformer", _grokking_row),
                             ("quick_suite", "validation suite --quick", _suite_row)):
        part = res.get(key)
        if part:
            lines.append(_row(label, note=part["error"]) if "error" in part else make(part))
    return "\n".join(lines)


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true", help="tiny sizes; runs on CPU when CUDA is absent")
    p.add_argument("--device", default=None, help="torch device (default: cuda; cpu with --smoke and no CUDA)")
    p.add_argument("--budget-s", type=float, default=480.0, help="overall time budget in seconds (default 480)")
    p.add_argument("--skip", default="", help="comma-separated parts to skip: ensemble,monitor,grokking,suite")
    p.add_argument("--out", default=None, help="also write the markdown table to this file")
    p.add_argument("--json", default=None, help="also write every figure as JSON")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    a = parse(argv)
    import torch

    t_start = time.perf_counter()
    if a.device is None:
        if torch.cuda.is_available():
            a.device = "cuda"
        elif a.smoke:
            a.device = "cpu"
        else:
            print("error: no CUDA device; run with --smoke for the CPU smoke run", file=sys.stderr)
            raise SystemExit(2)
    device = torch.device(a.device)
    skip = set(filter(None, a.skip.split(",")))
    res = {"device": device_name(device), "date": _dt.datetime.now().isoformat(timespec="seconds"),
           "torch": torch.__version__, "smoke": a.smoke}
    # budget shares of the parts (seconds, of --budget-s); a part past its share stops and says so
    share = {"ensemble": 0.15, "monitor": 0.10, "grokking": 0.45, "suite": 0.30}

    def deadline(part):
        return time.perf_counter() + share[part] * a.budget_s

    def guarded(part, fn):
        if part in skip:
            return None
        t0 = time.perf_counter()
        try:
            out = fn()
        except Exception as exc:  # noqa: BLE001 - one failing part must not hide the others
            out = {"error": f"{type(exc).__name__}: {exc}"[:300]}
        print(f"# {part} done in {time.perf_counter() - t0:.1f} s", flush=True)
        return out

    if a.smoke:
        sizes = dict(n=20_000, steps=3, batch=4, rounds=3, block=2)
    else:
        sizes = dict(n=10_000_000, steps=20, batch=64, rounds=15, block=10)
    ens = guarded("ensemble", lambda: ensemble(device, sizes["n"], sizes["steps"], deadline("ensemble"),
                                               compile_too=not a.smoke))
    if ens is not None:
        res["ensemble"] = ens if isinstance(ens, list) else [ens]
    res["monitor"] = guarded("monitor", lambda: monitor_overhead(device, sizes["batch"], sizes["rounds"],
                                                                 sizes["block"], deadline("monitor")))
    res["grokking"] = guarded("grokking", lambda: grokking(device, a.smoke))
    left = a.budget_s - (time.perf_counter() - t_start)
    res["quick_suite"] = guarded("suite", lambda: quick_suite(a.smoke, left))
    res = {k: v for k, v in res.items() if v is not None}
    res["total_s"] = time.perf_counter() - t_start
    text = table(res)
    print(text)
    print(f"\n(total {res['total_s']:.0f} s of a {a.budget_s:.0f} s budget)")
    if a.out:
        Path(a.out).write_text(text + "\n")
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2, default=str))
    return res


if __name__ == "__main__":
    main(sys.argv[1:])
