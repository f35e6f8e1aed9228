"""The report of a validation run: results.json, report.md, report.html (self-contained,
figures embedded as base64 PNG), figures/*.png and the summary table on the terminal."""
from __future__ import annotations

import base64
import dataclasses
import html
import io
import json
import math
import platform
import sys
import time
from pathlib import Path
from typing import Any

from .. import __version__
from .base import VERDICTS, Row, claim, clean_nonfinite, to_jsonable

__all__ = ["write_report", "versions", "summary_rows", "strict_json", "verdict_line", "caption"]

TABLE_HEADER = ("Prediction", "Documents' value", "Measured (± uncertainty)", "Error", "Verdict")
_VERDICT_COLOUR = {"holds": "#1a7f37", "fails": "#cf222e", "partly": "#9a6700", "inconclusive": "#57606a"}
_VERDICT_RICH = {"holds": "green", "fails": "red", "partly": "yellow", "inconclusive": "dim"}


def versions() -> dict:
    out = {"hhld": __version__, "python": sys.version.split()[0]}
    for mod in ("numpy", "scipy", "torch", "matplotlib"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:  # pragma: no cover
            out[mod] = None
    return out


def strict_json(obj: Any) -> Any:
    """JSON-able with non-finite floats replaced by None (results.json is strict JSON)."""
    obj = to_jsonable(obj)
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [strict_json(v) for v in obj]
    return obj


def _platform() -> dict:
    info = {"system": platform.system(), "release": platform.release(), "machine": platform.machine(),
            "processor": platform.processor(), "node": platform.node()}
    try:
        import os

        info["cpu_count"] = os.cpu_count()
        import torch

        info["torch_threads"] = torch.get_num_threads()
        info["cuda"] = torch.cuda.is_available()
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except Exception:  # pragma: no cover
        pass
    return info


def _error_row(name: str, err: str) -> Row:
    return Row(prediction=f"{name}: summary failed", documents_value="-", measured=None, uncertainty=None,
               error=err.strip().splitlines()[-1][:200], verdict="inconclusive", notes="see results.json")


def summary_rows(vr) -> list[tuple[str, Row]]:
    rows = []
    for r in vr.experiments:
        if r.report is None:
            rows.append((r.name, _error_row(r.name, r.summarize_error or "no report")))
        else:
            failed = sum(e is not None for e in r.errors)
            for row in r.report.rows:
                if failed and not row.has_value() and not row.reason:
                    row = dataclasses.replace(row, reason=f"{failed} of {len(r.cells)} cells failed: "
                                                          f"{_first_error(r.errors)}")
                rows.append((r.name, row))
    return rows


def _first_error(errors) -> str:
    """The last line of the first traceback (the exception and its message)."""
    for e in errors:
        if e:
            return e.strip().splitlines()[-1][:200]
    return ""


def verdict_line(counts: dict) -> str:
    """``"17 holds, 6 partly, 38 fails, 5 inconclusive (66 rows)"`` in the order of VERDICTS."""
    parts = [f"{counts[v]} {v}" for v in VERDICTS if counts.get(v)]
    total = sum(counts.values())
    return f"{', '.join(parts) or 'no verdicts'} ({total} row{'s' if total != 1 else ''})"


def caption(experiment_title: str, name: str, fig, captions: dict | None = None) -> str:
    """A figure's caption: the experiment's own (``ExperimentReport.captions``), else built from the
    figure's titles (suptitle, else the panels' titles), else from its name."""
    if captions and captions.get(name):
        return str(captions[name])
    text = ""
    sup = getattr(fig, "_suptitle", None)
    if sup is not None and sup.get_text().strip():
        text = sup.get_text().strip()
    else:
        titles = [ax.get_title().strip() for ax in getattr(fig, "axes", []) if ax.get_title().strip()]
        if titles:
            text = "; ".join(dict.fromkeys(titles))
    if not text:
        text = name.replace("_", " ")
    return f"{experiment_title}: {' '.join(text.split())}"


def _fig_png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def write_report(vr, quiet: bool = False) -> dict:
    """Write every report file of the run ``vr`` (a :class:`~hhld.validate.runner.ValidationRun`);
    return the results.json content."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    out = Path(vr.out)
    figdir = out / "figures"
    figdir.mkdir(parents=True, exist_ok=True)
    figures: dict[str, list[tuple[str, str, bytes]]] = {}
    exps = {}
    for r in vr.experiments:
        figs = []
        if r.report is not None:
            for fname, fig in r.report.figures.items():
                cap = caption(r.experiment.title, fname, fig, r.report.captions)
                png = _fig_png(fig)
                plt.close(fig)
                rel = f"figures/{r.name}_{fname}.png"
                (out / rel).write_bytes(png)
                figs.append((cap, rel, png))
        figures[r.name] = figs
        exps[r.name] = {
            "title": r.experiment.title,
            "description": r.experiment.description,
            "config": r.config.to_dict(),
            "seeds": list(r.config.seeds),
            "rows": [row.to_dict() for row in (r.report.rows if r.report else [])],
            "notes": r.report.notes if r.report else "",
            "data": r.report.data if r.report else {},
            "summarize_error": r.summarize_error,
            "figures": [rel for _, rel, _ in figs],
            "captions": [cap for cap, _, _ in figs],
            "cache_rejected": list(r.cache_rejected),
            "cells": [{"cell": c.to_dict(), "result": res, "timing_s": t, "cached": cached, "error": err}
                      for c, res, t, cached, err in zip(r.cells, r.results, r.timings, r.cached, r.errors)],
            "failed_cells": sum(e is not None for e in r.errors),
            "compute_s": float(sum(t for t in r.timings if t is not None)),
            "summarize_s": r.summarize_s,
        }
    results = {
        "hhld_version": __version__,
        "versions": versions(),
        "platform": _platform(),
        "device": vr.device,
        "scale": vr.scale,
        "executor": vr.executor,
        "n_seeds": vr.n_seeds,
        "torch_threads_per_cell": vr.threads,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(vr.started)),
        "wall_s": vr.wall_s,
        "documents_overall_claim": claim("all_validated"),
        "verdict_counts": _counts(vr),
        "verdict_line": verdict_line(_counts(vr)),
        "experiments": exps,
    }
    results = strict_json(results)
    (out / "results.json").write_text(json.dumps(results, indent=1, allow_nan=False))
    (out / "report.md").write_text(_markdown(vr, results, figures))
    (out / "report.html").write_text(_html(vr, results, figures))
    if not quiet:
        print_table(vr)
    return results


def _counts(vr) -> dict:
    c: dict[str, int] = {}
    for _, row in summary_rows(vr):
        c[row.verdict] = c.get(row.verdict, 0) + 1
    return c


def print_table(vr) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"hhld validate ({vr.scale}) — {vr.out}", show_lines=True)
    for h in TABLE_HEADER:
        t.add_column(h, overflow="fold")
    for _, row in summary_rows(vr):
        col = _VERDICT_RICH[row.verdict]
        t.add_row(row.prediction, row.documents_value, row.measured_text(), row.error_text(),
                  f"[{col}]{row.verdict}[/{col}]")
    console = Console()
    console.print(t)
    console.print(f"verdicts: {verdict_line(_counts(vr))}; wall time {vr.wall_s:.1f} s; "
                  f"report: {Path(vr.out) / 'report.html'}")


def _health_lines(r, e) -> list[str]:
    """What the reader must know about missing cells: failed ones and recomputed cache entries."""
    lines = []
    if e["failed_cells"]:
        lines += ["", f"**{e['failed_cells']} of {len(r.cells)} cells failed** (the summary uses the other "
                      f"{len(r.cells) - e['failed_cells']}; tracebacks in results.json): {_first_error(r.errors)}"]
    if r.cache_rejected:
        lines += ["", f"{len(r.cache_rejected)} cached cell(s) were malformed and recomputed."]
    return lines


def _md_cell(s: str) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def _markdown(vr, results, figures) -> str:
    lines = [f"# hhld validate — {vr.scale} suite", "",
             f"hhld {__version__}, {results['started']}, device {vr.device}, "
             f"wall time {vr.wall_s:.1f} s, executor {vr.executor}.", "",
             f"Verdicts: {results['verdict_line']}.", "",
             "| " + " | ".join(TABLE_HEADER) + " |", "|" + "---|" * len(TABLE_HEADER)]
    for _, row in summary_rows(vr):
        lines.append("| " + " | ".join(_md_cell(x) for x in (row.prediction, row.documents_value,
                                                             row.measured_text(), row.error_text(),
                                                             f"**{row.verdict}**")) + " |")
    lines += ["", f"The documents: \"{results['documents_overall_claim']}\".", ""]
    for r in vr.experiments:
        e = results["experiments"][r.name]
        lines += [f"## {r.experiment.title} (`{r.name}`)", ""]
        if r.experiment.description:
            lines += [r.experiment.description, ""]
        for row in (r.report.rows if r.report else []):
            if row.notes:
                lines.append(f"* **{_md_cell(row.prediction)}** — {clean_nonfinite(row.notes)}")
        if e["notes"]:
            lines += ["", clean_nonfinite(e["notes"])]
        lines += _health_lines(r, e)
        if r.summarize_error:
            lines += ["", "```", r.summarize_error, "```"]
        for cap, rel, _ in figures[r.name]:
            lines += ["", f"![{_md_cell(cap)}]({rel})", "", f"*{_md_cell(cap)}*"]
        lines += ["", f"Seeds {e['seeds']}; {len(r.cells)} cells; compute {e['compute_s']:.1f} s.", ""]
    return "\n".join(lines) + "\n"


_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#1f2328}
table{border-collapse:collapse;width:100%;font-size:14px}th,td{border:1px solid #d0d7de;padding:6px 8px;vertical-align:top;text-align:left}
th{background:#f6f8fa}.v{font-weight:bold}.notes{color:#57606a;font-size:13px}
img{max-width:100%;border:1px solid #d0d7de;margin:8px 0}section{margin-top:2.5em}pre{background:#f6f8fa;padding:8px;overflow:auto}
"""


def _html(vr, results, figures) -> str:
    esc = html.escape
    parts = ["<!DOCTYPE html><html><head><meta charset='utf-8'><title>hhld validate report</title>",
             f"<style>{_CSS}</style></head><body>",
             f"<h1>hhld validate — {esc(vr.scale)} suite</h1>",
             f"<p>hhld {esc(__version__)}, {esc(results['started'])}, device {esc(vr.device)}, "
             f"wall time {vr.wall_s:.1f} s, executor {esc(vr.executor)}.</p>",
             f"<p><b>Verdicts:</b> {esc(results['verdict_line'])}.</p>",
             "<table id='summary'><thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in TABLE_HEADER)
             + "</tr></thead><tbody>"]
    for name, row in summary_rows(vr):
        col = _VERDICT_COLOUR[row.verdict]
        parts.append(
            f"<tr><td><a href='#{esc(name)}'>{esc(row.prediction)}</a></td><td>{esc(row.documents_value)}</td>"
            f"<td>{esc(row.measured_text())}</td><td>{esc(row.error_text())}</td>"
            f"<td class='v' style='color:{col}'>{esc(row.verdict)}</td></tr>")
    parts.append("</tbody></table>")
    parts.append(f"<p class='notes'>The documents: “{esc(results['documents_overall_claim'])}”.</p>")
    for r in vr.experiments:
        e = results["experiments"][r.name]
        parts.append(f"<section id='{esc(r.name)}'><h2>{esc(r.experiment.title)} <code>{esc(r.name)}</code></h2>")
        if r.experiment.description:
            parts.append(f"<p>{esc(r.experiment.description)}</p>")
        rows = r.report.rows if r.report else []
        if rows:
            parts.append("<ul>")
            for row in rows:
                parts.append(f"<li><b>{esc(row.prediction)}</b> — {esc(row.verdict)}. "
                             f"<span class='notes'>{esc(clean_nonfinite(row.notes))}</span></li>")
            parts.append("</ul>")
        if e["notes"]:
            parts.append("<p>" + "<br>".join(esc(x) for x in clean_nonfinite(e["notes"]).splitlines()) + "</p>")
        for line in _health_lines(r, e):
            if line:
                parts.append(f"<p class='notes'>{esc(line.replace('**', ''))}</p>")
        if r.summarize_error:
            parts.append(f"<pre>{esc(r.summarize_error)}</pre>")
        for cap, _, png in figures[r.name]:
            b64 = base64.b64encode(png).decode()
            parts.append(f"<figure><img alt='{esc(cap)}' src='data:image/png;base64,{b64}'>"
                         f"<figcaption class='notes'>{esc(cap)}</figcaption></figure>")
        parts.append(f"<p class='notes'>Config: <code>{esc(json.dumps(e['config']))}</code>; "
                     f"{len(r.cells)} cells; compute {e['compute_s']:.1f} s.</p></section>")
    parts.append("</body></html>")
    return "\n".join(parts)
