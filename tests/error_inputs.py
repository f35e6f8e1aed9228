"""The shared table of bad inputs (in the manner of torch's ``OptimizerInfo.error_inputs``).

Every public entry point is listed with inputs it must refuse, the exception it must raise and a
fragment of the message (a regular expression searched in ``str(exception)``): the message must
name the bad value or say what is allowed. ``tests/test_error_inputs.py`` runs every row of every
list below through one parametrised test, and every row of :data:`CLI` through the real command
line (exit status 2, one line on stderr, no traceback).

Adding a row
------------
Append to the list of your area (create the list if your area has none, and add it to
:data:`AREAS`)::

    E(FokkerPlanck, "double_well_2d", cells=16, D=0.0, error=ValueError, match=r"D .* > 0"),

``E(entry, *args, error=..., match=..., id=..., **kwargs)`` calls ``entry(*args, **kwargs)``.
Anything that must be built first (an object whose method is the entry point, an array that
depends on it) goes in :func:`lazy`: ``E(lazy(lambda: _fp().kl), lazy(lambda: -_fp().gibbs()),
...)``; lazy values are built when the test runs, not when the table is imported. A warning
that must be given instead of an error is a row with ``error=SomeWarning`` (the test turns
warnings into errors for that row). A CLI row is ``C([...argv...], match)``; ``{file}`` in an
argument is an existing file, ``{tmp}`` a fresh directory.
"""
from __future__ import annotations

import math
import os
import pickle
import tempfile
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable

import numpy as np

from hhld import NonFiniteError


# ------------------------------------------------------------------ the row types
@dataclass(frozen=True)
class lazy:  # noqa: N801 - reads as a marker in the table
    """A value built when the row runs (``make()``), not when the table is imported."""

    make: Callable[[], Any]


@dataclass(frozen=True)
class ErrorInput:
    entry: Any                      # the entry point (function, class, bound method) or lazy(...)
    args: tuple = ()                # the invalid input, positional ...
    kwargs: dict = field(default_factory=dict)  # ... and keyword (values may be lazy(...))
    error: Any = ValueError         # expected exception (or warning) type, or a tuple of types
    match: str = ""                 # regex searched in the message
    id: str = ""

    def resolve(self):
        def r(v):
            return v.make() if isinstance(v, lazy) else v

        return r(self.entry), tuple(r(a) for a in self.args), {k: r(v) for k, v in self.kwargs.items()}

    def name(self) -> str:
        if self.id:
            return self.id
        e = self.entry
        base = "lazy" if isinstance(e, lazy) else getattr(e, "__qualname__", getattr(e, "__name__", repr(e)))
        shown = [("lazy" if isinstance(a, lazy) else repr(a))[:24] for a in self.args]
        shown += [f"{k}={('lazy' if isinstance(v, lazy) else repr(v))[:24]}" for k, v in self.kwargs.items()]
        return f"{base}({', '.join(shown)})"


def E(entry, *args, error=ValueError, match="", id="", **kwargs) -> ErrorInput:  # noqa: A002,N802
    return ErrorInput(entry, args, kwargs, error, match, id)


@dataclass(frozen=True)
class CLIErrorInput:
    argv: tuple
    match: str
    code: int = 2

    def name(self) -> str:
        return " ".join(self.argv)


def C(argv, match, code=2) -> CLIErrorInput:  # noqa: N802
    return CLIErrorInput(tuple(argv), match, code)


# ------------------------------------------------------------------ builders (cached, cheap)
@lru_cache(maxsize=None)
def _fp():
    from hhld.fokker_planck import FokkerPlanck
    from hhld.landscapes import double_well_1d

    return FokkerPlanck(double_well_1d(), cells=128, D=0.1)


@lru_cache(maxsize=None)
def _qgrid():
    from hhld.quantum.grid import make_grid

    return make_grid(64, [(-3.0, 3.0)])


def _solver(**kw):
    from hhld.landscapes import double_well_1d
    from hhld.quantum.schrodinger import SplitStepSolver

    return SplitStepSolver(_qgrid(), double_well_1d(), **({"dt": 1e-3} | kw))


def _psi():
    return _qgrid().gaussian_packet(0.5, 0.3)


def _sim(**kw):
    from hhld.dynamics import LossObserver, Simulation
    from hhld.landscapes import double_well_2d

    params = {"dt": 0.01, "D": 0.1, "rng": np.random.default_rng(0), "observers": [LossObserver()]} | kw
    return Simulation(double_well_2d(), np.zeros((8, 2)), **params)


def _pickle_file():
    fd, path = tempfile.mkstemp(suffix=".pkl")
    with os.fdopen(fd, "wb") as fh:
        pickle.dump({"state": "anything"}, fh)
    return path


def _checkpoint(**kw):
    fd, path = tempfile.mkstemp(suffix=".npz")
    os.close(fd)
    _sim(**kw).run(3).save(path)
    return path


def _tmpdir():
    return tempfile.mkdtemp(prefix="hhld-error-inputs-")


