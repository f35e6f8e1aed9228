import re
import warnings

import numpy as np
import pytest

from hhld.landscapes import double_well_1d, double_well_2d, get_landscape
from hhld.quantum import tunneling
from hhld.quantum.grid import make_grid
from hhld.quantum import harmonic
from hhld.quantum.schrodinger import SplitStepSolver, imaginary_time_ground_state


@pytest.mark.parametrize("dim", [1, 2, 3])
def test_norm_kept_to_round_off(dim):
    n = {1: 512, 2: 64, 3: 24}[dim]
    L = get_landscape("double_well", dim=dim)
    g = make_grid(n, [(-2.5, 2.5)] * dim)
    psi0 = g.gaussian_packet([0.8] + [0.0] * (dim - 1), 0.25, [1.0] + [0.0] * (dim - 1))
    res = SplitStepSolver(g, L, hbar=0.5, m=1.0, dt=2e-3).evolve(psi0, 1.0, n_snapshots=6)
    assert np.max(np.abs(res.norms - 1.0)) < 1e-12
    assert np.ptp(res.energies) < 1e-3 * abs(res.energies[0])


def test_dtype_kept_complex64():
    g = make_grid(128, [(-3, 3)])
    psi0 = g.gaussian_packet(0.0, 0.5, dtype=np.complex64)
    out = SplitStepSolver(g, lambda x: x ** 2, dt=1e-3).step(psi0, 10)
    assert out.dtype == np.complex64


def test_free_packet_spreads_exactly():
    # V = 0: sigma(t)^2 = sigma0^2 + (hbar t / (2 m sigma0))^2 (exact)
    g = make_grid(1024, [(-40, 40)])
    s0, hbar, m, t = 0.7, 1.0, 1.0, 3.0
    psi0 = g.gaussian_packet(0.0, s0, 0.5)
    res = SplitStepSolver(g, np.zeros(g.shape), hbar, m, dt=0.05).evolve(psi0, t, 2)
    x = g.axes()[0]
    p = np.abs(res.psi) ** 2 * g.dV
    mean = np.sum(x * p)
    var = np.sum((x - mean) ** 2 * p)
    assert abs(mean - 0.5 * t / m) < 1e-8
    assert abs(var - (s0 ** 2 + (hbar * t / (2 * m * s0)) ** 2)) < 1e-8


def test_double_well_tunneling_period():
    g = make_grid(256, [(-2.5, 2.5)])
    out = tunneling.tunneling_oscillation(g, double_well_1d(), hbar=0.4, m=1.0, periods=1.0, n_times=41)
    assert out["delta_e"] > 0
    pop = out["right_population"]
    assert pop[0] < 0.02 and pop[-1] < 0.02
    assert abs(pop[20] - 1.0) < 0.03  # half a period later the packet is in the right well
    assert np.max(np.abs(pop - out["predicted"])) < 0.03
    assert np.max(np.abs(out["norms"] - 1)) < 1e-11


def test_zero_steps_leave_the_state_unchanged():
    g = make_grid(64, [(-3, 3)])
    psi = g.gaussian_packet(0.3, 0.4)
    out = SplitStepSolver(g, double_well_1d(), dt=1e-2).step(psi, 0)
    np.testing.assert_array_equal(out, psi)
    assert out is not psi


def test_imaginary_time_with_a_huge_dtau_warns_and_the_default_is_accurate():
    import warnings

    from hhld.quantum import eigenstates
    from hhld.quantum.schrodinger import ConvergenceWarning, imaginary_time_ground_state

    g = make_grid(256, [(-3, 3)])
    L = double_well_1d()
    exact = eigenstates(g, L, k=1, order=4)[0][0]
    with pytest.warns(ConvergenceWarning, match=r"inaccurate.*reduce dtau=1000"):
        _, E = imaginary_time_ground_state(g, L, dtau=1e3)
    assert abs(E - exact) > 1.0  # the negative control: the number really is wrong
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, E = imaginary_time_ground_state(g, L)
    assert abs(E - exact) < 1e-6


