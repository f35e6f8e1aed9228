"""Ensemble performance benchmark (issues 2 and 13).

One run, one machine, every contender timed by this script, interleaved.

Part 1, the documents' example: the 2-D double well ``L = (th1^2 - 1)^2 + th2^2`` with N
particles of overdamped Langevin ``d th = -grad L dt + sqrt(2 D) dW`` (mu = 1, D = 0.05,
dt = 0.01):

1. the documents' one-particle loop (our re-implementation of the reference ``step``:
   one ``np.random.randn(dim)`` per particle-step), timed on a subset and scaled;
2. a plain vectorised numpy float32 update;
3. BlackJAX's SGLD kernel, vmapped over particles and jit-compiled (steps in ``lax.scan``);
4. a jit-compiled JAX float32 ``lax.scan`` of the update;
5. an in-place torch float32 update;
6. torch's float32 normal generator (numbers/s) and the bound it implies for a d-dimensional
   update (numbers/s / d particle-steps/s): the "random-number bound";
7. hhld ``Simulation.run`` (torch f32, default non-finite checks): the library path.

Part 2, every built-in landscape x every integrator (issue 13), N d = 2e5 numbers per step,
torch f32: hhld ``Simulation.run`` (the fused kernel, ``hhld.dynamics.kernels``), the same with
``kernels=False`` (the reference step), and -- for Euler-Maruyama -- the reference update and
gradient compiled by ``torch.compile`` (inductor) with the noise drawn by the same generator: the
two JIT candidates on the same workloads. Plus a user landscape written in torch ops
(``TorchLandscape``, gradient by autograd, and a ``Landscape`` subclass with a closed-form torch
gradient), and the numpy backend (float32/float64) against numpy's generator.

Figures are particle-steps per second, best of ``--repeats`` (median also reported, and the
same figures from the calling thread's CPU time, which leaves out waits for a core); warm-up
and compilation are excluded (compile times are reported). Repeats are interleaved across the
contenders (repeat 1 of everything, then repeat 2, ...; the order rotates by one contender every
repeat) so that load from other users of a shared machine hits them alike.

BlackJAX's SGLD step is ``th += eps * grad log p + sqrt(2 T eps) xi``. With ``T = 1``,
``log p = -mu L / D`` and ``eps = D dt`` this is exactly the Euler-Maruyama step of the
SDE above: ``eps grad log p = -mu grad L dt`` and ``sqrt(2 eps) = sqrt(2 D dt)``.

Usage::

    python benchmarks/bench_ensemble.py --threads 1          # full run (N = 1e5)
    python benchmarks/bench_ensemble.py --quick              # small smoke run (tests)
    python benchmarks/bench_ensemble.py --json out.json --no-inductor
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
import time

import numpy as np

GOAL_DOCS = 300.0
GOAL_BLACKJAX = 1.5
GOAL_RNG = 0.85          # built-in landscapes, every integrator (issue 13)
GOAL_RNG_USER = 0.70     # a user landscape in torch ops
MATRIX_NUMBERS = 200_000  # N * d of the matrix workloads


# ------------------------------------------------------------------ machine
def machine_info() -> dict:
    model = platform.processor() or "unknown"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except Exception:  # noqa: BLE001 - lscpu is optional
        pass
    info = {"cpu": model, "cores": os.cpu_count(), "python": platform.python_version(),
            "numpy": np.__version__, "date": _dt.datetime.now().isoformat(timespec="seconds")}
    try:
        info["loadavg_start"] = os.getloadavg()[0]
    except OSError:
        pass
    return info


# ---------------------------------------------------------------- contenders
class Contender:
    """``run(n_steps)`` advances ``n_particles`` particles by ``n_steps`` steps; the rate
    is particle-steps (or numbers, ``unit``) per second."""

    def __init__(self, key, label, run, n_particles, n_steps, unit="particle-steps/s", count_per_step=None,
                 serial=True):
        self.key, self.label, self.run = key, label, run
        self.serial = serial  # all the work on the calling thread (its CPU time is the cost)
        self.n_particles, self.n_steps, self.unit = n_particles, n_steps, unit
        self.count = (count_per_step or n_particles) * n_steps
        self.times: list[float] = []
        self.cpu_times: list[float] = []

    def time_once(self):
        c0 = time.thread_time()
        t0 = time.perf_counter()
        self.run(self.n_steps)
        self.times.append(time.perf_counter() - t0)
        self.cpu_times.append(time.thread_time() - c0)

    @property
    def best(self):
        return self.count / min(self.times)

    @property
    def median(self):
        return self.count / statistics.median(self.times)

    # CPU time of the calling thread: it leaves out the time spent waiting for a core on a
    # shared machine. Only for serial contenders (None for those with worker threads).
    @property
    def cpu_best(self):
        return self.count / max(min(self.cpu_times), 1e-9) if self.serial else None

    @property
    def cpu_median(self):
        return self.count / max(statistics.median(self.cpu_times), 1e-9) if self.serial else None


def docs_loop(n_sub, D, dt, seed):
    """The documents' one-particle step, looped over particles (written for this benchmark)."""

    def loss_grad(theta):  # the documents' per-point gradient of (x^2-1)^2 + y^2
        x, y = theta[0], theta[1]
        return np.array([4.0 * x * (x * x - 1.0), 2.0 * y])

    def step(theta):
        drift = -loss_grad(theta)
        diffusion = np.sqrt(2.0 * D * dt) * np.random.randn(2)
        return theta + drift * dt + diffusion

    np.random.seed(seed)
    thetas = [np.array([0.5, 0.5]) for _ in range(n_sub)]

    def run(n):
        for _ in range(n):
            for i in range(n_sub):
                thetas[i] = step(thetas[i])

    return run


