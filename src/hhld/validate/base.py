"""The interface every ``hhld validate`` experiment implements.

An experiment re-measures one claim (or a family of claims) of the HHLD documents and
reports what it measured beside what the documents say, with a verdict that follows
from the measured numbers and stated tolerances.

Writing an experiment
---------------------
Put it in ``src/hhld/validate/experiments/<name>.py``; every module in that package is
imported by :func:`hhld.validate.experiments.load_all`, so the ``@register`` decorator
is all that is needed to make it appear in ``hhld validate``::

    from dataclasses import dataclass
    from hhld.validate.base import (Cell, Experiment, ExperimentConfig, ExperimentReport,
                                    Row, claim, register)

    @dataclass(frozen=True)
    class MyConfig(ExperimentConfig):
        n_particles: int = 1000
        seeds: tuple[int, ...] = (0, 1, 2)      # explicit seeds, part of the config

        @classmethod
        def quick(cls):  return cls(n_particles=1000, seeds=(0,))
        @classmethod
        def full(cls):   return cls(n_particles=100_000, seeds=(0, 1, 2, 3, 4))

    @register
    class MyExperiment(Experiment):
        name = "my_experiment"                # CLI name (--only my_experiment)
        title = "What it checks"              # section heading in the report
        config_cls = MyConfig

        def cells(self, config, seeds):
            return [Cell(self.name, {"D": D}, s) for D in (0.1, 0.2) for s in seeds]

        def run_cell(self, config, cell):     # pure function of (config, cell)
            rng = numpy.random.default_rng(cell.seed)
            ...
            return {"rate": 0.12, "rate_se": 0.01}   # JSON-able numbers / lists / dicts

        def summarize(self, config, results):  # results: list[(Cell, dict)]
            ...
            return ExperimentReport(rows=[Row(...)], figures={"rates": fig})

Contract
--------
* ``cells(config, seeds)`` lists the units of work. A :class:`Cell` is the experiment name,
  a JSON-able ``key`` dict (the setting: a D value, a width, a landscape name ...) and a
  ``seed`` (int). Cells must be independent of each other; the runner may run them in any
  order, in other processes (``--executor ray``) and caches each result on disk.
* ``run_cell(config, cell)`` returns a dict of JSON-able values (floats, ints, strings,
  lists, nested dicts; no numpy scalars needed, the runner converts them, but NaN/inf are
  allowed). It must be a pure function of ``(config, cell)``: seed every random source from
  ``cell.seed`` (``numpy.random.default_rng(cell.seed)``, ``torch.Generator().manual_seed``),
  never global state. It may use a GPU when present (:func:`device`), and should honour
  ``torch.set_num_threads`` as set by the caller. Results are cached keyed by a hash of
  (experiment, config, cell key, seed, hhld version), so do not read anything else that
  changes the result.
* ``summarize(config, results)`` gets every ``(Cell, result_dict)`` pair (results as they
  come back from the JSON cache, i.e. lists, not arrays) and returns an
  :class:`ExperimentReport`: table rows, matplotlib figures (the runner saves them as PNG
  and embeds them in report.html, then closes them), free-text notes and any extra numbers
  (``data``) for results.json.
* A :class:`Row` is one line of the summary table. ``documents_value`` is text from
  ``claims.json`` (use :func:`claim`); the documents' numbers live only there, never in
  .py files and never as measured values. ``measured`` is a float (or short text),
  ``uncertainty`` its standard error / CI half-width (float or None), ``error`` a short text
  ("rel. err 3.1%", "slope ratio 0.62"), ``verdict`` one of :data:`VERDICTS`, derived from
  measured numbers and a tolerance the notes state (helpers: :func:`verdict_within`).
* Configs are frozen dataclasses (subclass :class:`ExperimentConfig`) with ``quick()`` and
  ``full()`` classmethods and a ``seeds`` field. ``hhld validate --seeds N`` replaces the
  seeds by ``range(N)`` (:meth:`ExperimentConfig.with_seeds`). Field values must be
  JSON-able (use tuples, not numpy arrays). ``smallest()`` defaults to ``quick()``; override
  it if tests should run a smaller configuration.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar

VERDICTS = ("holds", "fails", "partly", "inconclusive")


class CacheWarning(UserWarning):
    """A cached cell of a validation run was unreadable or malformed and is being recomputed."""

__all__ = [
    "VERDICTS",
    "CacheWarning",
    "Cell",
    "Row",
    "ExperimentReport",
    "ExperimentConfig",
    "Experiment",
    "REGISTRY",
    "register",
    "get_experiment",
    "claim",
    "claims",
    "verdict_within",
    "relative_error",
    "device",
    "to_jsonable",
    "clean_nonfinite",
]


def to_jsonable(obj: Any) -> Any:
    """Convert numpy / torch scalars and arrays, tuples and dataclasses to plain JSON types."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, (bool, int, str)) or obj is None:
        return obj
    if isinstance(obj, float):
        return obj
    # numpy / torch
    if hasattr(obj, "tolist"):
        return to_jsonable(obj.tolist())
    if hasattr(obj, "item"):
        return to_jsonable(obj.item())
    raise TypeError(f"value of type {type(obj).__name__} is not JSON-able: {obj!r}")