def test_imaginary_time_not_converged_warns():
    from hhld.quantum.schrodinger import ConvergenceWarning, imaginary_time_ground_state

    g = make_grid(64, [(-3, 3)])
    with pytest.warns(ConvergenceWarning, match="did not converge in max_steps=3"):
        imaginary_time_ground_state(g, double_well_1d(), max_steps=3, psi0=g.gaussian_packet(1.0, 0.3))


def test_imaginary_time_ground_state():
    g = make_grid(256, [(-8, 8)])
    psi, E = imaginary_time_ground_state(g, harmonic.ho_potential(g, 1.0, 1.0), dtau=1e-3)
    assert abs(E - 0.5) < 1e-6
    exact = harmonic.coherent_state(g, 0.0).real
    assert np.max(np.abs(np.abs(psi) - exact)) < 1e-5


@pytest.mark.parametrize("hbar, n, wrong", [(0.01, 64, True), (1e-8, 64, True), (0.01, 1024, False)])
def test_a_wave_function_the_grid_does_not_resolve_is_flagged(hbar, n, wrong):
    """hbar small against the grid: the potential's phase varies faster than pi/dx, the state aliases, and the packet
    stays where it started while the norm and the energy look conserved (a silently wrong evolution until
    2026-12-02). The spectral tail says so; the resolved run (1024 points) is the reference and has no warning."""
    from hhld.quantum.schrodinger import RESOLUTION_TAIL, ResolutionWarning

    L = get_landscape("double_well_1d")
    g = make_grid(n, L.box)
    psi0 = g.gaussian_packet([0.5], 0.2, hbar=hbar)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        res = SplitStepSolver(g, L, hbar=hbar, dt=1e-3).evolve(psi0, 2.0, 5)
    x = g.mesh()[0]
    mean_x = [float(np.sum(x * np.abs(p) ** 2) / np.sum(np.abs(p) ** 2)) for p in res.snapshots]
    msgs = [str(w.message) for w in rec if issubclass(w.category, ResolutionWarning)]
    assert np.ptp(res.energies) < 1e-6 and np.max(np.abs(res.norms - 1)) < 1e-12  # these never showed it
    assert res.spectral_tails[0] < 1e-12
    if wrong:
        assert res.spectral_tails.max() > 0.1 and len(msgs) == 1 and "does not resolve" in msgs[0]
        assert abs(mean_x[2] - 0.5) < 0.1   # the packet has not moved (the resolved one is at 1.06)
    else:
        assert res.spectral_tails.max() < RESOLUTION_TAIL * 1e-5 and not msgs
        assert mean_x[2] == pytest.approx(1.06, abs=0.01)


def test_a_time_step_too_large_for_the_splitting_is_flagged():
    from hhld.quantum.schrodinger import ResolutionWarning

    L = get_landscape("double_well_1d")
    g = make_grid(64, L.box)
    psi0 = g.gaussian_packet([-1.0], 0.2)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        SplitStepSolver(g, L, dt=0.25).evolve(psi0, 5.0, 21)
    msgs = [str(w.message) for w in rec if issubclass(w.category, ResolutionWarning)]
    assert any(re.search(r"energy drifted by .*\(2(\.\d+)? of <T> \+ <\|V\|>.* use a smaller dt", m) for m in msgs), msgs
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResolutionWarning)
        SplitStepSolver(g, L, dt=1e-3).evolve(psi0, 5.0, 21)  # the command line's default: no warning