# ------------------------------------------------------------------ the table
def _fokker_planck():
    from hhld.fokker_planck import FokkerPlanck
    from hhld.fokker_planck.evolve import chebyshev_expmv, evolve_generator
    from hhld.landscapes import double_well_2d

    dw = double_well_2d()
    return [
        E(FokkerPlanck, dw, cells=16, D=0.0, match=r"D \(the diffusion constant\) must be > 0"),
        E(FokkerPlanck, dw, cells=16, D=math.nan, match="must be finite"),
        E(FokkerPlanck, dw, cells=16, D=0.1, mu=-1.0, match=r"mu .* must be > 0"),
        E(FokkerPlanck, dw, cells=1, D=0.1, match=r"cells\[0\] must be >= 2"),
        E(FokkerPlanck, dw, cells=2.5, D=0.1, error=TypeError, match="cells.*integer"),
        E(FokkerPlanck, dw, box=[(-2, 2)], cells=16, D=0.1, match="box has 1 axes"),
        E(FokkerPlanck, lambda th: th ** 2, error=TypeError, match="NumpyLandscape", id="FokkerPlanck(lambda)"),
        E(FokkerPlanck, "nosuch", match="unknown landscape 'nosuch'"),
        E(lazy(lambda: _fp().kl), lazy(lambda: 0.5 * _fp().gibbs()), match=r"normalised density.*= 0\.5",
          id="fp.kl(0.5*gibbs)"),
        E(lazy(lambda: _fp().kl), np.zeros(128), match=r"normalised density.*= 0\.0", id="fp.kl(zeros)"),
        E(lazy(lambda: _fp().kl), lazy(lambda: -_fp().gibbs()), match=">= 0", id="fp.kl(-gibbs)"),
        E(lazy(lambda: _fp().kl), np.ones(5), match="128 values", id="fp.kl(wrong size)"),
        E(lazy(lambda: _fp().entropy), np.full(128, np.nan), error=NonFiniteError, match="non-finite",
          id="fp.entropy(nan)"),
        E(lazy(lambda: _fp().free_energy), lazy(lambda: 2 * _fp().gibbs()), match="normalised",
          id="fp.free_energy(2*gibbs)"),
        E(lazy(lambda: _fp().evolve), lazy(lambda: _fp().gibbs()), [2.0, 1.0], match="sorted",
          id="fp.evolve(unsorted times)"),
        E(lazy(lambda: _fp().evolve), lazy(lambda: _fp().gibbs()), [math.nan], match="finite",
          id="fp.evolve(nan time)"),
        E(lazy(lambda: _fp().evolve), lazy(lambda: -_fp().gibbs()), [1.0], match=">= 0",
          id="fp.evolve(negative rho0)"),
        E(lazy(lambda: _fp().evolve), lazy(lambda: _fp().gibbs()), [1.0], method="nope", match="method must be",
          id="fp.evolve(method=nope)"),
        E(lazy(lambda: _fp().spectrum), k=0, match="k must be between 1", id="fp.spectrum(k=0)"),
        E(lazy(lambda: _fp().spectrum), k=500, match="k must be between 1", id="fp.spectrum(k=500)"),
        E(lazy(lambda: _fp().gaussian), [0.0], 0.0, match="width must be > 0", id="fp.gaussian(width=0)"),
        E(lazy(lambda: _fp().gaussian), [0.0, 0.0], 0.1, match="center must have 1", id="fp.gaussian(2-d center)"),
        E(chebyshev_expmv, lazy(lambda: _fp().generator), np.ones(128), 1e15, match="too large for the Chebyshev",
          id="chebyshev_expmv(t=1e15)"),
        E(evolve_generator, lazy(lambda: _fp().generator), np.ones(128), [], match="at least one time",
          id="evolve_generator(no times)"),
        E(_unresolved_spectrum_rate, match=r"lambda_1 = .* below .*Kramers", id="Spectrum.relaxation_rate(unresolved)"),
        # the second audit (issue 11)
        E(FokkerPlanck, "double_well_1d", cells=10 ** 11, D=0.1, match=r"GiB, more than this machine's memory",
          id="FokkerPlanck(cells=1e11)"),
        E(lazy(lambda: _fp().evolve), lazy(lambda: _fp().gibbs()), [1.0], method="contour", n_points=0,
          match=r"n_points must be >= 2", id="fp.evolve(n_points=0)"),
        E(lazy(lambda: _fp().evolve), lazy(lambda: _fp().gibbs()), [1.0], callback=3, error=TypeError,
          match="callback must be a function", id="fp.evolve(callback=3)"),
        E(lazy(lambda: _fp().spectrum), k=1.5, error=TypeError, match="k must be an integer, got 1.5",
          id="fp.spectrum(k=1.5)"),
        E(lazy(lambda: _fp().spectrum), k=3, shift=math.nan, match="shift must be finite", id="fp.spectrum(shift=nan)"),
        E(lazy(lambda: _fp().mass), np.ones(3), match=r"rho must have 128 values", id="fp.mass(wrong size)"),
        E(lazy(lambda: _fp().mass), np.full(128, np.nan), error=NonFiniteError, match="non-finite", id="fp.mass(nan)"),
        E(lazy(lambda: _fp().l1), np.ones(3), match=r"rho must have 128 values", id="fp.l1(wrong size)"),
        E(lazy(lambda: _fp().rhs), np.ones(5), match=r"rho must have 128 values", id="fp.rhs(wrong size)"),
        E(lazy(lambda: _fp().gaussian), [0.0], math.inf, match="width must be finite", id="fp.gaussian(width=inf)"),
        E(lazy(lambda: _fp().gaussian), [math.nan], 0.1, match="center must be finite", id="fp.gaussian(nan center)"),
    ]


def _unresolved_spectrum_rate():
    import warnings

    from hhld.fokker_planck import FokkerPlanck
    from hhld.landscapes import double_well_1d

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        spec = FokkerPlanck(double_well_1d(), cells=700, D=0.02).spectrum(3)
    return spec.relaxation_rate


