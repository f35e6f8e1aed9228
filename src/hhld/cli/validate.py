"""``hhld validate``: re-measure every claim of the HHLD documents and write the report."""
from __future__ import annotations

import os

from pathlib import Path
from typing import List, Optional

import typer

from ._common import check_out_dir, cli_errors, fail, refuse_file, refuse_if_oversized

#: --seeds above this is refused outright (each seed multiplies the cells; the cache is one file per cell)
MAX_SEEDS = 10_000


def register(app: typer.Typer) -> None:
    """Add the validate command."""

    @app.command("validate")
    @cli_errors
    def validate(
        quick: bool = typer.Option(False, "--quick", help="Quick suite (default): every experiment at small scale."),
        full: bool = typer.Option(False, "--full", help="Full suite (documented times in docs/validation.md)."),
        only: Optional[List[str]] = typer.Option(None, "--only", help="Run only this experiment (repeatable)."),
        seeds: Optional[int] = typer.Option(None, "--seeds", help="Use seeds 0..N-1 instead of the config's seeds."),
        out: Path = typer.Option(Path("validation_report"), "--out", "-o", help="Run directory (cache and report)."),
        resume: bool = typer.Option(False, "--resume", help="Reuse every finished cell in --out; compute only the rest."),
        executor: str = typer.Option("local", "--executor", help="local | ray"),
        address: Optional[str] = typer.Option(None, "--address", help="Ray cluster address (default: start a local Ray)."),
        threads: int = typer.Option(1, "--threads",
                                    help="torch threads per cell (0: torch's default). One is fastest for "
                                         "these small models, above all on a busy machine."),
        force: bool = typer.Option(False, "--force", help="Run even when the up-front estimate exceeds the "
                                   "available memory or a day of compute."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or table."),
        list_: bool = typer.Option(False, "--list", help="List the experiments and exit."),
    ) -> None:
        """Run the validation suite: every claim of the documents re-measured, with a verdict.

        Writes OUT/report.html, report.md, results.json and figures/; the grokking experiment uses a GPU if present.
        """
        from hhld.validate.runner import EXECUTORS

        # cheap checks first: loading the experiments imports torch (seconds on a busy machine)
        if quick and full:
            raise typer.BadParameter("give one of --quick / --full", param_hint="'--quick' / '--full'")
        if executor not in EXECUTORS:
            raise typer.BadParameter(f"got {executor!r}; choose one of {', '.join(EXECUTORS)}",
                                     param_hint="'--executor'")
        if address is not None and executor != "ray":
            raise typer.BadParameter("--address is for --executor ray", param_hint="'--address'")
        if seeds is not None and not 1 <= seeds <= MAX_SEEDS:
            raise typer.BadParameter(f"got {seeds}; use 1 to {MAX_SEEDS} seeds", param_hint="'--seeds'")
        if not 0 <= threads <= (os.cpu_count() or 1):
            raise typer.BadParameter(f"got {threads}; use 0 (torch's default) or 1 to the number of CPUs "
                                     f"({os.cpu_count() or 1})", param_hint="'--threads'")
        if not list_:
            refuse_file(out)

        from hhld.validate.base import REGISTRY
        from hhld.validate.experiments import load_all
        from hhld.validate.runner import estimate, run_validation

        load_all()
        if list_:
            from rich.console import Console
            from rich.table import Table

            from hhld.validate.runner import _order_key

            t = Table("name", "title", "quick cells", "full cells")
            for name in sorted(REGISTRY, key=_order_key):
                e = REGISTRY[name]
                q, f = e.config("quick"), e.config("full")
                t.add_row(name, e.title, str(len(e.cells(q, q.seeds))), str(len(e.cells(f, f.seeds))))
            Console().print(t)
            return
        if only:
            unknown = [n for n in only if n not in REGISTRY]
            if unknown:
                raise typer.BadParameter(f"unknown experiment(s) {unknown}; known: {sorted(REGISTRY)}",
                                         param_hint="'--only'")
        scale = "full" if full else "quick"
        est = estimate(only, scale, seeds)
        refuse_if_oversized(f"this {scale} suite ({est['cells']:,} cells)", est["bytes"], est["seconds"], force,
                            time_limit_s=86400.0, how_to_shrink="use fewer --seeds or --only some experiments")
        out = check_out_dir(out)
        from hhld.validate.runner import ExecutorError

        try:
            vr = run_validation(out, scale=scale, only=only, n_seeds=seeds,
                                resume=resume, executor=executor, address=address, quiet=quiet,
                                threads=threads)
        except ExecutorError as exc:
            fail(str(exc))
        if not quiet:
            typer.echo(f"wrote {out / 'report.html'}, {out / 'report.md'}, {out / 'results.json'}")
        missing = sorted({m for r in vr.experiments for m in _missing_modules(r)})
        if missing:
            typer.echo(f"some cells could not run because a package is missing ({', '.join(missing)}): "
                       f"pip install {' '.join(_PIP_NAMES.get(m, m) for m in missing)}", err=True)
        failed = [r.name for r in vr.experiments if r.summarize_error or any(r.errors)]
        if failed:
            typer.echo(f"experiments with failed cells or summaries: {failed} (see results.json)", err=True)
            raise typer.Exit(1)


#: import name -> pip name, for the install hint
_PIP_NAMES = {"sklearn": "scikit-learn", "ray": "'hhld[ray]'"}


def _missing_modules(run) -> list[str]:
    """Top-level module names of ``No module named ...`` errors in a run's cells / summary."""
    import re

    found = []
    for err in list(run.errors) + [run.summarize_error]:
        if err:
            found += [m.split(".")[0] for m in re.findall(r"No module named '([\w.]+)'", err)]
    return found