def _canonical(obj: Any) -> str:
    return json.dumps(to_jsonable(obj), sort_keys=True, separators=(",", ":"), allow_nan=True)


@dataclass(frozen=True)
class Cell:
    """One unit of work: experiment name, a JSON-able setting ``key`` and a ``seed``."""

    experiment: str
    key: dict
    seed: int

    def __post_init__(self) -> None:
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise TypeError(f"Cell.seed must be an int, got {self.seed!r}")
        _canonical(self.key)  # raises if not JSON-able

    @property
    def label(self) -> str:
        """Short human-readable label (for progress bars)."""
        kv = ", ".join(f"{k}={v}" for k, v in self.key.items())
        return f"{self.experiment}[{kv}; seed={self.seed}]"

    def to_dict(self) -> dict:
        return {"experiment": self.experiment, "key": to_jsonable(self.key), "seed": self.seed}

    @classmethod
    def from_dict(cls, d: dict) -> "Cell":
        return cls(d["experiment"], dict(d["key"]), int(d["seed"]))

    def cache_key(self, config: "ExperimentConfig", version: str) -> str:
        """Hash of (experiment, the config's cell fields, cell key, seed, hhld version).

        The config's ``plan_fields`` (which cells exist, how they are summarised) are left out,
        so that ``--seeds 5`` after a 3-seed run, or a new tolerance, reuses every finished cell.
        """
        payload = _canonical(
            {"experiment": self.experiment, "config": config.cell_dict(), "key": self.key,
             "seed": self.seed, "version": version}
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:24]


@dataclass
class Row:
    """One line of the summary table.

    prediction: what is predicted (short text). documents_value: the documents' claim, text
    from claims.json. measured: the measured number (or short text). uncertainty: its
    standard error or CI half-width (None if not applicable). error: short text comparing
    measured with the claim. verdict: one of VERDICTS. notes: tolerance used and caveats.
    """

    prediction: str
    documents_value: str
    measured: float | str | None
    uncertainty: float | None
    error: str
    verdict: str
    notes: str = ""
    #: why there is no number, when ``measured`` is None or not finite (shown after "—")
    reason: str = ""

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")

    def has_value(self) -> bool:
        """Whether ``measured`` is text or a finite number."""
        m = self.measured
        if isinstance(m, str):
            return True
        return m is not None and math.isfinite(float(m))

    def missing_reason(self) -> str:
        """Why ``measured`` has no value: ``reason``, else what it was."""
        if self.reason:
            return self.reason
        if self.measured is None:
            return "not measured"
        return f"the measurement is not finite ({self.measured}); see the notes"

    def measured_text(self, digits: int = 4) -> str:
        """The measured value with its uncertainty; "—" with the reason when there is no finite
        value (never "nan ± nan"); a non-finite uncertainty is left out."""
        m = self.measured
        if not self.has_value():
            return f"— ({self.missing_reason()})"
        if isinstance(m, str):
            return m
        s = _fmt(float(m), digits)
        u = self.uncertainty
        if u is not None and math.isfinite(float(u)):
            s += f" ± {_fmt(float(u), 2)}"
        return s

    def error_text(self) -> str:
        """``error`` with non-finite numbers ("nan%", "inf%", "∞%", a bare "nan") shown as "—"."""
        return clean_nonfinite(self.error)

    def to_dict(self) -> dict:
        return to_jsonable(dataclasses.asdict(self))


