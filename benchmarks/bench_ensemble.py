"""Ensemble performance benchmark (issue 2, "Performance").

One run, one machine, the documents' 2-D double well ``L = (th1^2 - 1)^2 + th2^2`` with
N particles of overdamped Langevin ``d th = -grad L dt + sqrt(2 D) dW`` (mu = 1,
D = 0.05, dt = 0.01), every contender timed by this script:

1. the documents' one-particle loop (our re-implementation of the reference ``step``:
   one ``np.random.randn(dim)`` per particle-step), timed on a subset and scaled;
2. a plain vectorised numpy float32 update;
3. BlackJAX's SGLD kernel, vmapped over particles and jit-compiled (steps in ``lax.scan``);
4. a jit-compiled JAX float32 ``lax.scan`` of the update;
5. an in-place torch float32 update;
6. torch's float32 normal generator (numbers/s) and the bound it implies for a 2-D
   update (numbers/s / 2 particle-steps/s);
7. hhld: ``euler_maruyama`` in a Python loop (torch f32, numpy f32, numpy f64) and
   ``Simulation.run`` (torch f32, default non-finite checks) -- the library path.

Figures are particle-steps per second, best of ``--repeats`` (median also reported, and
the same figures from process CPU time, which leaves out waits for a core);
warm-up (and JAX compilation) is excluded. Repeats are interleaved across the
contenders (repeat 1 of everything, then repeat 2, ...; the order rotates by one
contender every repeat) so that load from other users of a shared machine, and worker
threads left spinning by a multi-threaded contender, hit them alike.

BlackJAX's SGLD step is ``th += eps * grad log p + sqrt(2 T eps) xi``. With ``T = 1``,
``log p = -mu L / D`` and ``eps = D dt`` this is exactly the Euler-Maruyama step of the
SDE above: ``eps grad log p = -mu grad L dt`` and ``sqrt(2 eps) = sqrt(2 D dt)``.

Usage::

    python benchmarks/bench_ensemble.py                 # full run (N = 1e5)
    python benchmarks/bench_ensemble.py --quick         # small smoke run (tests)
    python benchmarks/bench_ensemble.py --json out.json --threads 1
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
GOAL_RNG = 0.70


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


def hhld_step_loop(N, D, dt, seed, backend):
    from hhld.dynamics.integrators import euler_maruyama, init_overdamped
    from hhld.landscapes import double_well_2d

    L = double_well_2d()
    if backend == "torch32":
        import torch

        rng = torch.Generator().manual_seed(seed)
        theta0 = torch.zeros(N, 2, dtype=torch.float32)
    else:
        rng = np.random.default_rng(seed)
        theta0 = np.zeros((N, 2), dtype=np.float32 if backend == "numpy32" else np.float64)
    box = {"st": init_overdamped(L, theta0)}

    def run(n):
        st = box["st"]
        for _ in range(n):
            st = euler_maruyama(rng, st, L, dt=dt, D=D)
        box["st"] = st

    return run


def hhld_simulation(N, D, dt, seed):
    import torch

    from hhld.dynamics import Simulation
    from hhld.landscapes import double_well_2d

    sim = Simulation(double_well_2d(), torch.zeros(N, 2, dtype=torch.float32), dt=dt, D=D,
                     rng=torch.Generator().manual_seed(seed))
    return lambda n: sim.run(n)


# ---------------------------------------------------------------------- main
def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=100_000, help="particles (default 1e5)")
    p.add_argument("--steps", type=int, default=20, help="steps per timed repeat (default 20)")
    p.add_argument("--repeats", type=int, default=25, help="timed repeats per contender (default 25)")
    p.add_argument("--docs-particles", type=int, default=1000,
                   help="subset of particles for the documents' loop (default 1000)")
    p.add_argument("--docs-steps", type=int, default=10, help="steps per repeat of the documents' loop")
    p.add_argument("--D", type=float, default=0.05)
    p.add_argument("--dt", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None,
                   help="torch.set_num_threads for this process (default: torch's default)")
    p.add_argument("--no-jax", action="store_true", help="skip the JAX / BlackJAX contenders")
    p.add_argument("--only", default=None, metavar="KEYS",
                   help="comma-separated contender keys to time (ratios needing others are skipped)")
    p.add_argument("--quick", action="store_true", help="tiny sizes for a smoke test (figures meaningless)")
    p.add_argument("--json", metavar="PATH", default=None, help="also write the results as JSON")
    a = p.parse_args(argv)
    if a.quick:
        a.n, a.steps, a.repeats, a.docs_particles, a.docs_steps = 2000, 5, 2, 50, 2
    return a


def main(argv=None) -> dict:
    a = parse(argv)
    import torch

    if a.threads is not None:
        torch.set_num_threads(a.threads)
    info = machine_info()
    info.update(torch=torch.__version__, torch_threads=torch.get_num_threads())
    N, D, dt = a.n, a.D, a.dt

    have_jax = False
    if not a.no_jax:
        try:
            import blackjax  # noqa: F401
            import jax

            have_jax = True
            info.update(jax=jax.__version__, blackjax=getattr(blackjax, "__version__", "?"),
                        jax_devices=str(jax.devices()))
        except ImportError as exc:
            print(f"# jax/blackjax not installed ({exc}); skipping their rows "
                  "(pip install -e '.[bench]')", flush=True)

    cs: list[Contender] = [
        Contender("docs_loop", "documents' one-particle loop (numpy f64, scaled from subset)",
                  docs_loop(a.docs_particles, D, dt, a.seed), a.docs_particles, a.docs_steps),
        Contender("numpy32", "plain vectorised numpy f32", numpy_vectorised(N, D, dt, a.seed), N, a.steps),
    ]
    if have_jax:
        print("# compiling JAX contenders ...", flush=True)
        cs.append(Contender("blackjax_sgld", "BlackJAX SGLD, vmapped + jit (scan)",
                            blackjax_sgld(N, D, dt, a.seed, a.steps), N, a.steps, serial=False))
        cs.append(Contender("jax_scan", "JAX f32 lax.scan, jit", jax_scan(N, D, dt, a.seed, a.steps), N, a.steps,
                            serial=False))
    cs += [
        Contender("torch_inplace", "in-place torch f32 update", torch_inplace(N, D, dt, a.seed), N, a.steps,
                  serial=False),
        Contender("torch_rng", "torch f32 normal generator", torch_rng(N, a.seed), N, a.steps,
                  unit="numbers/s", count_per_step=2 * N),
        Contender("hhld_em_torch32", "hhld euler_maruyama loop, torch f32",
                  hhld_step_loop(N, D, dt, a.seed, "torch32"), N, a.steps),
        Contender("hhld_em_numpy32", "hhld euler_maruyama loop, numpy f32",
                  hhld_step_loop(N, D, dt, a.seed, "numpy32"), N, a.steps),
        Contender("hhld_em_numpy64", "hhld euler_maruyama loop, numpy f64",
                  hhld_step_loop(N, D, dt, a.seed, "numpy64"), N, a.steps),
        Contender("hhld_sim_torch32", "hhld Simulation.run, torch f32 (library path)",
                  hhld_simulation(N, D, dt, a.seed), N, a.steps),
    ]
    if a.only:
        keep = set(a.only.split(","))
        cs = [c for c in cs if c.key in keep]
    for c in cs:  # warm-up, excluded
        c.run(c.n_steps)
    if any(c.key.startswith("hhld") for c in cs):
        from hhld.dynamics import integrators as _integrators

        info["hhld_c_kernel"] = getattr(_integrators, "C_KERNEL_STATUS", "none in this library version")
    for r in range(a.repeats):  # interleaved repeats, in an order rotated every repeat so
        k = r % len(cs)          # that no contender always runs right after the same one
        for c in cs[k:] + cs[:k]:  # (e.g. after one that leaves worker threads spinning)
            c.time_once()
        print(f"# repeat {r + 1}/{a.repeats} done", flush=True)
    try:
        info["loadavg_end"] = os.getloadavg()[0]
    except OSError:
        pass

    res = {c.key: {"label": c.label, "best": c.best, "median": c.median, "unit": c.unit,
                   "cpu_best": c.cpu_best, "cpu_median": c.cpu_median,
                   "particles": c.n_particles, "steps": c.n_steps, "repeats": len(c.times)} for c in cs}
    if "torch_rng" in res:
        res["rng_bound_2d"] = {"label": "implied bound for a 2-D update (numbers/s / 2)",
                               **{k: res["torch_rng"][k] / 2.0 for k in ("best", "median", "cpu_best", "cpu_median")},
                               "unit": "particle-steps/s"}

    print()
    print(f"Ensemble benchmark: 2-D double well, N={N}, D={D}, dt={dt}, {a.steps} steps x {a.repeats} "
          f"repeats (best / median){'  [QUICK: figures meaningless]' if a.quick else ''}")
    print(f"machine: {info['cpu']}, {info['cores']} cores, torch threads {info['torch_threads']}, {info['date']}")
    if "hhld_c_kernel" in info:
        print(f"hhld fused C kernel: {info['hhld_c_kernel']}")
    print(f"{'contender':58s} {'best':>10s} {'median':>10s}  {'cpu best':>10s} {'cpu med':>10s}  unit")
    for k, v in res.items():
        cpu = "".join("         --" if v[f] is None else f" {v[f] / 1e6:9.2f}M" for f in ("cpu_best", "cpu_median"))
        print(f"{v['label']:58s} {v['best'] / 1e6:9.2f}M {v['median'] / 1e6:9.2f}M {cpu}  {v['unit']}")

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
    print("Ratios (hhld = Simulation.run, torch f32, best of repeats):")
    names = {"hhld_vs_docs_loop": "hhld vs documents' loop", "hhld_vs_blackjax_sgld": "hhld vs BlackJAX SGLD",
             "hhld_vs_rng_bound": "hhld vs RNG bound"}
    for k, (val, goal) in ratios.items():
        pct = k == "hhld_vs_rng_bound"
        goal_s = f"{goal:.0%}" if pct else f"{goal:g}x"
        if val is None:
            why = "jax not installed" if k == "hhld_vs_blackjax_sgld" and not have_jax else "not timed"
            print(f"ratio {names[k]}: skipped ({why})  goal >= {goal_s}")
            continue
        shown = f"{val:.1%}" if pct else f"{val:.1f}x"
        print(f"ratio {names[k]}: {shown}  goal >= {goal_s}  {'MET' if val >= goal else 'NOT MET'}")
    extra = {"hhld euler_maruyama step loop (torch f32) vs RNG bound": ratio(best("hhld_em_torch32"), best("rng_bound_2d")),
             "hhld euler_maruyama step loop (torch f32) vs in-place torch update":
                 ratio(best("hhld_em_torch32"), best("torch_inplace")),
             "hhld Simulation.run (torch f32) vs in-place torch update": ratio(hhld, best("torch_inplace")),
             "hhld euler_maruyama (numpy f32) vs plain numpy f32": ratio(best("hhld_em_numpy32"), best("numpy32"))}
    for k, v in extra.items():
        if v is not None:
            print(f"  {k}: {v:.2f}")
    # the same RNG-bound ratio from median wall times and from the calling thread's CPU time
    # (both contenders are serial: CPU time leaves out the time spent waiting for a core)
    rng_more = {}
    if "hhld_sim_torch32" in res and "rng_bound_2d" in res:
        for fig in ("median", "cpu_best", "cpu_median"):
            rng_more[fig] = res["hhld_sim_torch32"][fig] / res["rng_bound_2d"][fig]
        print("  hhld vs RNG bound from median wall times: {median:.1%}; from CPU time: best {cpu_best:.1%}, "
              "median {cpu_median:.1%}".format(**rng_more))
        # a serial contender whose best wall time is well above its best CPU time never had
        # a repeat to itself: its wall figure (and a wall ratio built on it) is load, not speed
        disturbed = [k for k in ("hhld_sim_torch32", "rng_bound_2d") if res[k]["best"] < 0.9 * res[k]["cpu_best"]]
        rng_more["wall_disturbed"] = disturbed
        if disturbed:
            print(f"  WARNING: best wall time > 1.1 x best CPU time for {', '.join(disturbed)} (machine busy): "
                  "the wall-clock RNG-bound ratio is not meaningful in this run; see the CPU-time ratio")

    out = {"machine": info, "params": {"N": N, "D": D, "dt": dt, "steps": a.steps, "repeats": a.repeats,
                                       "docs_particles": a.docs_particles, "docs_steps": a.docs_steps,
                                       "quick": a.quick},
           "results": res,
           "ratios": {k: {"value": v, "goal": g, "met": (None if v is None else v >= g)}
                      for k, (v, g) in ratios.items()},
           "other_ratios": extra,
           "rng_bound_ratio_other_figures": rng_more}
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(out, fh, indent=2)
        print(f"wrote {a.json}")
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
