"""What every ``hhld`` command shares: one-line errors, ``--out`` checks, up-front estimates of
memory and time that refuse oversized runs, and the parsing of comma-separated options.

Errors. A command never shows a traceback: bad input (``ValueError``, ``TypeError``,
:class:`hhld.NonFiniteError`, a bad option) prints ONE line ``error: ...`` on stderr and exits
with status 2; an unexpected failure prints one line and exits 1 (``HHLD_TRACEBACK=1`` in the
environment shows the traceback instead, for bug reports).
"""
from __future__ import annotations

import contextlib
import functools
import math
import os
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Callable, NoReturn, Optional

import typer

__all__ = ["CLIError", "fail", "one_line", "cli_errors", "run_app", "refuse_file", "check_out_dir", "available_memory",
           "refuse_if_oversized", "fmt_bytes", "fmt_seconds", "parse_floats", "parse_vector", "parse_box",
           "parse_options", "TIME_LIMIT_S"]

#: estimated wall time above which a run is refused unless ``--force`` is given
TIME_LIMIT_S = 3600.0


class CLIError(Exception):
    """A refusal of the command line: printed as one line, exit status ``code`` (2: bad input)."""

    def __init__(self, message: str, code: int = 2):
        super().__init__(message)
        self.code = code


def _bad_input_types() -> tuple:
    from .._validation import NonFiniteError

    return (ValueError, TypeError, NonFiniteError, CLIError)


def one_line(text: str) -> str:
    """``text`` on one line (newlines become '; ', runs of spaces collapse)."""
    parts = [p.strip() for p in str(text).splitlines() if p.strip()]
    return " ".join("; ".join(parts).split())


def fail(message: str, code: int = 2) -> NoReturn:
    """Refuse: raise :class:`CLIError` (printed as one line by :func:`cli_errors` / :func:`run_app`)."""
    raise CLIError(message, code)


def _echo_error(message: str) -> None:
    typer.echo(f"error: {one_line(message)}", err=True)


def _handle(exc: BaseException) -> int:
    """Print ``exc`` as one line; the exit status."""
    if os.environ.get("HHLD_TRACEBACK"):
        raise exc
    if isinstance(exc, CLIError):
        _echo_error(str(exc))
        return exc.code
    if isinstance(exc, _bad_input_types()):
        _echo_error(str(exc) or type(exc).__name__)
        return 2
    if isinstance(exc, MemoryError):
        _echo_error(f"out of memory ({exc or 'MemoryError'}); use a smaller problem")
        return 2
    if isinstance(exc, OSError):
        _echo_error(f"{exc.strerror or exc}{f': {exc.filename}' if exc.filename else ''}")
        return 2
    _echo_error(f"internal error ({type(exc).__name__}: {exc}); please report it, with the traceback that "
                f"HHLD_TRACEBACK=1 shows")
    return 1


def cli_errors(fn: Callable) -> Callable:
    """Decorator for a command's body: every error becomes one line and ``typer.Exit`` (2 for bad
    input), so that no traceback reaches the user, also under ``typer.testing.CliRunner``."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, KeyboardInterrupt):
            raise
        except _click_exception() as exc:  # typer.BadParameter raised in the body: let click format it
            raise exc
        except Exception as exc:  # noqa: BLE001 - the point: one line, never a traceback
            raise typer.Exit(_handle(exc)) from None

    return wrapper


def _click_exception() -> type:
    """click's ``ClickException`` (typer may vendor click, so it is looked up through typer)."""
    return next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


@contextlib.contextmanager
def _one_line_warnings():
    """Warnings as one line ``warning: message (Category)`` on stderr, like the errors (Python's default adds the
    source line of the library call that warned, which means nothing to a user of the command line)."""
    previous = warnings.formatwarning

    def one_line(message, category, filename, lineno, line=None):
        return f"warning: {' '.join(str(message).split())} ({category.__name__})\n"

    warnings.formatwarning = one_line
    try:
        yield
    finally:
        warnings.formatwarning = previous


