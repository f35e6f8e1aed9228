"""Run the cells of the selected experiments with an on-disk cache, resume and executors.

Layout of a run directory ``out``::

    out/cells/<experiment>/<hash>.json   one finished cell: {"cell", "result", "timing_s", ...}
    out/results.json, report.html, report.md, figures/*.png   (written by hhld.validate.report)

The hash is :meth:`hhld.validate.base.Cell.cache_key`: experiment, config, cell key, seed
and the hhld version. With ``resume=True`` every cell whose file exists is loaded, not
recomputed, once its record passes a check (a JSON object naming this cell, with a ``result``
of the shape the experiment returns: :meth:`hhld.validate.base.Experiment.check_result`); a file
that fails it (``"result": null``, ``[]``, no ``result`` ...) is recomputed with a
:class:`~hhld.validate.base.CacheWarning`, never summarised. Without ``resume`` every cell is
recomputed (and its file overwritten). Cells are
independent and pure, and ``summarize`` always receives them in the order ``cells()``
lists them, so a run interrupted and resumed gives the same numbers as one that was not.
"""
from __future__ import annotations

import contextlib
import json
import os
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from .. import __version__
from .base import REGISTRY, CacheWarning, Cell, Experiment, ExperimentConfig, ExperimentReport, to_jsonable

__all__ = ["ExperimentRun", "ValidationRun", "plan", "run_validation", "run_cell_timed",
           "InjectedFault", "ExecutorError", "EXECUTORS", "estimate"]

EXECUTORS = ("local", "ray")


class InjectedFault(RuntimeError):
    """Raised by the runner's fault-injection hook (tests of kill-and-resume)."""


class ExecutorError(RuntimeError):
    """The executor could not start (e.g. Ray timing out on a loaded machine); the message says
    what to do instead."""


#: measured mean wall time of one cell (2-core CPU, 2026-11): the quick suite's 120 cells in
#: 81-97 s, the full suite's 544 cells in about 4.5 h (docs/validation.md)
CELL_SECONDS = {"quick": 0.8, "full": 30.0, "smallest": 0.8}
#: memory held per cell until the report is written (result dict, JSON text, cell record);
#: measured on the quick suite (results.json / cells), with a factor 4 for the Python objects
CELL_BYTES = 64 * 1024


def estimate(only: Sequence[str] | None = None, scale: str = "quick", n_seeds: int | None = None) -> dict:
    """``{"cells", "seconds", "bytes"}`` of a run, without listing every cell: each experiment's
    cell count is linear in the number of seeds (counted at one and two seeds)."""
    total = 0
    for exp in _select(only):
        cfg = exp.config(scale)
        if n_seeds is None:
            total += len(exp.cells(cfg, tuple(cfg.seeds)))
            continue
        c1 = len(exp.cells(cfg.with_seeds(1), (0,)))
        c2 = len(exp.cells(cfg.with_seeds(2), (0, 1)))
        total += c1 + (c2 - c1) * (int(n_seeds) - 1)
    per = CELL_SECONDS.get(scale, CELL_SECONDS["full"])
    return {"cells": total, "seconds": total * per, "bytes": 300 * 2 ** 20 + total * CELL_BYTES}


@dataclass
class ExperimentRun:
    """One experiment of a run: its config, cells, results (in ``cells`` order) and report."""

    experiment: Experiment
    config: ExperimentConfig
    cells: list[Cell]
    results: list[dict | None] = field(default_factory=list)
    timings: list[float | None] = field(default_factory=list)
    cached: list[bool] = field(default_factory=list)
    errors: list[str | None] = field(default_factory=list)
    report: ExperimentReport | None = None
    summarize_error: str | None = None
    summarize_s: float = 0.0
    cache_rejected: list[str] = field(default_factory=list)   # cached cells recomputed, and why

    @property
    def name(self) -> str:
        return self.experiment.name


@dataclass
class ValidationRun:
    out: Path
    scale: str
    executor: str
    experiments: list[ExperimentRun]
    started: float
    finished: float = 0.0
    device: str = "cpu"
    n_seeds: int | None = None
    threads: int | None = None   # torch threads per cell (None: torch's own setting)

    @property
    def wall_s(self) -> float:
        return self.finished - self.started