def _quantum():
    from hhld.quantum import eigenstates
    from hhld.quantum.fp_map import compare_spectra, evolve_fp, fp_spectrum, gibbs_density, psi_to_fp
    from hhld.quantum.grid import make_grid
    from hhld.quantum.schrodinger import imaginary_time_ground_state
    from hhld.landscapes import double_well_1d

    box = [(-3.0, 3.0)]
    return [
        E(make_grid, [64.7], box, error=TypeError, match=r"n\[0\] must be an integer, got 64\.7"),
        E(make_grid, 64.0, box, error=TypeError, match="n must be an integer"),
        E(make_grid, 2, box, match="n must be >= 4"),
        E(make_grid, 64, [(1.0, 0.0)], match="lo < hi"),
        E(make_grid, [64, 64], box, match="n has 2 entries but box has 1"),
        E(lazy(lambda: _qgrid().gaussian_packet), 1e3, 0.01, match=r"center=\[1000\.0\] lies outside",
          id="gaussian_packet(far outside)"),
        E(lazy(lambda: _qgrid().gaussian_packet), 0.0, 1e-12, match="far narrower than the grid",
          id="gaussian_packet(width 1e-12)"),
        E(lazy(lambda: _qgrid().gaussian_packet), 0.0, 0.0, match="width must be > 0", id="gaussian_packet(width 0)"),
        E(lazy(lambda: _qgrid().gaussian_packet), math.nan, 0.2, match="center must be finite",
          id="gaussian_packet(nan center)"),
        E(lazy(lambda: _qgrid().normalize_wave), np.zeros(64), match="zero everywhere", id="Grid.normalize_wave(zeros)"),
        E(_solver, hbar=0.0, match="hbar must be > 0"),
        E(_solver, m=-1.0, match="m must be > 0"),
        E(_solver, dt=math.nan, match="dt must be finite"),
        E(lazy(lambda: _solver().step), lazy(_psi), n=-1, match="n must be >= 0", id="step(n=-1)"),
        E(lazy(lambda: _solver().step), lazy(_psi), dt=math.nan, match="dt must be finite", id="step(dt=nan)"),
        E(lazy(lambda: _solver().step), lazy(_psi), dt=0.0, match="dt must be > 0", id="step(dt=0)"),
        E(lazy(lambda: _solver().step), lazy(_psi), n=1.5, error=TypeError, match="n must be an integer",
          id="step(n=1.5)"),
        E(lazy(lambda: _solver().evolve), np.full(64, np.nan + 0j), 1.0, error=NonFiniteError, match="psi0",
          id="evolve(nan psi0)"),
        E(lazy(lambda: _solver().evolve), np.zeros(64), 1.0, match="zero everywhere", id="evolve(zero psi0)"),
        E(lazy(lambda: _solver().evolve), lazy(_psi), math.nan, match="t_end must be finite", id="evolve(t_end=nan)"),
        E(lazy(lambda: _solver().evolve), lazy(_psi), 1.0, n_snapshots=1, match="n_snapshots must be >= 2",
          id="evolve(n_snapshots=1)"),
        E(lazy(lambda: _solver().evolve), np.ones(32), 1.0, match="shape", id="evolve(wrong shape)"),
        E(imaginary_time_ground_state, lazy(_qgrid), double_well_1d(), max_steps=0, match="max_steps must be >= 1"),
        E(imaginary_time_ground_state, lazy(_qgrid), double_well_1d(), dtau=-1.0, match="dtau must be > 0"),
        E(eigenstates, lazy(_qgrid), double_well_1d(), k=0, match="k must be >= 1"),
        E(eigenstates, lazy(_qgrid), double_well_1d(), k=10 ** 6, match="must be smaller than the number of grid"),
        E(gibbs_density, lazy(_qgrid), double_well_1d(), 0.0, match="D must be > 0"),
        # the second audit (issue 11)
        E(make_grid, 10 ** 12, box, match=r"too large: one float64 array of its values needs"),
        E(make_grid, 64, None, error=TypeError, match=r"box must be a sequence of \(lo, hi\) pairs"),
        E(lazy(lambda: _qgrid().inner), np.ones(64), np.ones(5), match=r"must have 64 values .* \(5,\)",
          id="Grid.inner(wrong size)"),
        E(lazy(lambda: _qgrid().gaussian_packet), 0.0, 0.3, momentum=1e4, match=r"momentum=\[10000\.0\] is beyond",
          id="gaussian_packet(momentum beyond the grid)"),
        E(lazy(lambda: _qgrid().gaussian_packet), 0.0, 1e3, match=r"too wide for the grid box",
          id="gaussian_packet(width 1e3)"),
        E(lazy(lambda: _solver().evolve), lazy(_psi), 1.0, n_snapshots=10 ** 12, match="store fewer snapshots",
          id="evolve(n_snapshots=1e12)"),
        E(eigenstates, lazy(_qgrid), double_well_1d(), sigma=math.nan, match="sigma must be finite"),
        E(compare_spectra, lazy(_qgrid), double_well_1d(), 0.5, k=1000, match=r"k must be at most .* \(64\)"),
        E(fp_spectrum, lazy(_qgrid), double_well_1d(), 1e-6, k=2, match=r"rates overflow.*larger D or more points"),
        E(psi_to_fp, lazy(_qgrid), np.full(64, np.nan), double_well_1d(), 0.5, error=NonFiniteError,
          match="psi has 64 non-finite"),
        E(evolve_fp, lazy(_qgrid), np.ones(64), double_well_1d(), 0.5, [math.nan], match="times must be"),
    ]