def numpy_vectorised(N, D, dt, seed):
    rng = np.random.default_rng(seed)
    state = {"th": np.zeros((N, 2), dtype=np.float32)}
    sigma = np.float32(math.sqrt(2 * D * dt))
    dt32 = np.float32(dt)

    def run(n):
        th = state["th"]
        for _ in range(n):
            x, y = th[:, 0], th[:, 1]
            g = np.stack([4.0 * x * (x * x - 1.0), 2.0 * y], axis=1).astype(np.float32, copy=False)
            th = th - dt32 * g + sigma * rng.standard_normal((N, 2), dtype=np.float32)
        state["th"] = th

    return run


def torch_inplace(N, D, dt, seed):
    """A plain whole-array in-place torch update (what one writes by hand)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    th = torch.zeros(N, 2)
    noise = torch.empty(N, 2)
    sigma = math.sqrt(2 * D * dt)
    x, y = th[:, 0], th[:, 1]

    def run(n):
        for _ in range(n):
            noise.normal_(0.0, sigma, generator=g)
            gx = x * x                          # dt * dL/dx = 4 dt x (x^2 - 1)
            gx.sub_(1.0).mul_(x).mul_(4.0 * dt)
            x.sub_(gx)
            y.mul_(1.0 - 2.0 * dt)              # y -= dt * 2 y
            th.add_(noise)

    return run


def torch_rng(N, seed):
    import torch

    g = torch.Generator().manual_seed(seed)
    buf = torch.empty(N, 2)

    def run(n):
        for _ in range(n):
            buf.normal_(generator=g)

    return run


def jax_scan(N, D, dt, seed, n_steps):
    import jax
    import jax.numpy as jnp

    sigma = math.sqrt(2 * D * dt)

    def body(carry, _):
        key, th = carry
        key, sub = jax.random.split(key)
        x, y = th[:, 0], th[:, 1]
        g = jnp.stack([4.0 * x * (x * x - 1.0), 2.0 * y], axis=1)
        th = th - dt * g + sigma * jax.random.normal(sub, th.shape, dtype=jnp.float32)
        return (key, th), None

    @jax.jit
    def advance(key, th):
        (key, th), _ = jax.lax.scan(body, (key, th), None, length=n_steps)
        return key, th

    state = {"key": jax.random.PRNGKey(seed), "th": jnp.zeros((N, 2), jnp.float32)}
    jax.block_until_ready(advance(state["key"], state["th"]))  # compile (warm-up)

    def run(n):
        assert n == n_steps
        key, th = advance(state["key"], state["th"])
        state["key"], state["th"] = key, jax.block_until_ready(th)

    return run


def blackjax_sgld(N, D, dt, seed, n_steps, mu=1.0):
    import blackjax
    import jax
    import jax.numpy as jnp

    def logdensity(theta):  # log p = -mu L / D  (temperature 1, step size D dt)
        x, y = theta[0], theta[1]
        return -mu * ((x * x - 1.0) ** 2 + y * y) / D

    grad_logp = jax.grad(logdensity)
    sgld = blackjax.sgld(lambda position, minibatch: grad_logp(position))
    step_size = D * dt
    vstep = jax.vmap(lambda k, p: sgld.step(k, p, None, step_size))

    def body(carry, _):
        key, th = carry
        key, sub = jax.random.split(key)
        th = vstep(jax.random.split(sub, N), th)
        return (key, th), None

    @jax.jit
    def advance(key, th):
        (key, th), _ = jax.lax.scan(body, (key, th), None, length=n_steps)
        return key, th

    state = {"key": jax.random.PRNGKey(seed), "th": jnp.zeros((N, 2), jnp.float32)}
    jax.block_until_ready(advance(state["key"], state["th"]))

    def run(n):
        assert n == n_steps
        key, th = advance(state["key"], state["th"])
        state["key"], state["th"] = key, jax.block_until_ready(th)

    return run


def hhld_simulation(landscape, n, D, dt, seed, integrator="euler_maruyama", kernels=True, backend="torch32"):
    """``Simulation.run`` of the library; also returns the simulation (its kernel, compile time)."""
    import torch

    from hhld.dynamics import Simulation

    d = landscape.dim
    if backend == "torch32":
        theta0, rng = torch.zeros(n, d, dtype=torch.float32), torch.Generator().manual_seed(seed)
    else:
        theta0 = np.zeros((n, d), dtype=np.float32 if backend == "numpy32" else np.float64)
        rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    sim = Simulation(landscape, theta0, dt=dt, D=D, integrator=integrator, rng=rng, kernels=kernels)
    sim.run(1)  # compiles the kernel (numba) on its first call
    sim.compile_s = time.perf_counter() - t0
    return sim


def inductor_em(landscape, n, D, dt, seed):
    """The reference Euler-Maruyama update and gradient (``hhld.landscapes.form_gradient``) compiled
    by ``torch.compile`` (inductor), the noise drawn by the same torch generator: the JIT candidate
    beside numba, on the same workload. Returns (run, compile seconds)."""
    import torch

    from hhld.landscapes import form_gradient

    form = landscape.gradient_form()
    consts = tuple(torch.as_tensor(c, dtype=torch.float32) for c in form.constants())
    sigma, drift = math.sqrt(2 * D * dt), -dt

    def update(noise, th, g):
        new = (noise * sigma + g * drift) + th
        return new, form_gradient(form, new, consts)

    compiled = torch.compile(update, dynamic=False)
    gen = torch.Generator().manual_seed(seed)
    st = {"th": torch.zeros(n, landscape.dim)}
    st["g"] = landscape.grad(st["th"])
    t0 = time.perf_counter()
    for _ in range(2):  # compile (and check the result once)
        noise = torch.empty(n, landscape.dim).normal_(generator=gen)
        st["th"], st["g"] = compiled(noise, st["th"], st["g"])
    compile_s = time.perf_counter() - t0

    def run(steps):
        th, g = st["th"], st["g"]
        for _ in range(steps):
            noise = torch.empty(n, landscape.dim).normal_(generator=gen)
            th, g = compiled(noise, th, g)
        st["th"], st["g"] = th, g

    return run, compile_s


def matrix_landscapes():
    """The built-in landscapes of the matrix: (key, label, landscape)."""
    from hhld.landscapes import (DoubleWell, Quadratic, QuadraticQuartic, TiltedDoubleWell, anisotropic_quadratic,
                                 double_well_2d)

    d = 8
    Q = np.linalg.qr(np.random.default_rng(0).normal(size=(d, d)))[0]
    full = Quadratic(Q @ np.diag(np.linspace(0.5, 4.0, d)) @ Q.T)
    return [
        ("dw2", "double well, d=2 (documents' Example 1)", double_well_2d()),
        ("dw10", "double well, d=10", DoubleWell(10)),
        ("tilted2", "tilted double well, d=2", TiltedDoubleWell(2, tilt=0.25)),
        ("quartic4", "quadratic + quartic, d=4", QuadraticQuartic(4)),
        ("aq50", "diagonal quadratic, d=50 (documents' Example 2)", anisotropic_quadratic(50)),
        ("quad8", "full quadratic (rotated), d=8", full),
    ]


def user_landscapes():
    """Two user landscapes written in torch ops (the 2-D double well): autograd, and a closed form."""
    import torch

    from hhld.landscapes import Landscape, TorchLandscape

    def dw(x):
        return (x[:, 0] ** 2 - 1.0) ** 2 + x[:, 1] ** 2

    class TorchOpsDoubleWell(Landscape):
        name = "user_torch_ops"

        def _value(self, th):
            return dw(th)

        def _grad(self, th):
            x, y = th[:, :1], th[:, 1:]
            return torch.cat([4.0 * x * (x * x - 1.0), 2.0 * y], dim=1)

    return [("user_autograd", "user TorchLandscape (autograd), d=2", TorchLandscape(dw, 2)),
            ("user_closed", "user Landscape subclass, torch-ops gradient, d=2", TorchOpsDoubleWell(2))]


INTEGRATOR_KEYS = {"euler_maruyama": "em", "leimkuhler_matthews": "lm", "baoab": "baoab"}


# ---------------------------------------------------------------------- main
def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=100_000, help="particles of the documents' example (default 1e5)")
    p.add_argument("--steps", type=int, default=20, help="steps per timed repeat (default 20)")
    p.add_argument("--repeats", type=int, default=15, help="timed repeats per contender (default 15)")
    p.add_argument("--docs-particles", type=int, default=1000,
                   help="subset of particles for the documents' loop (default 1000)")
    p.add_argument("--docs-steps", type=int, default=10, help="steps per repeat of the documents' loop")
    p.add_argument("--D", type=float, default=0.05)
    p.add_argument("--dt", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None,
                   help="torch.set_num_threads for this process (default: torch's default)")
    p.add_argument("--no-jax", action="store_true", help="skip the JAX / BlackJAX contenders")
    p.add_argument("--no-inductor", action="store_true", help="skip the torch.compile (inductor) contenders")
    p.add_argument("--no-matrix", action="store_true", help="only the documents' example (part 1)")
    p.add_argument("--only", default=None, metavar="KEYS",
                   help="comma-separated contender keys to time (ratios needing others are skipped)")
    p.add_argument("--quick", action="store_true", help="tiny sizes for a smoke test (figures meaningless)")
    p.add_argument("--json", metavar="PATH", default=None, help="also write the results as JSON")
    a = p.parse_args(argv)
    if a.quick:
        a.n, a.steps, a.repeats, a.docs_particles, a.docs_steps = 8000, 3, 2, 50, 2
    return a


def _contenders(a, info):
    """Every contender of the run, in order."""
    import torch

    N, D, dt = a.n, a.D, a.dt
    numbers = 16_000 if a.quick else MATRIX_NUMBERS
    cs: list[Contender] = [
        Contender("docs_loop", "documents' one-particle loop (numpy f64, scaled from subset)",
                  docs_loop(a.docs_particles, D, dt, a.seed), a.docs_particles, a.docs_steps),
        Contender("numpy32", "plain vectorised numpy f32", numpy_vectorised(N, D, dt, a.seed), N, a.steps),
    ]
    if info.get("jax"):
        print("# compiling JAX contenders ...", flush=True)
        cs.append(Contender("blackjax_sgld", "BlackJAX SGLD, vmapped + jit (scan)",
                            blackjax_sgld(N, D, dt, a.seed, a.steps), N, a.steps, serial=False))
        cs.append(Contender("jax_scan", "JAX f32 lax.scan, jit", jax_scan(N, D, dt, a.seed, a.steps), N, a.steps,
                            serial=False))
    from hhld.landscapes import double_well_2d

    sim = hhld_simulation(double_well_2d(), N, D, dt, a.seed)
    cs += [
        Contender("torch_inplace", "in-place torch f32 update", torch_inplace(N, D, dt, a.seed), N, a.steps,
                  serial=False),
        Contender("torch_rng", "torch f32 normal generator, (N, 2)", torch_rng(N, a.seed), N, a.steps,
                  unit="numbers/s", count_per_step=2 * N),
        Contender("hhld_sim_torch32", "hhld Simulation.run, torch f32 (library path)", lambda n: sim.run(n), N,
                  a.steps),
    ]
    info["kernels"] = {"hhld_sim_torch32": repr(sim.kernel)}
    info["compile_s"] = {"hhld_sim_torch32": sim.compile_s}
    if a.no_matrix:
        return cs
    g = torch.Generator().manual_seed(a.seed)
    buf = torch.empty(numbers)
    cs.append(Contender("rng_matrix", f"torch f32 normal generator, {numbers} numbers",
                        lambda n: [buf.normal_(generator=g) for _ in range(n)], numbers, a.steps, unit="numbers/s"))
    rng_np = np.random.default_rng(a.seed)
    for dt_name, dtype in (("32", np.float32), ("64", np.float64)):
        nb = np.empty(numbers, dtype=dtype)
        cs.append(Contender(f"rng_numpy{dt_name}", f"numpy f{dt_name} standard_normal, {numbers} numbers",
                            lambda n, nb=nb, dtype=dtype: [rng_np.standard_normal(out=nb, dtype=dtype)
                                                          for _ in range(n)], numbers, a.steps, unit="numbers/s"))
    for key, label, land in matrix_landscapes():
        n = numbers // land.dim
        for integ, ik in INTEGRATOR_KEYS.items():
            for kern in (True, False):
                s = hhld_simulation(land, n, D, dt, a.seed, integ, kernels=kern)
                ck = f"{key}_{ik}_{'fused' if kern else 'reference'}"
                cs.append(Contender(ck, f"{label}: {integ}, {'Simulation.run' if kern else 'reference step'}",
                                    lambda k, s=s: s.run(k), n, a.steps))
                info["kernels"][ck] = repr(s.kernel)
                info["compile_s"][ck] = s.compile_s
        if not a.no_inductor:
            try:
                run, cs_ = inductor_em(land, n, D, dt, a.seed)
                cs.append(Contender(f"{key}_em_inductor", f"{label}: euler_maruyama, torch.compile (inductor)",
                                    run, n, a.steps))
                info["compile_s"][f"{key}_em_inductor"] = cs_
            except Exception as exc:  # noqa: BLE001 - inductor needs a C++ compiler at run time
                info.setdefault("inductor_error", f"{type(exc).__name__}: {exc}"[:300])
                print(f"# torch.compile (inductor) unavailable: {info['inductor_error']}", flush=True)
                a.no_inductor = True
    for key, label, land in user_landscapes():
        n = numbers // land.dim
        s = hhld_simulation(land, n, D, dt, a.seed)
        cs.append(Contender(f"{key}_em", f"{label}: euler_maruyama, Simulation.run", lambda k, s=s: s.run(k), n,
                            a.steps))
        info["kernels"][f"{key}_em"] = repr(s.kernel)
    for be in ("numpy32", "numpy64"):
        s = hhld_simulation(double_well_2d(), numbers // 2, D, dt, a.seed, backend=be)
        cs.append(Contender(f"dw2_em_{be}", f"double well, d=2: euler_maruyama, Simulation.run, {be}",
                            lambda k, s=s: s.run(k), numbers // 2, a.steps))
        info["kernels"][f"dw2_em_{be}"] = repr(s.kernel)
    return cs


def _matrix_ratios(res, land_dims):
    """Per (landscape, integrator): hhld / RNG bound (numbers/s / d), from best CPU time (the
    serial figure a busy machine does not distort) and from best wall time."""
    out = {}
    if "rng_matrix" not in res:
        return out
    for key, d in land_dims.items():
        for ik in INTEGRATOR_KEYS.values():
            for variant in ("fused", "reference"):
                ck = f"{key}_{ik}_{variant}"
                if ck in res:
                    out[ck] = {fig: res[ck][fig] * d / res["rng_matrix"][fig] for fig in ("cpu_best", "best")}
        if f"{key}_em_inductor" in res:
            ck = f"{key}_em_inductor"
            out[ck] = {fig: res[ck][fig] * d / res["rng_matrix"][fig] for fig in ("cpu_best", "best")}
    for key in ("user_autograd_em", "user_closed_em"):
        if key in res:
            out[key] = {fig: res[key][fig] * 2 / res["rng_matrix"][fig] for fig in ("cpu_best", "best")}
    for be in ("numpy32", "numpy64"):
        k, r = f"dw2_em_{be}", f"rng_{be}"
        if k in res and r in res:
            out[k] = {fig: res[k][fig] * 2 / res[r][fig] for fig in ("cpu_best", "best")}
    return out


def main(argv=None) -> dict:
    a = parse(argv)
    import torch

    if a.threads is not None:
        torch.set_num_threads(a.threads)
    info = machine_info()
    info.update(torch=torch.__version__, torch_threads=torch.get_num_threads())
    try:
        import numba

        info["numba"] = numba.__version__
    except ImportError:
        info["numba"] = None
        print("# numba not installed: hhld runs its reference steps (pip install 'hhld[fast]')", flush=True)
    if not a.no_jax:
        try:
            import blackjax
            import jax

            info.update(jax=jax.__version__, blackjax=getattr(blackjax, "__version__", "?"),
                        jax_devices=str(jax.devices()))
        except ImportError as exc:
            print(f"# jax/blackjax not installed ({exc}); skipping their rows "
                  "(pip install -e '.[bench]')", flush=True)
    cs = _contenders(a, info)
    if a.only:
        keep = set(a.only.split(","))
        cs = [c for c in cs if c.key in keep]
    for c in cs:  # warm-up, excluded
        c.run(c.n_steps)
    for r in range(a.repeats):  # interleaved repeats, in an order rotated every repeat so
        k = r % len(cs)          # that no contender always runs right after the same one
        for c in cs[k:] + cs[:k]:
            c.time_once()
        print(f"# repeat {r + 1}/{a.repeats} done", flush=True)
    try:
        info["loadavg_end"] = os.getloadavg()[0]
    except OSError:
        pass
    N, D, dt = a.n, a.D, a.dt
    res = {c.key: {"label": c.label, "best": c.best, "median": c.median, "unit": c.unit,
                   "cpu_best": c.cpu_best, "cpu_median": c.cpu_median,
                   "particles": c.n_particles, "steps": c.n_steps, "repeats": len(c.times)} for c in cs}
    if "torch_rng" in res:
        res["rng_bound_2d"] = {"label": "implied bound for a 2-D update (numbers/s / 2)",
                               **{k: res["torch_rng"][k] / 2.0 for k in ("best", "median", "cpu_best", "cpu_median")},
                               "unit": "particle-steps/s"}

    print()
    print(f"Ensemble benchmark, D={D}, dt={dt}, {a.steps} steps x {a.repeats} repeats "
          f"(best / median){'  [QUICK: figures meaningless]' if a.quick else ''}")
    print(f"machine: {info['cpu']}, {info['cores']} cores, torch threads {info['torch_threads']}, {info['date']}, "
          f"load average {info.get('loadavg_start', float('nan')):.2f} -> {info.get('loadavg_end', float('nan')):.2f}")
    print(f"numba {info.get('numba')}, torch {info['torch']}")
    print(f"{'contender':78s} {'best':>10s} {'median':>10s}  {'cpu best':>10s} {'cpu med':>10s}  unit")
    for k, v in res.items():
        cpu = "".join("         --" if v[f] is None else f" {v[f] / 1e6:9.2f}M" for f in ("cpu_best", "cpu_median"))
        print(f"{v['label'][:78]:78s} {v['best'] / 1e6:9.2f}M {v['median'] / 1e6:9.2f}M {cpu}  {v['unit']}")

    def best(key):
        return res[key]["best"] if key in res else None

    def ratio(num, den):
        return None if num is None or den is None else num / den

    hhld = best("hhld_sim_torch32")
    ratios = {
        "hhld_vs_docs_loop": (ratio(hhld, best("docs_loop")), GOAL_DOCS),
        "hhld_vs_blackjax_sgld": (ratio(hhld, best("blackjax_sgld")), GOAL_BLACKJAX),
        "hhld_vs_rng_bound": (ratio(hhld, best("rng_bound_2d")), GOAL_RNG),
    }
    print()
    print(f"Part 1, the documents' example (N={N}; hhld = Simulation.run, torch f32, best of repeats):")
    names = {"hhld_vs_docs_loop": "hhld vs documents' loop", "hhld_vs_blackjax_sgld": "hhld vs BlackJAX SGLD",
             "hhld_vs_rng_bound": "hhld vs RNG bound"}
    for k, (val, goal) in ratios.items():
        pct = k == "hhld_vs_rng_bound"
        goal_s = f"{goal:.0%}" if pct else f"{goal:g}x"
        if val is None:
            why = "jax not installed" if k == "hhld_vs_blackjax_sgld" and not info.get("jax") else "not timed"
            print(f"ratio {names[k]}: skipped ({why})  goal >= {goal_s}")
            continue
        shown = f"{val:.1%}" if pct else f"{val:.1f}x"
        print(f"ratio {names[k]}: {shown}  goal >= {goal_s}  {'MET' if val >= goal else 'NOT MET'}")
    rng_more = {}
    if "hhld_sim_torch32" in res and "rng_bound_2d" in res:
        for fig in ("median", "cpu_best", "cpu_median"):
            rng_more[fig] = res["hhld_sim_torch32"][fig] / res["rng_bound_2d"][fig]
        print("  hhld vs RNG bound from median wall times: {median:.1%}; from CPU time: best {cpu_best:.1%}, "
              "median {cpu_median:.1%}".format(**rng_more))
        disturbed = [k for k in ("hhld_sim_torch32", "rng_bound_2d") if res[k]["best"] < 0.9 * res[k]["cpu_best"]]
        rng_more["wall_disturbed"] = disturbed
        if disturbed:
            print(f"  WARNING: best wall time > 1.1 x best CPU time for {', '.join(disturbed)} (machine busy): "
                  "the wall-clock RNG-bound ratio is not meaningful in this run; see the CPU-time ratio")
    extra = {"hhld Simulation.run (torch f32) vs in-place torch update": ratio(hhld, best("torch_inplace"))}
    for k, v in extra.items():
        if v is not None:
            print(f"  {k}: {v:.2f}")

    dims = {key: land.dim for key, _, land in matrix_landscapes()}
    matrix = _matrix_ratios(res, dims)
    if matrix:
        print()
        print("Part 2, hhld vs the random-number bound (numbers/s / d), torch f32 unless noted; "
              "from best CPU time (best wall time):")
        print(f"{'workload':22s} " + " ".join(f"{ik + ' fused':>17s} {ik + ' ref':>15s}" for ik in INTEGRATOR_KEYS.values())
              + f" {'em inductor':>15s}")
        for key in dims:
            cells = []
            for ik in INTEGRATOR_KEYS.values():
                for variant, w in (("fused", 17), ("reference", 15)):
                    m = matrix.get(f"{key}_{ik}_{variant}")
                    cells.append(f"{m['cpu_best']:6.1%} ({m['best']:6.1%})".rjust(w) if m else "--".rjust(w))
            m = matrix.get(f"{key}_em_inductor")
            cells.append(f"{m['cpu_best']:6.1%} ({m['best']:6.1%})".rjust(15) if m else "--".rjust(15))
            print(f"{key:22s} " + " ".join(cells))
        fused = [v["cpu_best"] for k, v in matrix.items() if k.endswith("_fused")]
        if fused:
            lo = min(fused)
            print(f"ratio every built-in landscape and integrator vs RNG bound (worst, CPU time): {lo:.1%}  "
                  f"goal >= {GOAL_RNG:.0%}  {'MET' if lo >= GOAL_RNG else 'NOT MET'}")
        for key in ("user_autograd_em", "user_closed_em"):
            if key in matrix:
                v = matrix[key]["cpu_best"]
                print(f"ratio {key} vs RNG bound (CPU time): {v:.1%}  goal >= {GOAL_RNG_USER:.0%}  "
                      f"{'MET' if v >= GOAL_RNG_USER else 'NOT MET'}")
        for be in ("numpy32", "numpy64"):
            if f"dw2_em_{be}" in matrix:
                print(f"ratio dw2 euler_maruyama {be} vs numpy's generator (CPU time): "
                      f"{matrix[f'dw2_em_{be}']['cpu_best']:.1%}")

    out = {"machine": info, "params": {"N": N, "D": D, "dt": dt, "steps": a.steps, "repeats": a.repeats,
                                       "docs_particles": a.docs_particles, "docs_steps": a.docs_steps,
                                       "matrix_numbers": MATRIX_NUMBERS, "quick": a.quick},
           "results": res,
           "ratios": {k: {"value": v, "goal": g, "met": (None if v is None else v >= g)}
                      for k, (v, g) in ratios.items()},
           "matrix_ratios": matrix,
           "other_ratios": extra,
           "rng_bound_ratio_other_figures": rng_more}
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(out, fh, indent=2, default=str)
        print(f"wrote {a.json}")
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