# ---------------------------------------------------------------------- planning
def _select(only: Sequence[str] | None) -> list[Experiment]:
    from .experiments import load_all

    load_all()
    if not only:
        return [REGISTRY[k] for k in sorted(REGISTRY, key=_order_key)]
    unknown = [n for n in only if n not in REGISTRY]
    if unknown:
        raise ValueError(f"unknown experiment(s) {unknown}; known: {sorted(REGISTRY)}")
    return [REGISTRY[n] for n in only]


#: report order: the documents' validation table first, then the theorems
_ORDER = ["tunneling_rate", "uncertainty", "energy_entropy", "convergence", "phase_transition",
          "consolidation_equilibrium", "grokking", "double_descent", "optimal_lr", "dimension", "width"]


def _order_key(name: str):
    return (_ORDER.index(name) if name in _ORDER else len(_ORDER), name)


def plan(only: Sequence[str] | None = None, scale: str = "quick", n_seeds: int | None = None,
         configs: dict[str, ExperimentConfig] | None = None) -> list[ExperimentRun]:
    """Experiments, configs and cells of a run (nothing is computed)."""
    runs = []
    for exp in _select(only):
        cfg = (configs or {}).get(exp.name) or exp.config(scale)
        if n_seeds is not None:
            cfg = cfg.with_seeds(n_seeds)
        cells = exp.cells(cfg, tuple(cfg.seeds))
        for c in cells:
            if c.experiment != exp.name:
                raise ValueError(f"{exp.name}.cells() returned a cell of {c.experiment!r}")
        runs.append(ExperimentRun(exp, cfg, cells, [None] * len(cells), [None] * len(cells),
                                  [False] * len(cells), [None] * len(cells)))
    return runs


# ---------------------------------------------------------------------- cache
def _cache_path(out: Path, cell: Cell, config: ExperimentConfig) -> Path:
    return out / "cells" / cell.experiment / f"{cell.cache_key(config, __version__)}.json"


def _load_cached(path: Path) -> dict | None:
    """The cell file at ``path``, or None when there is none (a file that cannot be read or parsed
    is returned as ``{"_unreadable": reason}``)."""
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        return {"_unreadable": f"{type(exc).__name__}: {exc}"}


def _check_cached(payload: Any, cell: Cell, run: "ExperimentRun") -> str | None:
    """Why the cached ``payload`` cannot be used for ``cell`` (None: it can)."""
    if not isinstance(payload, dict):
        return f"the file holds a {type(payload).__name__}, not a cell record"
    if "_unreadable" in payload:
        return f"unreadable ({payload['_unreadable']})"
    if payload.get("cell") != cell.to_dict():
        return "it records another cell"
    if "result" not in payload:
        return "it has no 'result'"
    try:
        run.experiment.check_result(run.config, cell, payload["result"])
    except ValueError as exc:
        return str(exc)
    t = payload.get("timing_s")
    if t is not None and not (isinstance(t, (int, float)) and not isinstance(t, bool)):
        return f"its timing_s is {t!r}"
    return None


def _write_atomic(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(payload, allow_nan=True))
    os.replace(tmp, path)


@contextlib.contextmanager
def torch_threads(n: int | None):
    """Run the body with ``torch.set_num_threads(n)`` and restore the previous value after.

    ``None`` or ``0`` leaves torch's setting alone. The cells of the suite are small models and
    ensembles: on a shared or busy machine, torch's intra-op pool waiting at its barriers costs
    far more than a second thread gains (measured: a double-descent MLP cell 3.5 s with one
    thread against 25 s with two while the other core was busy), so the suite runs each cell
    on one thread by default and gets its parallelism from the executor.
    """
    if not n:
        yield
        return
    if n < 0:
        raise ValueError(f"threads must be >= 0 (0: torch's default), got {n}")
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_cell_timed(name: str, config: ExperimentConfig, cell: Cell,
                   threads: int | None = None) -> tuple[dict, float]:
    """Run one cell (in this process): ``(JSON-round-tripped result, seconds)``.

    ``threads``: torch intra-op threads for the cell (None/0: leave torch's setting alone)."""
    from .experiments import load_all

    load_all()
    exp = REGISTRY[name]
    with torch_threads(threads):
        t0 = time.perf_counter()
        res = exp.run_cell(config, cell)
        dt = time.perf_counter() - t0
    if not isinstance(res, dict):
        raise TypeError(f"{name}.run_cell must return a dict, got {type(res).__name__}")
    # the cache stores JSON; return exactly what a cache hit would return
    res = json.loads(json.dumps(to_jsonable(res), allow_nan=True))
    try:
        exp.check_result(config, cell, res)
    except ValueError as exc:
        raise TypeError(f"{name}.run_cell returned a result that fails its own check: {exc}") from None
    return res, dt