def run_app(app: typer.Typer, argv: Optional[list[str]] = None) -> int:
    """Run ``app`` like the ``hhld`` executable and return the exit status; usage errors (a bad
    option value, an unknown option) print one line instead of click's box."""
    click_exc = _click_exception()
    try:
        with _one_line_warnings():
            rv = app(args=argv, prog_name="hhld", standalone_mode=False)
    except typer.Exit as exc:
        return int(exc.exit_code or 0)
    except typer.Abort:
        _echo_error("aborted")
        return 130
    except KeyboardInterrupt:
        _echo_error("interrupted")
        return 130
    except click_exc as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # `hhld` / `hhld solve` alone: the help
            typer.echo(exc.format_message())
            return 0
        ctx = getattr(exc, "ctx", None)
        hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        _echo_error(exc.format_message() + _given_value(exc, argv) + hint)
        return int(getattr(exc, "exit_code", 2) or 2)
    except Exception as exc:  # noqa: BLE001
        return _handle(exc)
    return rv if isinstance(rv, int) else 0


def _given_value(exc, argv) -> str:
    """`` (got 'x')`` for a bad option value whose message does not quote it (click's type errors)."""
    try:
        return _find_given_value(exc, argv)
    except Exception:  # noqa: BLE001 - a hint only; never let the error path fail
        return ""


def _find_given_value(exc, argv) -> str:
    param = getattr(exc, "param", None)
    if param is None or "got " in exc.format_message():
        return ""
    args = list(sys.argv[1:] if argv is None else argv)
    got = []
    for i, a in enumerate(args):
        for opt in tuple(getattr(param, "opts", ())) + tuple(getattr(param, "secondary_opts", ())):
            if a == opt and i + 1 < len(args):
                got.append(args[i + 1])
            elif a.startswith(opt + "="):
                got.append(a[len(opt) + 1:])
    return f" (got {', '.join(repr(g) for g in got)})" if got else ""


# ------------------------------------------------------------------ --out
def refuse_file(out: Path, option: str = "--out") -> None:
    """A clear :class:`CLIError` when ``out`` (or a folder above it) is an existing file (cheap: no
    directory is created)."""
    out = Path(out)
    for p in (out, *out.parents):
        if p.exists():
            if not p.is_dir():
                fail(f"{option} {out}: {p} is a file, not a directory; give a directory for the results")
            return


def check_out_dir(out: Path, option: str = "--out") -> Path:
    """Create the output directory ``out`` (with parents) and check that files can be written in
    it; a clear :class:`CLIError` when ``out`` is a file, cannot be created or is read-only."""
    out = Path(out)
    refuse_file(out, option)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        fail(f"{option} {out}: cannot create the directory ({exc.strerror or exc})")
    try:
        with tempfile.NamedTemporaryFile(dir=out, prefix=".hhld-write-test-"):
            pass
    except OSError as exc:
        fail(f"{option} {out}: cannot write files there ({exc.strerror or exc})")
    return out


# ------------------------------------------------------------------ resources
def available_memory() -> int:
    """Bytes of memory available to a new computation (``MemAvailable`` on Linux, else the
    physical memory): :func:`hhld.grid._available_memory`, the library's one reading."""
    from ..grid import _available_memory

    m = _available_memory()
    return int(m) if m != float("inf") else 1 << 62


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.3g} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024.0
    return f"{n:.3g} PiB"  # pragma: no cover


def fmt_seconds(s: float) -> str:
    if not math.isfinite(s):
        return "forever"
    if s < 120:
        return f"{s:.3g} s"
    if s < 7200:
        return f"{s / 60:.3g} min"
    if s < 2 * 86400:
        return f"{s / 3600:.3g} h"
    if s < 2 * 365 * 86400:
        return f"{s / 86400:.3g} days"
    return f"{s / (365 * 86400):.3g} years"