def _landscapes():
    import torch

    from hhld.landscapes import (DoubleWell, MullerBrown, NumpyLandscape, Quadratic, Rosenbrock, TiltedDoubleWell,
                                 TorchLandscape, anisotropic_quadratic, double_well_2d, get_landscape)

    dw = double_well_2d()
    return [
        E(get_landscape, "nosuch", match="unknown landscape 'nosuch'; choose one of"),
        E(get_landscape, lambda th: th, error=TypeError, match=r"function '<lambda>'.*NumpyLandscape",
          id="get_landscape(lambda)"),
        E(get_landscape, 3.0, error=TypeError, match="got 3.0"),
        E(get_landscape, dw, dim=3, error=TypeError, match="keyword options"),
        E(dw.value, np.zeros((4, 3)), match=r"shape \(N, 2\)"),
        E(dw.grad, np.zeros(3), match=r"shape \(2,\)"),
        E(dw.hvp, np.zeros((3, 2)), torch.zeros(3, 2), error=TypeError, match="numpy array but v is a torch"),
        E(dw.hvp, torch.zeros(3, 2), np.zeros((3, 2)), error=TypeError, match="torch tensor but v is a numpy"),
        E(dw.hvp, np.zeros((3, 2)), np.zeros((2, 2)), match="v has shape"),
        E(NumpyLandscape, "not callable", None, 2, error=TypeError, match="loss_fn must be callable"),
        E(NumpyLandscape, lambda t: 0.0, None, 2, vectorize="x", match="vectorize must be one of"),
        E(DoubleWell, dim=0, match="dim must be a positive integer"),
        # the second audit (issue 11)
        E(DoubleWell, dim=2.5, match=r"dim must be a positive integer, got dim=2\.5"),
        E(DoubleWell, barrier=math.nan, match="barrier must be finite"),
        E(TiltedDoubleWell, tilt=math.nan, match="tilt must be finite"),
        E(Quadratic, [math.nan], match="A must be finite"),
        E(Quadratic, [1.0], center=[math.nan], match="center must be finite"),
        E(Quadratic, [1.0], box=[(1.0, -1.0)], match=r"box\[0\] must be a finite \(lo, hi\) pair with lo < hi"),
        E(Rosenbrock, a=math.inf, match="a must be finite"),
        E(MullerBrown, scale=0.0, match="scale must be > 0"),
        E(anisotropic_quadratic, lam_min=10.0, lam_max=1.0, match="need lam_min <= lam_max"),
        E(lazy(lambda: NumpyLandscape(lambda t: float(t @ t), lambda t: np.zeros(5), 2).grad), np.zeros((3, 2)),
          match=r"grad_fn '.*<lambda>' returned an array of shape \(5,\) .* expected shape \(2,\)",
          id="NumpyLandscape.grad(grad_fn of the wrong shape)"),
        E(lazy(lambda: TorchLandscape(lambda t: t, 2).value), np.ones((3, 2)),
          match=r"fn '.*<lambda>' returned shape \(3, 2\) for points of shape \(3, 2\)",
          id="TorchLandscape.value(fn of the wrong shape)"),
        E(lazy(lambda: NumpyLandscape(lambda t: None, None, 2).value), np.zeros((3, 2)), error=TypeError,
          match=r"loss_fn '.*<lambda>' returned None", id="NumpyLandscape.value(loss_fn returns None)"),
    ]


def _dynamics():
    from hhld.dynamics import MomentsObserver, Simulation, TrajectoryObserver, TransitionObserver, kde_score
    from hhld.landscapes import double_well_2d

    dw = double_well_2d()
    x = np.zeros((8, 2))
    return [
        E(Simulation, lambda th: th, x, dt=0.01, D=0.1, error=TypeError, match="NumpyLandscape",
          id="Simulation(lambda landscape)"),
        E(Simulation, dw, x, dt=0.0, D=0.1, match="dt must be > 0"),
        E(Simulation, dw, x, dt=0.01, D=-1.0, match="D must be >= 0"),
        E(Simulation, dw, x, dt=0.01, D=0.1, integrator="nope", match="nope"),
        E(Simulation, dw, x, dt=0.01, D=0.1, observers=[object()], error=TypeError,
          match=r"observers\[0\] = <object.* not an observer", id="Simulation(observers=[object()])"),
        E(Simulation, dw, x, dt=0.01, D=0.1, on_nonfinite="ignore", match="on_nonfinite must be one of"),
        E(Simulation, dw, x, dt=0.01, D=0.1, lam=0.5, match="baoab"),
        E(Simulation, dw, x, dt=0.01, D=0.1, tunneling="yes", error=TypeError, match="TunnelingPolicy"),
        E(Simulation, dw, np.zeros((8, 3)), dt=0.01, D=0.1, match=r"shape \(N, 2\)"),
        E(Simulation, dw, np.full((8, 2), np.nan), dt=0.01, D=0.1, error=NonFiniteError, match="initial state"),
        E(lazy(lambda: _sim().run), -1, match="n_steps must be >= 0", id="Simulation.run(-1)"),
        E(lazy(lambda: _sim().load), lazy(_pickle_file), match="not an hhld checkpoint.*pickle",
          id="Simulation.load(pickle file)"),
        E(lazy(lambda: _sim(dt=0.02).load), lazy(_checkpoint), match="dt: checkpoint 0.01, this simulation 0.02",
          id="Simulation.load(other dt)"),
        E(lazy(lambda: _sim(observers=[_OddObserver()]).run(1).save), lazy(lambda: os.path.join(_tmpdir(), "c.npz")),
          error=TypeError, match="cannot go into a data-only checkpoint", id="Simulation.save(non-data observer state)"),
        # the second audit (issue 11)
        E(Simulation, dw, np.zeros((0, 2)), dt=0.01, D=0.1, match=r"theta0 holds no particle"),
        E(Simulation, dw, x, dt=0.01, D=0.1, rng=-1, match=r"rng must be an integer seed >= 0, got rng=-1"),
        E(lazy(lambda: _sim(observers=[TransitionObserver(axis=5)]).run), 1,
          match=r"axis=5 but the particles have d=2 coordinates", id="TransitionObserver(axis=5) on a 2-d run"),
        E(TransitionObserver, core=-1.0, match=r"core must be >= 0"),
        E(TrajectoryObserver, max_particles=-1, match=r"max_particles must be >= 1"),
        E(MomentsObserver, burn_in=-1, match=r"burn_in must be >= 0"),
        # 2026-12-02: zero spread gave an all-NaN KDE score / entropy force in silence
        E(kde_score, np.zeros((5, 2)), match=r"all N=5 reference points are the same point .*zero spread",
          id="kde_score(one point)"),
        E(kde_score, np.zeros((1, 2)), match=r"at least 2 reference points, got N=1", id="kde_score(one sample)"),
        E(kde_score, np.eye(3), bandwidth=0.0, match=r"bandwidth must be > 0", id="kde_score(bandwidth=0)"),
        E(Simulation, dw, np.tile([-1.0, 0.0], (50, 1)), dt=0.01, D=0.3, integrator="baoab", lam=0.01,
          match=r"lam=0\.01 > 0 needs spread in theta0", id="Simulation(lam>0, every particle at one point)"),
    ]


class _OddObserver:
    """An observer whose state holds an object a data-only checkpoint cannot store."""

    name = "odd"

    def __init__(self):
        self.thing = object()

    def start(self, state, ctx):
        pass

    def due(self, step):
        return False

    def observe(self, state, ctx):
        pass

    def select(self, keep):
        pass

    def result(self):
        return {}

    def state_dict(self):
        return {"thing": self.thing}

    def load_state_dict(self, d):
        pass


