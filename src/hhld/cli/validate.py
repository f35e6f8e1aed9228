"""``hhld validate``: re-measure every claim of the HHLD documents and write the report."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer


def register(app: typer.Typer) -> None:
    """Add the validate command."""

    @app.command("validate")
    def validate(
        quick: bool = typer.Option(False, "--quick", help="Quick suite (default): every experiment at small scale."),
        full: bool = typer.Option(False, "--full", help="Full suite (documented times in docs/validation.md)."),
        only: Optional[List[str]] = typer.Option(None, "--only", help="Run only this experiment (repeatable)."),
        seeds: Optional[int] = typer.Option(None, "--seeds", min=1, help="Use seeds 0..N-1 instead of the config's seeds."),
        out: Path = typer.Option(Path("validation_report"), "--out", help="Run directory (cache and report)."),
        resume: bool = typer.Option(False, "--resume", help="Reuse every finished cell in --out; compute only the rest."),
        executor: str = typer.Option("local", "--executor", help="local | ray"),
        address: Optional[str] = typer.Option(None, "--address", help="Ray cluster address (default: start a local Ray)."),
        threads: int = typer.Option(1, "--threads", min=0,
                                    help="torch threads per cell (0: torch's default). One is fastest for "
                                         "these small models, above all on a busy machine."),
        quiet: bool = typer.Option(False, "--quiet", help="No progress bars or table."),
        list_: bool = typer.Option(False, "--list", help="List the experiments and exit."),
    ) -> None:
        """Run the validation suite: every claim of the documents re-measured, with a verdict.

        Writes OUT/report.html, report.md, results.json and figures/; the grokking experiment uses a GPU if present.
        """
        from hhld.validate.base import REGISTRY
        from hhld.validate.experiments import load_all
        from hhld.validate.runner import EXECUTORS, run_validation

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
        if quick and full:
            raise typer.BadParameter("give one of --quick / --full")
        if executor not in EXECUTORS:
            raise typer.BadParameter(f"--executor must be one of {EXECUTORS}, got {executor!r}")
        if only:
            unknown = [n for n in only if n not in REGISTRY]
            if unknown:
                raise typer.BadParameter(f"unknown experiment(s) {unknown}; known: {sorted(REGISTRY)}")
        vr = run_validation(out, scale="full" if full else "quick", only=only, n_seeds=seeds,
                            resume=resume, executor=executor, address=address, quiet=quiet,
                            threads=threads)
        if not quiet:
            typer.echo(f"wrote {out / 'report.html'}, {out / 'report.md'}, {out / 'results.json'}")
        failed = [r.name for r in vr.experiments if r.summarize_error or any(r.errors)]
        if failed:
            typer.echo(f"experiments with failed cells or summaries: {failed} (see results.json)", err=True)
            raise typer.Exit(1)