# ---------------------------------------------------------------------- progress
class _Progress:
    def __init__(self, quiet: bool, runs: list[ExperimentRun]):
        self.quiet = quiet
        self.p = None
        self.tasks: dict[str, Any] = {}
        if quiet:
            return
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeElapsedColumn)

        self.p = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                          TimeElapsedColumn(), transient=False)
        self.p.start()
        for r in runs:
            self.tasks[r.name] = self.p.add_task(f"[bold]{r.name}", total=len(r.cells))
        self.cell_task = self.p.add_task("  cell", total=1, visible=False)

    def cell_start(self, cell: Cell):
        if self.p is not None:
            self.p.update(self.cell_task, description=f"  {cell.label}", completed=0, total=1, visible=True)

    def cell_done(self, cell: Cell):
        if self.p is not None:
            self.p.update(self.cell_task, completed=1)
            self.p.advance(self.tasks[cell.experiment])

    def stop(self):
        if self.p is not None:
            self.p.update(self.cell_task, visible=False)
            self.p.stop()


# ---------------------------------------------------------------------- run
def run_validation(out: str | Path, *, scale: str = "quick", only: Sequence[str] | None = None,
                   n_seeds: int | None = None, resume: bool = False, executor: str = "local",
                   address: str | None = None, quiet: bool = False,
                   configs: dict[str, ExperimentConfig] | None = None,
                   write_report: bool = True, fault_after: int | None = None,
                   ray_num_cpus: int | None = None, threads: int | None = 1,
                   on_cell: Callable[[Cell, dict], None] | None = None) -> ValidationRun:
    """Run (or resume) a validation suite into ``out`` and write the report.

    ``fault_after=k`` raises :class:`InjectedFault` after k cells have been computed in this
    call (cache hits do not count); it simulates a run killed in the middle (also from the
    environment variable ``HHLD_VALIDATE_FAULT_AFTER``). ``configs`` overrides the config of
    named experiments (tests use ``smallest()``). ``threads``: torch intra-op threads per cell
    (default 1, see :func:`torch_threads`; None or 0 keeps torch's own setting).
    """
    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {EXECUTORS}, got {executor!r}")
    if fault_after is None and os.environ.get("HHLD_VALIDATE_FAULT_AFTER"):
        fault_after = int(os.environ["HHLD_VALIDATE_FAULT_AFTER"])
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    from .base import device

    runs = plan(only, scale, n_seeds, configs)
    vr = ValidationRun(out=out, scale=scale, executor=executor, experiments=runs,
                       started=time.time(), device=device(), n_seeds=n_seeds,
                       threads=threads or None)

    # cache hits; a malformed cell file is recomputed with a warning, never summarised
    todo: list[tuple[ExperimentRun, int]] = []
    for r in runs:
        for i, c in enumerate(r.cells):
            path = _cache_path(out, c, r.config)
            hit = _load_cached(path) if resume else None
            if hit is not None:
                why = _check_cached(hit, c, r)
                if why is None:
                    r.results[i], r.timings[i], r.cached[i] = hit["result"], hit.get("timing_s"), True
                    continue
                msg = f"cached cell {c.label} ({path}) is not usable: {why}; recomputing it"
                r.cache_rejected.append(msg)
                warnings.warn(msg, CacheWarning, stacklevel=2)
            todo.append((r, i))

    prog = _Progress(quiet, runs)
    try:
        for r in runs:
            if prog.p is not None:
                prog.p.update(prog.tasks[r.name], completed=sum(r.cached))
        computed = 0

        def finish(r: ExperimentRun, i: int, res: dict, dt: float):
            nonlocal computed
            c = r.cells[i]
            r.results[i], r.timings[i] = res, dt
            _write_atomic(_cache_path(out, c, r.config),
                          {"cell": c.to_dict(), "config": r.config.to_dict(), "result": res,
                           "timing_s": dt, "hhld_version": __version__, "device": vr.device,
                           "finished": time.time()})
            prog.cell_done(c)
            if on_cell is not None:
                on_cell(c, res)
            computed += 1
            if fault_after is not None and computed >= fault_after:
                raise InjectedFault(f"injected fault after {computed} computed cells")

        if executor == "local":
            for r, i in todo:
                prog.cell_start(r.cells[i])
                try:
                    res, dt = run_cell_timed(r.name, r.config, r.cells[i], threads)
                except Exception:  # one broken cell must not stop the suite; it is not cached
                    r.errors[i] = traceback.format_exc()
                    prog.cell_done(r.cells[i])
                    continue
                finish(r, i, res, dt)
        else:
            _run_ray(todo, finish, prog, address, ray_num_cpus, threads)
    finally:
        prog.stop()

    for r in runs:
        t0 = time.perf_counter()
        try:
            ok = [(c, res) for c, res in zip(r.cells, r.results) if res is not None]
            if not ok:
                raise RuntimeError(f"every cell of {r.name} failed:\n" + "\n".join(e for e in r.errors if e))
            r.report = r.experiment.summarize(r.config, ok)
        except Exception:  # a broken summary must not lose the others' report
            r.summarize_error = traceback.format_exc()
        r.summarize_s = time.perf_counter() - t0
    vr.finished = time.time()
    if write_report:
        from .report import write_report as _write

        _write(vr, quiet=quiet)
    return vr