def _observables():
    from hhld.landscapes import DoubleWell, Quadratic
    from hhld.observables import (DegenerateSamplesWarning, classify_regime, consolidation_ratio, energy,
                                  entropy_histogram, entropy_knn, free_energy, kl_to_gibbs, log_partition,
                                  uncertainty_product)

    x = np.random.default_rng(0).normal(size=(200, 1))
    q = Quadratic([1.0], box=[(-12.0, 12.0)])
    return [
        # the second audit (issue 11)
        E(entropy_knn, np.vstack([x, x]), k=1, error=DegenerateSamplesWarning,
          match=r"400 of N=400 samples have k=1 or more exact duplicates .*-inf", id="entropy_knn(duplicates)"),
        E(entropy_knn, np.zeros((50, 2)), error=DegenerateSamplesWarning, match="all N=50 samples are the same point",
          id="entropy_knn(one point)"),
        E(entropy_knn, np.zeros((5, 2, 2)), match=r"shape \(N, d\) or \(N,\), got shape \(5, 2, 2\)",
          id="entropy_knn(3-d)"),
        E(entropy_knn, x + 1j, error=TypeError, match="samples must be real", id="entropy_knn(complex)"),
        E(entropy_knn, np.full((50, 1), np.nan), error=NonFiniteError, match="50 non-finite", id="entropy_knn(nan)"),
        E(entropy_histogram, np.zeros((50, 1)), error=DegenerateSamplesWarning, match="same value on axis 0",
          id="entropy_histogram(one value)"),
        E(entropy_histogram, x, range=[(10.0, 11.0)], match=r"200 of N=200 samples lie outside range",
          id="entropy_histogram(range without the samples)"),
        E(entropy_histogram, np.zeros((0, 1)), match="at least 2 samples", id="entropy_histogram(empty)"),
        E(kl_to_gibbs, x, q, 1.0, entropy="nope", match=r"entropy must be one of \('knn', 'histogram'\)",
          id="kl_to_gibbs(entropy='nope')"),
        E(kl_to_gibbs, x, q, 1.0, log_z=math.nan, match="log_z must be finite", id="kl_to_gibbs(log_z=nan)"),
        E(free_energy, x, q, 1.0, mu=0.0, match="mu must be > 0", id="free_energy(mu=0)"),
        E(energy, np.full((5, 1), np.nan), q, error=NonFiniteError, match="energy: samples have 5 non-finite",
          id="energy(nan samples)"),
        E(consolidation_ratio, -1.0, 0.1, dim=2, match=r"squared norm .* must be >= 0, got a minimum of -1",
          id="consolidation_ratio(negative squared norm)"),
        E(classify_regime, -1.0, match=r"must be >= 0, got -1\.0", id="classify_regime(-1)"),
        E(uncertainty_product, np.full((5, 2), np.nan), np.ones((5, 2)), error=NonFiniteError,
          match="theta has 10 non-finite", id="uncertainty_product(nan theta)"),
        E(log_partition, DoubleWell(dim=4), 0.1, match="d <= 3"),
        E(log_partition, Quadratic([1.0]), 0.0, match="D must be > 0"),
        E(log_partition, lambda th: th, 0.1, error=TypeError, match="NumpyLandscape", id="log_partition(lambda)"),
        E(kl_to_gibbs, np.zeros((10, 1)), Quadratic([1.0]), -1.0, match="D must be > 0"),
    ]


def _validate():
    from hhld.validate.base import Cell, ExperimentConfig, Row, get_experiment
    from hhld.validate.runner import run_validation, torch_threads

    return [
        E(run_validation, lazy(_tmpdir), executor="nope", match="executor must be one of"),
        E(run_validation, lazy(_tmpdir), only=["nosuch"], quiet=True, match=r"unknown experiment\(s\) \['nosuch'\]"),
        E(get_experiment, "nosuch", match="unknown experiment 'nosuch'"),
        E(ExperimentConfig().with_seeds, 0, match="number of seeds must be >= 1"),
        E(ExperimentConfig.scale, "huge", match="scale must be"),
        E(Row, "p", "d", 1.0, None, "", "maybe", match="verdict must be one of"),
        E(Cell, "x", {}, 1.5, error=TypeError, match="seed must be an int"),
        E(lazy(lambda: torch_threads(-1).__enter__), match="threads must be >= 0", id="torch_threads(-1)"),
    ]


def _theory():
    from hhld.landscapes import NumpyLandscape, Quadratic
    from hhld.theory import find_minimum, gibbs_log_partition

    return [
        E(find_minimum, NumpyLandscape(lambda t: -float(t @ t), None, 1), [0.1], error=RuntimeError,
          match=r"find_minimum did not converge from x0=\[0\.1\].*unbounded below", id="find_minimum(unbounded)"),
        E(gibbs_log_partition, Quadratic([1.0]), 1.0, order=0, match="order must be >= 1"),
    ]


FOKKER_PLANCK = _fokker_planck()
QUANTUM = _quantum()
LANDSCAPES = _landscapes()
DYNAMICS = _dynamics()
OBSERVABLES = _observables()
THEORY = _theory()
VALIDATE = _validate()
#: rows of the documents' API (hhld.HeisenbergLearning), the optimizer and the monitor: to be filled
#: by the issues that own those areas


