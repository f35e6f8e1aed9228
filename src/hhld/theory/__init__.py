"""Every formula of the HHLD documents beside the exact results.

* :mod:`hhld.theory.documents` — **the documents' forms**, exactly as stated (ħ, T_eff,
  η_opt, WKB tunneling, the four uncertainty right-hand sides, Theorems 2-4, Takeaway 5,
  Γ(d)).
* :mod:`hhld.theory.exact` — **exact results** for ``dθ = −μ∇L dt + √(2D) dW`` (Stein,
  free energy, Bakry-Émery, stationary consolidation, OU moments, log Z).
* :mod:`hhld.theory.paths` — **exact results** found numerically: minima, index-1
  saddles, minimum-energy paths, Eyring-Kramers rates (leading order in D/μ).
* :mod:`hhld.theory.passage` — **exact** mean first-passage times in 1-D (the double
  integral); on grids in 1-3 D: :mod:`hhld.fokker_planck.mfpt`.

Mobility convention: μ = 1 the reference code, μ = 1/η the master equation; Gibbs
density ``exp(−μL/D)``, temperature ``T = D/μ``. See ``docs/theory.md``.
"""
from __future__ import annotations

from . import documents, exact, passage, paths
from .documents import *  # noqa: F401,F403
from .documents import __all__ as _doc_all
from .exact import *  # noqa: F401,F403
from .exact import __all__ as _exact_all
from .passage import *  # noqa: F401,F403
from .passage import __all__ as _passage_all
from .paths import *  # noqa: F401,F403
from .paths import __all__ as _paths_all

__all__ = ["documents", "exact", "passage", "paths", *_doc_all, *_exact_all, *_passage_all, *_paths_all]