_NONFINITE = re.compile(r"(?<![\w.])[-+]?(?:(?:nan|inf(?:inity)?)(?:\s*%)?(?![\w])|∞\s*%)", re.IGNORECASE)


_NONFINITE_PM = re.compile(r"(?<![\w.])[-+]?(?:nan|inf)\s*±\s*[-+]?(?:nan|inf)(?![\w])", re.IGNORECASE)


def clean_nonfinite(text: str) -> str:
    """``text`` with every non-finite number ("nan ± nan", "nan", "inf%", "-inf", "∞%") replaced by
    "—" (a bare "∞", e.g. "never reached", is kept)."""
    return _NONFINITE.sub("—", _NONFINITE_PM.sub("—", str(text)))


def _fmt(x: float, digits: int = 4) -> str:
    if not math.isfinite(x):
        return str(x)
    if x == 0:
        return "0"
    if abs(x) >= 1e4 or abs(x) < 1e-3:
        return f"{x:.{max(digits - 1, 1)}e}"
    return f"{x:.{digits}g}"


@dataclass
class ExperimentReport:
    """What ``summarize`` returns: table rows, figures (name -> matplotlib Figure), notes
    (markdown-ish free text shown under the experiment's section) and extra data for
    results.json."""

    rows: list[Row]
    figures: dict = field(default_factory=dict)
    notes: str = ""
    data: dict = field(default_factory=dict)
    #: figure name -> caption (a sentence saying what the figure shows); without one the report
    #: builds a caption from the figure's titles
    captions: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ExperimentConfig:
    """Base class of experiment configs: frozen dataclass, JSON-able fields, explicit seeds.

    ``plan_fields`` names the fields that choose which cells run or how their results are
    summarised (seeds, the list of runs whose parameters every cell carries in its key,
    verdict tolerances) and never enter a cell's computation; they are left out of the cell
    cache key. A subclass extends it only with fields that ``run_cell`` does not read.
    """

    plan_fields: ClassVar[tuple[str, ...]] = ("seeds",)

    seeds: tuple[int, ...] = (0,)

    @classmethod
    def quick(cls) -> "ExperimentConfig":
        return cls()

    @classmethod
    def full(cls) -> "ExperimentConfig":
        return cls()

    @classmethod
    def smallest(cls) -> "ExperimentConfig":
        """Smallest configuration (used by tests); defaults to ``quick()``."""
        return cls.quick()

    @classmethod
    def scale(cls, name: str) -> "ExperimentConfig":
        if name not in ("quick", "full", "smallest"):
            raise ValueError(f"scale must be 'quick', 'full' or 'smallest', got {name!r}")
        return getattr(cls, name)()

    def with_seeds(self, n: int) -> "ExperimentConfig":
        if n < 1:
            raise ValueError(f"number of seeds must be >= 1, got {n}")
        return dataclasses.replace(self, seeds=tuple(range(n)))

    def replace(self, **changes: Any) -> "ExperimentConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return to_jsonable(self)

    def cell_dict(self) -> dict:
        """The fields a cell's computation may read: ``to_dict()`` less ``plan_fields``."""
        return {k: v for k, v in self.to_dict().items() if k not in self.plan_fields}