def _documents_api():
    from hhld import HeisenbergLearning, get_consolidation_metrics

    def dw_loss(t):
        return (t[0] ** 2 - 1) ** 2 + t[1] ** 2

    def dw_grad(t):
        return np.array([4 * t[0] * (t[0] ** 2 - 1), 2 * t[1]])

    def train(loss=dw_loss, grad=dw_grad):
        return HeisenbergLearning(loss, grad, 2, D=0.05, seed=0, verbose=False).train

    class _Opt:
        param_groups = [{"lr": 0.1}]

    HL = HeisenbergLearning
    z2 = np.zeros(2)
    return [
        E(HL, dw_loss, dw_grad, 2, D=-0.1, match=r"D must be >= 0, got D=-0.1"),
        E(HL, dw_loss, dw_grad, 2, eta=0.0, match=r"eta must be > 0"),
        E(HL, dw_loss, dw_grad, 0, match=r"dim must be >= 1"),
        E(HL, 3.0, dw_grad, 2, error=TypeError, match="loss_fn must be a function"),
        E(HL, dw_loss, dw_grad, 2, rng=1, seed=1, match="either rng= or seed="),
        E(HL, dw_loss, dw_grad, 2, integrator="rk4", match="unknown integrator 'rk4'"),
        E(HL, dw_loss, dw_grad, 2, seed=-1, match=r"seed must be an integer seed >= 0, got seed=-1"),
        E(HL, dw_loss, dw_grad, 2, seed=1.5, error=TypeError, match=r"seed must be an integer seed >= 0, got 1\.5"),
        E(lazy(train), np.zeros(3), 5, match=r"theta_init must have shape \(2,\)", id="train(theta of shape 3)"),
        E(lazy(train), z2, 5, dt=0.0, match="dt must be > 0", id="train(dt=0)"),
        E(lazy(train), z2, 0, match="n_steps must be >= 1", id="train(n_steps=0)"),
        E(lazy(train), z2, 5, transition_threshold=math.nan, match="transition_threshold .* got nan",
          id="train(threshold=nan)"),
        E(lazy(lambda: train(grad=lambda t: np.zeros(3))), z2, 5,
          match=r"loss_grad_fn '<lambda>' returned an array of shape \(3,\).*shape \(2,\)",
          id="train(grad of shape 3)"),
        E(lazy(lambda: train(grad=lambda t: None)), z2, 5, error=TypeError,
          match=r"loss_grad_fn '<lambda>' returned None", id="train(grad returns None)"),
        E(lazy(lambda: train(loss=lambda t: t ** 2)), z2, 5,
          match=r"loss_fn '<lambda>' returned an array of shape \(2,\).*scalar", id="train(vector loss)"),
        E(lazy(lambda: train(loss=lambda t: math.nan)), z2, 5, error=NonFiniteError,
          match=r"loss_fn '<lambda>' returned nan at step 0", id="train(NaN loss, finite gradient)"),
        E(lazy(lambda: HL(dw_loss, dw_grad, 2, D=0.0, verbose=False).consolidation_ratio), z2,
          match="D must be > 0", id="consolidation_ratio(D=0)"),
        E(get_consolidation_metrics, object(), z2, 8, error=TypeError, match=r"param_groups\[0\]\['lr'\]",
          id="get_consolidation_metrics(no optimizer)"),
        E(get_consolidation_metrics, _Opt(), np.array([math.nan, 1.0]), 8, error=NonFiniteError,
          match="non-finite", id="get_consolidation_metrics(NaN gradient)"),
        E(get_consolidation_metrics, _Opt(), z2, 0, match="batch_size must be >= 1",
          id="get_consolidation_metrics(batch_size=0)"),
    ]


def _optim():
    import torch

    from hhld.torch import ControllerConfig, HeisenbergSGD
    from hhld.torch.lr import eta_opt_prediction, lr_range_test

    def param():
        return torch.nn.Parameter(torch.zeros(3))

    def stepped(**kw):
        p = param()
        opt = HeisenbergSGD([p], lr=0.1, D=0.1, seed=0)
        p.grad = torch.ones(3)
        return lambda: opt.step(**kw)

    def model():
        return torch.nn.Linear(2, 1)

    mse = torch.nn.functional.mse_loss
    batch = lazy(lambda: (torch.ones(4, 2), torch.zeros(4, 1)))

    def pair():
        from hhld.torch import find_linear_pairs

        return find_linear_pairs(torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1)))[0]

    from hhld.torch import remove_neurons
    return [
        E(remove_neurons, lazy(pair), [1, 1], match=r"neuron indices \[1\] given more than once",
          id="remove_neurons(duplicate)"),
        E(remove_neurons, lazy(pair), [1.5], error=TypeError, match=r"integers, got 1.5", id="remove_neurons(float)"),
        E(remove_neurons, lazy(pair), [4], error=IndexError, match=r"\[4\] out of range for width 4",
          id="remove_neurons(out of range)"),
        E(HeisenbergSGD, lazy(lambda: [param()]), lr=-1.0, match=r"lr must be > 0, got lr=-1"),
        E(HeisenbergSGD, lazy(lambda: [param()]), lr=0.1, D_inject=-0.1, match=r"D_inject must be >= 0"),
        E(HeisenbergSGD, lazy(lambda: [param()]), lr=0.1, controller="yes", error=TypeError, match="controller"),
        E(lazy(lambda: HeisenbergSGD([param()], lr=0.1, seed=0).add_param_group), lazy(lambda: {"params": [param()],
          "lr": -1}), match=r"lr must be > 0, got lr=-1", id="add_param_group(lr=-1)"),
        E(lazy(lambda: stepped(consolidation=-5)), match=r"consolidation must be >= 0, got consolidation=-5",
          id="step(consolidation=-5)"),
        E(lazy(lambda: stepped(diffusion=0.0)), match=r"diffusion must be > 0", id="step(diffusion=0)"),
        E(lazy(lambda: stepped(closure=3)), error=TypeError, match=r"closure must be a function .* got 3",
          id="step(closure=3)"),
        E(lazy(lambda: HeisenbergSGD([param()], lr=0.1, seed=0).load_state_dict), {"x": 1},
          match=r"not an optimizer state_dict .* got \['x'\]", id="load_state_dict(garbage)"),
        E(HeisenbergSGD, lazy(lambda: [torch.nn.Parameter(torch.ones(2, dtype=torch.complex64))]), lr=0.1,
          error=TypeError, match=r"complex \(torch.complex64, shape \(2,\)\).*view_as_real", id="complex parameter"),
        E(ControllerConfig, lr_factor=0.5, match=r"lr_factor must be >= 1"),
        E(eta_opt_prediction, lazy(model), mse, batch, D=-1.0, match=r"D must be > 0, got D=-1"),
        E(eta_opt_prediction, lazy(model), mse, batch, D=0.1, loss_reduction="none",
          match=r"loss_reduction must be 'mean' or 'sum', got 'none'"),
        E(lr_range_test, lazy(model), lazy(lambda: torch.optim.SGD(model().parameters(), lr=0.1)), mse,
          lazy(lambda: [(torch.ones(4, 2), torch.zeros(4, 1))]), start_lr=1.0, end_lr=0.1,
          match="end_lr must be > start_lr"),
    ]


