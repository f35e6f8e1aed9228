"""The documents' API (``hhld.HeisenbergLearning.train``, one particle) against the documents' own loop.

The contender is the documents' ``HeisenbergLearning`` class itself, executed from the
specification at ``../shared/spec/000_*.txt`` next to the repository (never copied into the
project); without the specification, the step-by-step transcription of it that the tests use
(``tests/documents_reference.py``). Both run the same workload after the same
``np.random.seed``, with stdout captured (both print a line per detected transition), and the
outputs are checked to be identical before any time is reported.

Workloads: the documents' Example 1 (2-D double well, 500 steps), the same for 20,000 steps,
and Example 2 (the 50-D quadratic, 1,000 steps). Reported: the best of ``--repeat`` runs of each,
interleaved (documents, hhld, documents, ...; the 500- and 1,000-step workloads 10x and 5x as
often), per step in microseconds, and the ratio documents / hhld (> 1: hhld is faster).

Run: ``.venv/bin/python benchmarks/bench_documents_api.py [--repeat 7]``
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.util
import io
import os
import pathlib
import platform
import subprocess
import time

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent


def _reference():
    spec = importlib.util.spec_from_file_location("documents_reference",
                                                  HERE.parent / "tests" / "documents_reference.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def cpu_model() -> str:
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def run(cls, workload, ref) -> tuple[float, dict]:
    name, n_steps = workload
    if name == "example2":
        kw = dict(loss_fn=ref.quadratic_loss, loss_grad_fn=ref.quadratic_grad, dim=50, eta=0.05, D=0.001,
                  lam=0.0001)
    else:
        kw = dict(loss_fn=ref.double_well_loss, loss_grad_fn=ref.double_well_grad, dim=2, eta=0.1, D=0.05,
                  lam=0.001)
    model = cls(**kw)
    np.random.seed(0)
    theta0 = np.random.randn(50) * 2.0 if name == "example2" else np.array([0.5, 0.5])
    with contextlib.redirect_stdout(io.StringIO()) as buf:
        t0 = time.perf_counter()
        out = model.train(theta0, n_steps=n_steps, dt=0.01)
        elapsed = time.perf_counter() - t0
    out["printed"] = buf.getvalue()
    return elapsed, out


def same(a: dict, b: dict) -> bool:
    return (a["printed"] == b["printed"] and a["transitions"] == b["transitions"]
            and all(np.array_equal(a[k], b[k]) for k in ("trajectory", "losses", "consolidations", "final_theta")))


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args(argv)

    from hhld import HeisenbergLearning

    ref = _reference()
    documents = ref.load_documents_class()
    who = "the documents' own class (from the specification)"
    if documents is None:
        documents, who = ref.ReferenceHeisenbergLearning, "the step-by-step transcription (no specification found)"
    workloads = [("example1", 500), ("example1", 20_000), ("example2", 1000)]
    rows = []
    for wl in workloads:
        best = {"documents": float("inf"), "hhld": float("inf")}
        outs = {}
        reps = args.repeat * max(1, 5000 // wl[1])  # short workloads more often: load spikes hit them hardest
        for _ in range(reps):
            for label, cls in (("documents", documents), ("hhld", HeisenbergLearning)):
                t, out = run(cls, wl, ref)
                best[label] = min(best[label], t)
                outs[label] = out
        if not same(outs["documents"], outs["hhld"]):
            raise SystemExit(f"outputs differ on {wl}: the comparison would not be like for like")
        n = wl[1]
        rows.append({"workload": f"{wl[0]}, {n} steps", "transitions": len(outs["hhld"]["transitions"]),
                     "documents_us": 1e6 * best["documents"] / n, "hhld_us": 1e6 * best["hhld"] / n,
                     "ratio": best["documents"] / best["hhld"]})
    print(f"# documents' API vs {who}")
    print(f"# {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}, {cpu_model()}, "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}, numpy {np.__version__}, best of {args.repeat} "
          "(x10 for 500 steps, x5 for 1,000)")
    print("outputs identical (stdout, trajectory, losses, C, transitions): yes")
    print()
    print("| workload | transitions | documents' loop (µs/step) | hhld train (µs/step) | ratio documents/hhld |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['workload']} | {r['transitions']} | {r['documents_us']:.2f} | {r['hhld_us']:.2f} | "
              f"{r['ratio']:.2f}x |")
    return rows


if __name__ == "__main__":
    main()