def refuse_if_oversized(what: str, mem_bytes: float, seconds: float, force: bool, *,
                        time_limit_s: float = TIME_LIMIT_S, how_to_shrink: str = "") -> None:
    """Refuse (:func:`fail`) a run whose estimated peak memory exceeds the available memory, or
    whose estimated wall time exceeds ``time_limit_s``, naming both estimates; ``force`` runs it
    anyway."""
    avail = available_memory()
    too_big = mem_bytes > avail
    too_long = seconds > time_limit_s
    if force or not (too_big or too_long):
        return
    why = []
    if too_big:
        why.append(f"it needs about {fmt_bytes(mem_bytes)} of memory, {fmt_bytes(avail)} are available")
    if too_long:
        why.append(f"it would take about {fmt_seconds(seconds)} (limit {fmt_seconds(time_limit_s)})")
    fail(f"refusing {what}: {' and '.join(why)} (estimated up front, before starting); "
         f"{how_to_shrink + ', or ' if how_to_shrink else ''}pass --force to run it anyway")


# ------------------------------------------------------------------ parsing
def parse_floats(text: Optional[str], option: str) -> Optional[list[float]]:
    """``'a,b,c'`` (commas, semicolons or spaces) -> finite floats; None passes through."""
    if text is None:
        return None
    items = [v for v in text.replace(";", ",").replace(" ", ",").split(",") if v.strip()]
    try:
        vals = [float(v) for v in items]
    except ValueError:
        raise typer.BadParameter(f"must be comma-separated numbers, got {text!r}", param_hint=f"'{option}'") from None
    if not vals:
        raise typer.BadParameter(f"must be comma-separated numbers, got {text!r}", param_hint=f"'{option}'")
    bad = [v for v in vals if not math.isfinite(v)]
    if bad:
        raise typer.BadParameter(f"must be finite numbers, got {text!r}", param_hint=f"'{option}'")
    return vals


def parse_vector(text: Optional[str], dim: int, option: str) -> Optional[list[float]]:
    """One number (repeated on every axis) or ``dim`` numbers."""
    vals = parse_floats(text, option)
    if vals is None:
        return None
    if len(vals) == 1:
        return vals * dim
    if len(vals) != dim:
        raise typer.BadParameter(f"needs 1 or {dim} comma-separated numbers (one per axis), got {text!r}",
                                 param_hint=f"'{option}'")
    return vals


def parse_box(text: Optional[str], dim: int, option: str = "--box"):
    """``'lo,hi'`` (every axis) or ``'lo1,hi1,lo2,hi2,...'`` -> ``[(lo, hi)] * dim``; None passes."""
    vals = parse_floats(text, option)
    if vals is None:
        return None
    if len(vals) == 2:
        box = [(vals[0], vals[1])] * dim
    elif len(vals) == 2 * dim:
        box = [(vals[2 * k], vals[2 * k + 1]) for k in range(dim)]
    else:
        raise typer.BadParameter(f"needs 2 or {2 * dim} numbers (lo,hi for every axis or per axis), "
                                 f"got {len(vals)}", param_hint=f"'{option}'")
    for lo, hi in box:
        if not lo < hi:
            raise typer.BadParameter(f"needs lo < hi on every axis, got {text!r}", param_hint=f"'{option}'")
    return box


def parse_options(options: Optional[list[str]], option: str = "--option") -> dict:
    """``KEY=VALUE`` items -> keyword arguments (ints, floats, else strings)."""
    out = {}
    for item in options or []:
        if "=" not in item:
            raise typer.BadParameter(f"takes KEY=VALUE, got {item!r}", param_hint=f"'{option}'")
        k, v = item.split("=", 1)
        try:
            out[k] = int(v) if v.lstrip("-").isdigit() else float(v)
        except ValueError:
            out[k] = v
    return out