def _monitor():
    import torch

    from hhld.torch import Monitor, PerSampleSqNorms
    from hhld.torch.persample import BatchAxisError

    def lin():
        torch.manual_seed(0)
        return torch.nn.Linear(3, 2)

    def mon(**kw):
        m = lin()
        return Monitor(m, torch.optim.SGD(m.parameters(), lr=0.1), **{"log_every": 1, **kw})

    def stepped_with(loss):
        """A monitor after one real step, whose step() gets ``loss``."""
        m = lin()
        opt = torch.optim.SGD(m.parameters(), lr=0.1)
        mo = Monitor(m, opt, log_every=1)
        m(torch.ones(4, 3)).sum().backward()
        opt.step()
        return lambda: mo.step(loss)

    class TwoBatches(torch.nn.Module):
        """An LSTM that sees (T, B, F) and a second one that sees (B, T, F): the batch axis is ambiguous."""

        def __init__(self):
            super().__init__()
            self.a = torch.nn.LSTM(3, 4)
            self.b = torch.nn.LSTM(3, 4, batch_first=True)

        def forward(self, x):
            return self.a(x)[0].sum() + self.b(x)[0].sum()

    def ambiguous():
        m = TwoBatches()
        mo = Monitor(m, torch.optim.SGD(m.parameters(), lr=0.1), tier1_every=1)
        return lambda: m(torch.ones(5, 2, 3))

    def opt_of(m):
        return torch.optim.SGD(m.parameters(), lr=0.1)

    def lazy_modules():
        m = torch.nn.Sequential(torch.nn.LazyLinear(2))
        opt = torch.optim.SGD(m.parameters(), lr=0.1)
        return lambda: Monitor(m, opt)

    return [
        E(lazy(lazy_modules), match=r"2 parameter\(s\) of the model are not initialised yet \(lazy modules: "
          r"\['0.weight', '0.bias'\]\); run one forward pass", id="Monitor(lazy modules)"),
        E(lazy(lambda: mon().load_state_dict), {"state": {}}, match=r"not a Monitor state_dict \(format "
          r"'hhld.torch.Monitor/1'\), got None", id="Monitor.load_state_dict(garbage)"),
        E(Monitor, lazy(lin), "sgd", error=TypeError, match="optimizer must be a torch.optim.Optimizer"),
        E(Monitor, "model", lazy(lambda: torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)),
          error=TypeError, match="model must be a torch.nn.Module"),
        E(lazy(lambda: lambda: mon(log_every=0)), match=r"log_every must be an integer >= 1, got 0",
          id="Monitor(log_every=0)"),
        E(lazy(lambda: lambda: mon(tier1_every=0)), match=r"tier1_every must be an integer >= 1 or None, got 0",
          id="Monitor(tier1_every=0)"),
        E(lazy(lambda: lambda: mon(batch_size=0)), match=r"batch_size must be an integer >= 1 or None, got 0",
          id="Monitor(batch_size=0)"),
        E(lazy(lambda: lambda: mon(batch_axis=2)), match=r"batch_axis must be 0, 1 or None, got 2",
          id="Monitor(batch_axis=2)"),
        E(lazy(lambda: lambda: mon(D=-1.0)), match=r"D must be > 0 and finite, got D=-1", id="Monitor(D=-1)"),
        E(lazy(lambda: lambda: mon(D=float("inf"))), match=r"D must be > 0 and finite", id="Monitor(D=inf)"),
        E(lazy(lambda: lambda: mon(on_nonfinite="ignore")), match=r"on_nonfinite must be 'raise' or 'warn'",
          id="Monitor(on_nonfinite='ignore')"),
        E(lazy(lambda: lambda: mon(loss_reduction="none")), match=r"loss_reduction must be 'mean' or 'sum'",
          id="Monitor(loss_reduction='none')"),
        E(lazy(lambda: lambda: mon(accumulation="avg")),
          match=r"accumulation must be 'mean', 'sum' or 'shares', got 'avg'", id="Monitor(accumulation='avg')"),
        E(lazy(lambda: lambda: mon(conv_estimator="fast")), match=r"conv_estimator must be 'exact', 'sketch' or 'auto'",
          id="Monitor(conv_estimator='fast')"),
        E(lazy(lambda: lambda: mon(coverage_warning=1.5)), match=r"coverage_warning must be in \[0, 1\]",
          id="Monitor(coverage_warning=1.5)"),
        E(lazy(lambda: lambda: mon(drop_factor=1.0)), match=r"drop_factor must be > 1", id="Monitor(drop_factor=1)"),
        E(lazy(lambda: lambda: mon(extra_quantities=[object()])), error=TypeError,
          match="extra_quantities must be hhld.torch.Quantity objects", id="Monitor(extra_quantities=[object()])"),
        E(lazy(lambda: lambda: mon(loss_fn=torch.nn.MSELoss())), match="tier 2 needs both loss_fn and hessian_batch",
          id="Monitor(loss_fn only)"),
        E(lazy(lambda: lambda: Monitor(lin().requires_grad_(False), opt_of(lin()))), match="no trainable parameters",
          id="Monitor(frozen model)"),
        E(lazy(lambda: stepped_with(torch.ones(4))), match=r"loss must be a scalar .* shape \(4,\)",
          id="Monitor.step(vector loss)"),
        E(lazy(lambda: stepped_with("high")), error=TypeError, match="loss must be a scalar tensor or a float",
          id="Monitor.step('high')"),
        E(lazy(lambda: stepped_with(float("inf"))), error=NonFiniteError, match=r"non-finite monitor values \['loss'",
          id="Monitor.step(inf)"),
        E(lazy(ambiguous), error=BatchAxisError, match="pass batch_size= and batch_axis=",
          id="Monitor: layers disagree about the batch axis"),
        E(PerSampleSqNorms, lazy(lin), batch_axis=3, match=r"batch_axis must be 0, 1 or None, got 3"),
        E(PerSampleSqNorms, lazy(lin), conv_probes=0, match=r"conv_probes must be an integer >= 1, got 0"),
    ]