def _ray_init(ray, address, num_cpus) -> None:
    """``ray.init`` with a clear :class:`ExecutorError` instead of Ray's traceback when it fails
    (a local Ray times out during startup on a loaded machine: seen after 38 s)."""
    kw: dict[str, Any] = {"ignore_reinit_error": True, "log_to_driver": False,
                          "include_dashboard": False}
    if address:
        kw["address"] = address
    elif num_cpus:
        kw["num_cpus"] = num_cpus
    try:
        ray.init(**kw)
    except Exception as exc:  # noqa: BLE001 - Ray raises many types (TimeoutError, ConnectionError, ...)
        what = f"could not connect to the Ray cluster at --address {address}" if address else \
            "could not start a local Ray"
        reason = " ".join(str(exc).split())[:300] or type(exc).__name__
        hint = ("check the address (`ray status` on the head node) or use --executor local" if address else
                "on a loaded machine Ray's startup can time out: start it yourself with `ray start --head` and "
                "pass --address auto (or the address it prints), or use --executor local")
        raise ExecutorError(f"{what} ({type(exc).__name__}: {reason}); {hint}") from None


def _run_ray(todo, finish, prog, address, num_cpus, threads=None):
    try:
        import ray
    except ImportError:
        raise ExecutorError("--executor ray needs Ray, which is not installed: pip install 'hhld[ray]' "
                            "(or use --executor local)") from None
    started_here = False
    if not ray.is_initialized():
        _ray_init(ray, address, num_cpus)
        started_here = True
    try:
        task = ray.remote(num_cpus=1)(run_cell_timed)
        pending = {}
        for r, i in todo:
            ref = task.remote(r.name, r.config, r.cells[i], threads)
            pending[ref] = (r, i)
            prog.cell_start(r.cells[i])
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                r, i = pending.pop(ref)
                try:
                    res, dt = ray.get(ref)
                except Exception:
                    r.errors[i] = traceback.format_exc()
                    prog.cell_done(r.cells[i])
                    continue
                finish(r, i, res, dt)
    finally:
        if started_here:
            ray.shutdown()
