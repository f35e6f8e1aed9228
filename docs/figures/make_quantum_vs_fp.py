"""Real-time Schrodinger oscillation vs Fokker-Planck (imaginary-time) monotone relaxation.

Writes ``docs/figures/quantum_vs_fp.png`` (not committed):

    .venv/bin/python docs/figures/make_quantum_vs_fp.py [--out PATH] [--no-langevin]

One operator for both pictures: the mapped Hamiltonian ``H`` of the 1-D double well
``L = (x^2 - 1)^2`` at diffusion ``D`` (hhld.quantum.fp_map), i.e. the Fokker-Planck generator
after the exact similarity transform ``rho = sqrt(rho*) psi``. Start: the Gibbs density restricted
to the left well (``rho_0``), and ``psi_0 = sqrt(rho_0)`` for the quantum picture.

* real time, ``i dpsi/dt = H psi``: the right-well probability oscillates with period
  ``2 pi / (E_1 - E_0) = 2 pi / lambda_1`` (tunneling between the wells);
* Fokker-Planck, ``d rho/dt = A rho`` (= imaginary time ``dpsi/dt = -H psi``): the right-well
  mass rises monotonically to 1/2 at the rate ``lambda_1``; the spectrum of ``A`` is real;
* plain overdamped Langevin ``dx = -L'(x) dt + sqrt(2D) dW`` (an ensemble, Euler-Maruyama)
  follows the Fokker-Planck curve, not the oscillation.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def main(argv=None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("quantum_vs_fp.png"))
    ap.add_argument("--D", type=float, default=0.3)
    ap.add_argument("--points", type=int, default=300)
    ap.add_argument("--particles", type=int, default=4000)
    ap.add_argument("--no-langevin", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hhld.landscapes import double_well_1d
    from hhld.quantum import fp_map
    from hhld.quantum.grid import make_grid

    L, D = double_well_1d(), args.D
    g = make_grid(args.points, [(-2.5, 2.5)])
    x = g.axes()[0]
    right = x > 0

    H = fp_map.mapped_hamiltonian(g, L, D).toarray()
    E, phi = np.linalg.eigh(H)
    lam1 = E[1] - E[0]
    fp_eigs = fp_map.fp_spectrum(g, L, D, k=8)

    rho_star = fp_map.gibbs_density(g, L, D)
    rho0 = np.where(right, 0.0, rho_star)
    rho0 /= rho0.sum() * g.dV
    psi0 = np.sqrt(rho0)
    psi0 /= np.linalg.norm(psi0)
    c = phi.T @ psi0

    t = np.linspace(0.0, 3.0 * 2 * np.pi / lam1, 600)
    # real time with the same operator
    psi_t = phi @ (np.exp(-1j * np.outer(E, t)) * c[:, None])
    p_quantum = (np.abs(psi_t[right]) ** 2).sum(0) / (np.abs(psi_t) ** 2).sum(0)
    # Fokker-Planck (exact: eigen-expansion of the similarity-transformed generator)
    psi_im = phi @ (np.exp(-np.outer(E, t)) * c[:, None])
    rho_t = np.sqrt(rho_star)[:, None] * psi_im
    p_fp = rho_t[right].sum(0) / rho_t.sum(0)
    # cross-check with the sparse FP generator itself at a few early times (expm_multiply's cost
    # grows with t ||A||, so only the first ones)
    rho_chk = fp_map.evolve_fp(g, rho0, L, D, t[[0, 5, 10]])
    p_chk = rho_chk[:, right].sum(1) / rho_chk.sum(1)
    assert np.max(np.abs(p_chk - p_fp[[0, 5, 10]])) < 1e-8, "FP map and FP generator disagree"
    assert np.all(np.diff(p_fp) >= -1e-12), "FP relaxation should be monotone"

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    ax = axes[0]
    ax.plot(lam1 * t, p_quantum, label="real-time Schrodinger, i dpsi/dt = H psi")
    ax.plot(lam1 * t, p_fp, lw=2, label="Fokker-Planck = imaginary time, dpsi/dt = -H psi")
    if not args.no_langevin:
        rng = np.random.default_rng(args.seed)
        n = args.particles
        # initial particles from rho0 (inverse CDF on the grid)
        cdf = np.cumsum(rho0) * g.dV
        xs = np.interp(rng.random(n), cdf / cdf[-1], x)
        dt = 2e-3
        t_obs = t[t <= t[-1] / 3 * 1.5][::20]
        obs = []
        tcur = 0.0
        lo, hi = g.box[0]
        for to in t_obs:
            nsteps = int(round((to - tcur) / dt))
            for _ in range(nsteps):
                xs = xs - 4 * xs * (xs * xs - 1) * dt + np.sqrt(2 * D * dt) * rng.standard_normal(n)
                xs = np.where(xs < lo, 2 * lo - xs, xs)
                xs = np.where(xs > hi, 2 * hi - xs, xs)
            tcur += nsteps * dt
            obs.append(np.mean(xs > 0))
        ax.plot(lam1 * t_obs, obs, "k.", ms=5, label=f"overdamped Langevin, {n} particles")
    ax.axhline(0.5, color="0.6", lw=0.6)
    ax.set_xlabel(r"$\lambda_1 t$")
    ax.set_ylabel("probability in the right well")
    ax.set_title(f"double well, D = {D}: same operator, real vs imaginary time")
    ax.legend(fontsize=7, loc="lower right")

    ax = axes[1]
    ax.semilogy(lam1 * t, np.abs(p_fp - 0.5) + 1e-17, lw=2, label="|P_FP - 1/2|")
    ax.semilogy(lam1 * t, 0.5 * np.exp(-lam1 * t), "--", label=r"$\frac{1}{2}e^{-\lambda_1 t}$")
    ax.semilogy(lam1 * t, np.abs(p_quantum - 0.5) + 1e-17, alpha=0.6, label="|P_Schrodinger - 1/2|")
    ax.set_ylim(1e-6, 1)
    ax.set_xlabel(r"$\lambda_1 t$")
    ax.set_title("relaxation is monotone, tunneling oscillates")
    ax.legend(fontsize=7)

    ax = axes[2]
    ax.plot(fp_eigs.real, fp_eigs.imag, "o", label="FP generator eigenvalues")
    ax.set_xlabel("Re")
    ax.set_ylabel("Im")
    ax.set_ylim(-1, 1)
    ax.set_title(f"FP spectrum is real (max |Im| = {np.max(np.abs(fp_eigs.imag)):.1e})")
    ax.legend(fontsize=7)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=120)
    plt.close(fig)
    print(f"lambda_1 = {lam1:.6g}, tunneling period 2 pi / lambda_1 = {2 * np.pi / lam1:.6g}")
    print(f"min P_Schrodinger after the first half period = {p_quantum[t > np.pi / lam1].min():.4f}, "
          f"max = {p_quantum.max():.4f}; P_FP max = {p_fp.max():.4f} (monotone)")
    print(f"wrote {args.out}")
    return args.out


if __name__ == "__main__":
    main()