DOCUMENTS_API = _documents_api()
OPTIM = _optim()
MONITOR = _monitor()

AREAS = {
    "fokker_planck": FOKKER_PLANCK, "quantum": QUANTUM, "landscapes": LANDSCAPES, "dynamics": DYNAMICS,
    "observables": OBSERVABLES, "theory": THEORY, "validate": VALIDATE, "documents_api": DOCUMENTS_API, "optim": OPTIM,
    "monitor": MONITOR,
}

# ------------------------------------------------------------------ the command line
CLI = [
    # hhld demo
    C(["demo", "--example", "9"], r"--example.*got 9; choose from 1, 2, 3, 4"),
    C(["demo", "--example", "0"], r"got 0; choose from"),
    C(["demo", "--seed", "-1"], r"--seed.*got -1"),
    C(["demo", "--example", "x"], r"--example.*got 'x'"),
    C(["demo", "--out", "{file}"], r"is a file, not a directory"),
    C(["demo", "--out", "/proc/hhld-demo"], r"--out /proc/hhld-demo: cannot create"),
    C(["demo", "--nosuch"], r"No such option: --nosuch"),
    # hhld solve schrodinger
    C(["solve", "schrodinger", "--points", "2"], r"--cells must be >= 4, got --cells=2"),
    C(["solve", "schrodinger", "--hbar", "0"], r"--hbar must be > 0"),
    C(["solve", "schrodinger", "--eta", "-1", "--D", "1"], r"--eta must be > 0"),
    C(["solve", "schrodinger", "--eta", "1"], r"--eta and --D go together"),
    C(["solve", "schrodinger", "--mass", "0"], r"--mass must be > 0"),
    C(["solve", "schrodinger", "--dt", "0"], r"--dt must be > 0"),
    C(["solve", "schrodinger", "--dt", "nan"], r"--dt must be finite"),
    C(["solve", "schrodinger", "--eigen", "100000"], r"--eigen.*got 100000; the grid has 512 points"),
    C(["solve", "schrodinger", "--eigen", "-1"], r"--eigen must be >= 0"),
    C(["solve", "schrodinger", "--width", "0"], r"--width must be > 0"),
    C(["solve", "schrodinger", "--snapshots", "0"], r"--snapshots must be >= 1"),
    C(["solve", "schrodinger", "--center", "1000"], r"center=\[1000\.0\] lies outside the grid box"),
    C(["solve", "schrodinger", "--t-end", "1e9"], r"refusing .*1e\+12 steps.*would take about .*--force"),
    C(["solve", "schrodinger", "--points", "50000000"], r"refusing .*needs about .* of memory"),
    C(["solve", "schrodinger", "--points", "5e7"], r"--cells.*got '5e7'"),
    C(["solve", "schrodinger", "--box", "1,0"], r"--box.*lo < hi"),
    C(["solve", "schrodinger", "-l", "nosuch"], r"unknown landscape 'nosuch'"),
    C(["solve", "schrodinger", "--out", "{file}"], r"is a file, not a directory"),
    # hhld solve fokker-planck
    C(["solve", "fokker-planck", "--cells", "100000"], r"--cells.*10,000,000,000 cells.*32-bit indices"),
    C(["solve", "fokker-planck", "--cells", "3000"], r"refusing --cells 3000 .*estimated up front"),
    C(["solve", "fokker-planck", "--D", "-1"], r"--D \(the diffusion constant\) must be > 0"),
    C(["solve", "fokker-planck", "--D", "nan"], r"must be finite"),
    C(["solve", "fokker-planck", "--snapshots", "0"], r"--snapshots must be >= 1"),
    C(["solve", "fokker-planck", "--eigen", "100000"], r"--eigen.*got 100000"),
    C(["solve", "fokker-planck", "--center", "9,9"], r"--center.*outside the box"),
    C(["solve", "fokker-planck", "--method", "euler"], r"--method.*got 'euler'"),
    C(["solve", "fokker-planck", "--out", "{file}"], r"is a file, not a directory"),
    C(["solve", "fokker-planck", "--out", "/proc/hhld-fp"], r"cannot create the directory"),
    # hhld validate
    C(["validate", "--quick", "--only", "nosuch", "--out", "{file}"], r"is a file, not a directory"),
    C(["validate", "--quick", "--full"], r"give one of --quick / --full"),
    C(["validate", "--seeds", "1000000"], r"--seeds.*got 1000000"),
    C(["validate", "--seeds", "0"], r"--seeds.*got 0"),
    C(["validate", "--executor", "nope"], r"--executor.*got 'nope'"),
    C(["validate", "--address", "auto"], r"--address is for --executor ray"),
    C(["validate", "--threads", "-1"], r"--threads.*got -1"),
    C(["validate", "--out", "/proc/hhld-validate"], r"cannot create the directory"),
    # the second audit (issue 11)
    C(["validate", "--threads", "100000"], r"--threads.*got 100000; .*number of CPUs"),
    C(["solve", "fokker-planck", "--box", "-1e300,1e300"], r"non-finite .*shrink the box"),
    C(["solve", "fokker-planck", "--seed", "-1"], r"--seed must be >= 0, got --seed=-1"),
    C(["solve", "fokker-planck", "-n", "16", "--eigen", "0", "--no-animate", "--t-end", "1e300", "--out", "{tmp}"],
      r"cannot evolve over t = .* FokkerPlanck\.stationary\(\)"),
    C(["solve", "fokker-planck", "-l", "double_well", "--option", "dim=x"], r"dim must be a positive integer, got dim='x'"),
]
