"""The demo's Example 4: the documents' straight-line P is 1 at every D, and the measured escape
rate sits just below the exact core-to-core rate (the ensemble checks the cores every 5 steps)."""
import numpy as np

from hhld import theory
from hhld.demo import example_4


def test_example_4_exact_rate_beside_the_measured_one():
    r = example_4(np.random.default_rng(0), measured_D=(0.5,), n_particles=600, t_end=30.0)
    assert np.allclose(r["documents_P"], 1.0) and abs(r["documents_fit"][0]) < 1e-12
    exact = r["exact_core_rate"][0]
    assert exact == 1.0 / theory.mean_first_passage_time_1d(lambda x: (x * x - 1) ** 2, -0.5, 0.5, 0.5)
    k, se = r["measured_rate"][0], r["measured_rate_stderr"][0]
    assert -0.2 < k / exact - 1 < 3 * se / exact  # below it by the coarse checking, not above
    # negative controls: a reference 20% lower fails the 3-SE upper bound, one 15% higher the lower bound
    assert k / (0.8 * exact) - 1 > 3 * se / (0.8 * exact)
    assert k / (1.15 * exact) - 1 < -0.2