class Experiment:
    """Base class; see the module docstring for the contract."""

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    config_cls: ClassVar[type[ExperimentConfig]] = ExperimentConfig
    #: one-paragraph description shown in the report and in ``hhld validate --list``
    description: ClassVar[str] = ""

    def config(self, scale: str = "quick") -> ExperimentConfig:
        return self.config_cls.scale(scale)

    def cells(self, config: ExperimentConfig, seeds: tuple[int, ...] | list[int]) -> list[Cell]:
        raise NotImplementedError

    def run_cell(self, config: ExperimentConfig, cell: Cell) -> dict:
        raise NotImplementedError

    def summarize(self, config: ExperimentConfig, results: list[tuple[Cell, dict]]) -> ExperimentReport:
        raise NotImplementedError

    #: top-level keys every ``run_cell`` result has (None: not declared); a cached result without
    #: one of them is recomputed
    result_keys: ClassVar[tuple[str, ...] | None] = None

    def check_result(self, config: ExperimentConfig, cell: Cell, result: Any) -> None:
        """Raise ``ValueError`` when ``result`` does not have the shape ``run_cell`` returns.

        The default checks that it is a non-empty dict with string keys and JSON values, holding
        ``result_keys`` when the experiment declares them. The runner calls this on every cached
        cell and recomputes a bad one (with a :class:`CacheWarning`) instead of summarising it."""
        if not isinstance(result, dict):
            raise ValueError(f"the result is a {type(result).__name__}, not a dict")
        if not result:
            raise ValueError("the result is an empty dict")
        bad = [k for k in result if not isinstance(k, str)]
        if bad:
            raise ValueError(f"the result has non-string keys {bad[:3]}")
        if self.result_keys:
            missing = [k for k in self.result_keys if k not in result]
            if missing:
                raise ValueError(f"the result lacks the keys {missing}")

    def __repr__(self) -> str:
        return f"<Experiment {self.name}>"


#: name -> Experiment instance, filled by :func:`register`
REGISTRY: dict[str, Experiment] = {}


def register(cls: type[Experiment]) -> type[Experiment]:
    """Class decorator: instantiate the experiment and add it to :data:`REGISTRY`."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    REGISTRY[cls.name] = cls()
    return cls


def get_experiment(name: str) -> Experiment:
    from .experiments import load_all

    load_all()
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown experiment {name!r}; known: {sorted(REGISTRY)}") from None


@lru_cache(maxsize=1)
def claims() -> dict:
    """The documents' claims (``claims.json``): id -> {"text", "section", ...}."""
    return json.loads((Path(__file__).with_name("claims.json")).read_text())


def claim(claim_id: str, *, with_section: bool = True) -> str:
    """Text of one documents' claim for the "Documents' value" column."""
    c = claims()
    if claim_id not in c:
        raise KeyError(f"no claim {claim_id!r} in claims.json; known: {sorted(c)}")
    entry = c[claim_id]
    if with_section and entry.get("section"):
        return f"{entry['text']} ({entry['section']})"
    return entry["text"]


def relative_error(measured: float, reference: float) -> float:
    """|measured - reference| / |reference| (inf if reference is 0 and measured is not)."""
    if reference == 0:
        return 0.0 if measured == 0 else math.inf
    return abs(measured - reference) / abs(reference)


def verdict_within(measured: float, reference: float, rel_tol: float,
                   partly_tol: float | None = None, uncertainty: float | None = None) -> str:
    """'holds' if |measured - reference| <= rel_tol*|reference| (+ 2 x uncertainty, when given),
    'partly' if within ``partly_tol`` (when given), else 'fails'; 'inconclusive' if a number is
    not finite."""
    if not (math.isfinite(measured) and math.isfinite(reference)):
        return "inconclusive"
    slack = 2.0 * uncertainty if (uncertainty is not None and math.isfinite(uncertainty)) else 0.0
    diff = abs(measured - reference)
    if diff <= rel_tol * abs(reference) + slack:
        return "holds"
    if partly_tol is not None and diff <= partly_tol * abs(reference) + slack:
        return "partly"
    return "fails"


def device() -> str:
    """'cuda' where a GPU is present, else 'cpu'."""
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except Exception:  # pragma: no cover
        return "cpu"