def test_a_free_packet_that_wraps_around_the_periodic_box_is_flagged():
    """A free packet (sigma0 = 0.5, hbar = m = 1) spreads past the faces of the periodic box [-10, 10] and wraps
    around: its standard deviation at t = 10 is 5.78 against the exact sigma0 sqrt(1 + (hbar t / (2 m sigma0^2))^2)
    = 10.01 while the norm and the energy stay conserved. Until 2026-12-02 that came back with no warning (the
    accuracy check looked at the wavenumber tail and the energy drift only); now the probability near the faces is
    checked at every snapshot and one box-truncation warning names the time, the probability and the remedy. The
    same packet in [-40, 40] matches the exact spread and gives no warning."""
    from hhld._validation import BoxTruncationWarning

    sigma0, t_end = 0.5, 10.0

    def run(half_width):
        g = make_grid(512, [(-half_width, half_width)])
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always")
            res = SplitStepSolver(g, np.zeros(g.shape), dt=0.01).evolve(g.gaussian_packet([0.0], sigma0), t_end, 5)
        x = g.axes[0]
        p = np.abs(res.psi) ** 2 * g.dV
        sd = float(np.sqrt(np.sum(x ** 2 * p) - np.sum(x * p) ** 2))
        msgs = [str(w.message) for w in rec if issubclass(w.category, BoxTruncationWarning)]
        return res, sd, msgs

    exact = sigma0 * np.sqrt(1 + (t_end / (2 * sigma0 ** 2)) ** 2)
    res, sd, msgs = run(10.0)
    assert abs(sd - exact) > 4.0  # the negative control: the number really is wrong (5.78 against 10.01)
    assert np.max(np.abs(res.norms - 1)) < 1e-12 and np.ptp(res.energies) < 1e-10  # these never showed it
    assert len(msgs) == 1, msgs
    assert re.search(r"faces of the periodic box \[\(-10\.0, 10\.0\)\] from t = 5 on: a probability 0\.016", msgs[0])
    assert "larger box" in msgs[0]
    res, sd, msgs = run(40.0)
    assert abs(sd - exact) < 2e-3 and not msgs
    assert res.edge_probabilities.max() < 1e-4


def test_a_packet_that_stays_inside_the_box_gives_no_box_warning():
    """The harmonic-oscillator coherent state of the harmonic tests and the double-well tunneling run stay inside
    their boxes: no box-wrap warning (the face check added 2026-12-02 must not fire on them)."""
    from hhld._validation import BoxTruncationWarning

    hbar, m, omega = 0.5, 2.0, 1.5
    g = make_grid(512, [(-8, 8)])
    T = 2 * np.pi / omega
    psi0 = harmonic.coherent_state(g, 1.2, 0.8, hbar, m, omega)
    with warnings.catch_warnings():
        warnings.simplefilter("error", BoxTruncationWarning)
        res = SplitStepSolver(g, harmonic.ho_potential(g, m, omega), hbar, m, dt=T / 400).evolve(psi0, T, 21)
        tunneling.tunneling_oscillation(make_grid(256, [(-2.5, 2.5)]), double_well_1d(), hbar=0.4, m=1.0,
                                        periods=1.0, n_times=41)
    assert res.edge_probabilities.max() < 1e-12


def test_a_confined_packet_that_reaches_the_faces_is_flagged_and_a_larger_box_fixes_it():
    """The command line's default run (double_well_1d on its box [-2, 2], 256 points, packet of width 0.2 at the
    left minimum, hbar = 1, t_end = 5) has energy 3.3 and momentum components that cross the faces of the periodic
    box: <x> differs by 0.58 from the same run on [-4, 4] (same spacing), with no warning until 2026-12-02. Now it is
    flagged; on [-4, 4] (where [-6, 6] agrees to 1e-11) it is not."""
    from hhld._validation import BoxTruncationWarning

    L = get_landscape("double_well_1d")
    assert [list(b) for b in L.box] == [[-2.0, 2.0]]

    def run(half_width, n):
        g = make_grid(n, [(-half_width, half_width)])
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always")
            res = SplitStepSolver(g, L, dt=1e-3).evolve(g.gaussian_packet([-1.0], 0.2), 5.0, 21)
        x = g.mesh()[0]
        mean_x = np.array([np.sum(x * np.abs(p) ** 2) * g.dV for p in res.snapshots])
        return mean_x, [str(w.message) for w in rec if issubclass(w.category, BoxTruncationWarning)]

    small, msgs = run(2.0, 256)
    large, msgs_large = run(4.0, 512)
    assert np.max(np.abs(small - large)) > 0.5  # the negative control: the small box really is wrong
    assert len(msgs) == 1 and "faces of the periodic box [(-2.0, 2.0)]" in msgs[0] and "larger box" in msgs[0]
    assert not msgs_large
