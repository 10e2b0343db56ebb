"""Exact mixture posteriors for y = Ax + n, and the posterior samplers judged against them.

The samplers are checked on a single-Gaussian prior (a 1-component GaussianMixture), whose posterior is
exactly Gaussian: MALA and the predictor–corrector must reproduce its mean and covariance within Monte Carlo
error; ULA with a large step must show its bias; DPS, RED-Diff and DAPS (not exact samplers) must run, stay
finite, count their NFE and move the mean from the prior's toward the posterior's.
"""
import math

import pytest
import torch

from energy_utils import posterior_samplers as P
from energy_utils.controls import GaussianPrior
from energy_utils.densities import GaussianMixture, random_mixture

F64 = torch.float64


# ---------------------------------------------------------------------------------------------------------
# GaussianMixture.posterior against brute force
# ---------------------------------------------------------------------------------------------------------
def _prior_log_prob(gm, x):
    """log p₀(x) from the components directly (``gm.log_prob(x)`` without a covariance takes σ² = 1e-300 through
    the isotropic branch, whose 1/σ² terms cancel catastrophically: it returns NaN or garbage)."""
    comps = [torch.distributions.MultivariateNormal(m, c).log_prob(x) for m, c in zip(gm.means, gm.covs)]
    return torch.logsumexp(torch.stack(comps, 1) + gm.weights.log(), 1)


def test_prior_log_prob_without_noise_is_exact():
    gm = random_mixture(3, 2, torch.Generator().manual_seed(5))
    x = torch.randn(50, 2, dtype=F64)
    assert torch.allclose(gm.log_prob(x), _prior_log_prob(gm, x), atol=1e-10)


def _quadrature_moments(dens, pts, dv):
    """Normalise a density sampled on grid points (n, d), return (normalised density, mean, covariance)."""
    Z = dens.sum() * dv
    p = dens / Z
    mean = (p[:, None] * pts).sum(0) * dv
    c = pts - mean
    cov = (p[:, None, None] * c[:, :, None] * c[:, None, :]).sum(0) * dv
    return p, mean, cov


def test_posterior_1d_against_quadrature():
    gm = random_mixture(3, 1, torch.Generator().manual_seed(3))
    A, s2 = torch.tensor([[0.7]], dtype=F64), 0.1
    y = torch.tensor([[0.4], [-1.5]], dtype=F64)
    post = gm.posterior(A, s2, y)
    x = torch.linspace(-10, 10, 40001, dtype=F64)[:, None]
    dx = (x[1] - x[0]).item()
    for b in range(2):
        unnorm = (_prior_log_prob(gm, x) - 0.5 * ((y[b] - x @ A.T) ** 2).sum(1) / s2).exp()
        p, mean, cov = _quadrature_moments(unnorm, x, dx)
        exact = post.log_prob(x.T[None].transpose(1, 2).expand(2, -1, -1))[b].exp()
        assert torch.allclose(exact, p, atol=1e-9 * p.max())
        assert torch.allclose(post.mean()[b], mean, atol=1e-9)
        assert torch.allclose(post.covariance()[b], cov, atol=1e-9)
        # the evidence p(y) is the normaliser of prior × likelihood
        Z = unnorm.sum() * dx / math.sqrt(2 * math.pi * s2)
        assert post.log_evidence[b].item() == pytest.approx(Z.log().item(), abs=1e-8)


def test_posterior_2d_against_quadrature_and_samples():
    gm = random_mixture(3, 2, torch.Generator().manual_seed(5))
    A, s2 = torch.tensor([[1.0, -0.5]], dtype=F64), 0.2          # one measurement of a 2-d signal
    y = torch.tensor([[0.8]], dtype=F64)
    post = gm.posterior(A, s2, y)
    g = torch.linspace(-9, 9, 601, dtype=F64)
    pts = torch.cartesian_prod(g, g)
    dv = (g[1] - g[0]).item() ** 2
    unnorm = (_prior_log_prob(gm, pts) - 0.5 * ((y - pts @ A.T) ** 2).sum(1) / s2).exp()
    p, mean, cov = _quadrature_moments(unnorm, pts, dv)
    exact = post.log_prob(pts[None])[0].exp()
    assert (exact - p).abs().max() < 1e-8 * p.max()
    assert torch.allclose(post.mean()[0], mean, atol=1e-8)
    assert torch.allclose(post.covariance()[0], cov, atol=1e-8)
    xs = post.sample(200_000, torch.Generator().manual_seed(0))
    assert xs.shape == (1, 200_000, 2)
    se = (post.covariance()[0].diagonal() / 200_000).sqrt()
    assert ((xs[0].mean(0) - post.mean()[0]).abs() < 4 * se).all()
    assert torch.allclose(torch.cov(xs[0].T), post.covariance()[0], atol=0.02 * cov.abs().max())


def test_posterior_16d_against_importance_weighting():
    gen = torch.Generator().manual_seed(7)
    gm = random_mixture(4, 16, gen, spread=1.0, scale=0.6)
    A = torch.randn(4, 16, generator=gen, dtype=F64) / 4
    s2 = 0.3
    x_true = gm.sample(1, gen)
    y = x_true @ A.T + math.sqrt(s2) * torch.randn(1, 4, generator=gen, dtype=F64)
    post = gm.posterior(A, s2, y)
    xs = gm.sample(400_000, gen)
    logw = -0.5 * ((y - xs @ A.T) ** 2).sum(1) / s2
    w = torch.softmax(logw, 0)
    ess = 1 / (w ** 2).sum()
    assert ess > 5_000                                                   # the check has power
    mean_is = (w[:, None] * xs).sum(0)
    se = (post.covariance()[0].diagonal() / ess).sqrt()
    assert ((mean_is - post.mean()[0]).abs() < 4 * se).all()


def test_single_gaussian_posterior_matches_gaussian_prior_control():
    gen = torch.Generator().manual_seed(2)
    d, m = 6, 3
    R = torch.randn(d, d, generator=gen, dtype=F64)
    C = R @ R.T / d + 0.1 * torch.eye(d, dtype=F64)
    mu = torch.randn(d, generator=gen, dtype=F64)
    Q = torch.linalg.qr(torch.randn(d, m, generator=gen, dtype=F64))[0].T    # (m, d), orthonormal rows

    class RowOperator:                      # the duck-typed operator controls.operator_matrix needs: M v = Qᵀ v
        def __init__(self, Q):
            self.Q, self.m = Q, Q.shape[0]

        def M(self, v):
            return v.double() @ self.Q

    y = torch.randn(5, m, generator=gen, dtype=F64)
    post = GaussianMixture([1.0], mu[None], C[None]).posterior(Q, 0.05, y)
    ctrl = GaussianPrior(mu, C)
    assert torch.allclose(post.mean(), ctrl.posterior_mean(RowOperator(Q), y, 0.05), atol=1e-10)
    assert torch.allclose(post.covariance()[0], ctrl.posterior_cov(RowOperator(Q), 0.05), atol=1e-10)


@pytest.mark.parametrize("bad, message", [
    (dict(A=torch.ones(2, 3, dtype=F64)), r"\(m, 2\)"),
    (dict(noise_var=0.0), "noise_var"),
    (dict(noise_var=-1.0), "noise_var"),
    (dict(y=torch.ones(3, dtype=F64)), r"y must have shape"),
])
def test_posterior_bad_input(bad, message):
    gm = random_mixture(2, 2, torch.Generator().manual_seed(0))
    args = dict(A=torch.eye(2, dtype=F64)[:1], noise_var=0.1, y=torch.zeros(3, 1, dtype=F64)) | bad
    with pytest.raises(ValueError, match=message):
        gm.posterior(**args)
    post = gm.posterior(torch.eye(2, dtype=F64)[:1], 0.1, torch.zeros(3, 1, dtype=F64))
    with pytest.raises(ValueError, match="shape"):
        post.log_prob(torch.zeros(2, 5, 2, dtype=F64))


# ---------------------------------------------------------------------------------------------------------
# Samplers on a single-Gaussian prior
# ---------------------------------------------------------------------------------------------------------
D, B, SN2 = 4, 4000, 0.05
MASK = torch.tensor([True, False, True, False])


@pytest.fixture(scope="module")
def problem():
    """A 4-d Gaussian prior, a mask observing coordinates 0 and 2 with noise variance 0.05, one measurement
    repeated over B chains, and its exact posterior."""
    g = torch.Generator().manual_seed(0)
    R = torch.randn(D, D, generator=g, dtype=F64)
    C = 0.5 * R @ R.T / D + 0.2 * torch.eye(D, dtype=F64)
    m = 0.5 * torch.randn(D, generator=g, dtype=F64)
    gm = GaussianMixture([1.0], m[None], C[None])
    A = torch.eye(D, dtype=F64)[MASK]
    y = gm.sample(1, g) @ A.T + math.sqrt(SN2) * torch.randn(1, 2, generator=g, dtype=F64)
    post = gm.posterior(A, SN2, y)
    y_full = torch.zeros(B, D, dtype=F64)
    y_full[:, MASK] = y
    return dict(gm=gm, prior=P.MixturePrior(gm), A=A, y=y, y_full=y_full, mean=post.mean()[0],
                cov=post.covariance()[0], prior_mean=m, lik=P.LinearGaussianLikelihood(A, y.expand(B, 2).clone(), SN2))


def _check_moments(z, pb, mean_se=4.0, cov_tol=0.08):
    se = (pb["cov"].diagonal() / z.shape[0]).sqrt()
    assert ((z.mean(0) - pb["mean"]).abs() < mean_se * se).all(), (z.mean(0), pb["mean"])
    # relative to the largest posterior variance: the MC error of a covariance entry is ~ √(2/B) ≈ 2.2 %
    err = (torch.cov(z.T) - pb["cov"]).abs().max() / pb["cov"].diagonal().max()
    assert err < cov_tol, err


def test_mala_recovers_exact_posterior(problem):
    g = torch.Generator().manual_seed(1)
    x0 = problem["gm"].sample(B, g)
    z, info = P.mala_sample(problem["prior"], problem["lik"], x0, step=0.02, n_steps=300, adapt_steps=100,
                            generator=g, disable=True)
    assert z.shape == (B, D) and info["nfe"] == 401 and info["wall_s"] > 0
    assert 0.45 < info["acceptance"] < 0.7                                 # adapted toward 0.574
    _check_moments(z, problem)


@pytest.mark.parametrize("mala", [False, True], ids=["ula-corrector", "mala-corrector"])
def test_pc_sampler_recovers_exact_posterior(problem, mala):
    g = torch.Generator().manual_seed(2)
    path = P.geometric_path(100.0, 1e-4, 200)
    z, info = P.pc_sample(problem["prior"], problem["y_full"], MASK, SN2, path, n_corrector=1, snr=0.15,
                          mala=mala, generator=g, disable=True)
    assert z.shape == (B, D)
    assert info["nfe"] == 1 + 199 * 2 and info["phase2_from"] is not None    # σ_n² = 0.05 lies on the path
    if mala:
        assert 0.5 < info["acceptance"] <= 1.0
    _check_moments(z, problem)


@pytest.mark.parametrize("mala", [False, True], ids=["annealed-ula", "annealed-mala"])
def test_annealed_sampler_recovers_exact_posterior_for_a_general_operator(problem, mala):
    """A dense random 2 × 4 operator (not a mask): the annealed chains end at the exact Gaussian posterior."""
    g = torch.Generator().manual_seed(7)
    A = torch.randn(2, D, generator=g, dtype=F64) / math.sqrt(D)
    y = problem["gm"].sample(1, g) @ A.T + math.sqrt(SN2) * torch.randn(1, 2, generator=g, dtype=F64)
    post = problem["gm"].posterior(A, SN2, y)
    lik = P.LinearGaussianLikelihood(A, y.expand(B, 2).clone(), SN2)
    z, info = P.annealed_sample(problem["prior"], lik, P.geometric_path(100.0, 1e-4, 40), n_steps=20, mala=mala,
                                snr=0.15, adapt_steps=10 if mala else 0, generator=g,
                                disable=True)
    assert z.shape == (B, D) and info["nfe"] == 40 * (1 + 20 + (10 if mala else 0))
    if mala:
        assert 0.3 < info["acceptance_per_level"][-1] <= 1.0
    _check_moments(z, dict(mean=post.mean()[0], cov=post.covariance()[0]))


def test_pc_sampler_noiseless_mask_keeps_observations(problem):
    """σ_n² below the end of the path: phase 1 only, the observed coordinates stay at y (the released sampler)."""
    g = torch.Generator().manual_seed(3)
    z, info = P.pc_sample(problem["prior"], problem["y_full"][:500], MASK, 1e-14, P.geometric_path(50.0, 1e-3, 60),
                          generator=g, disable=True)
    assert info["phase2_from"] is None
    assert torch.equal(z[:, MASK], problem["y_full"][:500, MASK])
    # the unobserved coordinates follow p(x_unobs | x_obs = y): their mean is the Gaussian conditional mean
    gm = problem["gm"]
    exact = gm.posterior(problem["A"], 1e-12, problem["y"]).mean()[0]
    se = (gm.covs[0].diagonal() / 500).sqrt()
    assert ((z.mean(0) - exact)[~MASK].abs() < 5 * se[~MASK]).all()


def test_ula_with_a_large_step_is_biased_and_mala_is_not(problem):
    """Same step for both; the stiffest posterior direction has variance ≈ 0.0475, so h = 0.06 makes ULA's
    stationary variance s²/(1 − h/(2s²)) ≈ 2.7× too large there; MALA's acceptance removes the bias."""
    g = torch.Generator().manual_seed(4)
    x0 = problem["gm"].sample(B, g)
    kw = dict(step=0.06, n_steps=300, generator=g, disable=True)
    z_ula, _ = P.langevin_sample(problem["prior"], problem["lik"], x0, **kw)
    z_mala, info = P.mala_sample(problem["prior"], problem["lik"], x0, **kw)
    var = problem["cov"].diagonal()
    ratio_ula = torch.cov(z_ula.T).diagonal() / var
    ratio_mala = torch.cov(z_mala.T).diagonal() / var
    assert ratio_ula[MASK].min() > 1.5                                    # bias far beyond MC error (~3 %)
    assert ((ratio_mala - 1).abs() < 0.12).all()
    assert info["acceptance"] < 0.9                                       # the step is large: MH rejects


@pytest.mark.parametrize("name", ["dps", "red_diff", "daps"])
def test_baselines_run_and_move_toward_the_posterior(problem, name):
    """Measured here (seed 5, 1000 chains, σ: 10 → 0.01, DPS/RED-Diff 200 levels, DAPS 40 levels × 5 ODE steps,
    lr="auto"): ‖mean − exact posterior mean‖ = 0.119 (DPS), 0.080 (RED-Diff), 0.110 (DAPS), against 0.873 for
    the prior mean. DPS and RED-Diff put the observed coordinates at y itself (they ignore σ_n; the exact
    posterior shrinks them toward the prior), and DPS/DAPS leave the unobserved coordinate 1 at −0.16 against
    an exact −0.27. Variance ratios sampler / exact (observed | unobserved coordinates): DPS 0.001 | 1.14, 1.02;
    RED-Diff 0.002 | 0.25 (a point estimate plus optimiser noise); DAPS 1.09, 1.06 | 1.87, 1.80."""
    g = torch.Generator().manual_seed(5)
    fn = {"dps": P.dps_sample, "red_diff": P.red_diff_sample, "daps": P.daps_sample}[name]
    kw = {"dps": dict(n_levels=200), "red_diff": dict(n_levels=200), "daps": dict(n_levels=40, lr="auto")}[name]
    n = 1000
    lik = P.LinearGaussianLikelihood(problem["A"], problem["lik"].y[:n], SN2)
    z, info = fn(problem["prior"], lik, sigma_max=10.0, generator=g, disable=True, **kw)
    assert z.shape == (n, D) and torch.isfinite(z).all() and info["wall_s"] > 0
    expected_nfe = {"dps": 199, "red_diff": 200, "daps": 40 * 5}[name]
    assert info["nfe"] == expected_nfe
    err = (z.mean(0) - problem["mean"]).norm()
    assert err < 0.3 * (problem["prior_mean"] - problem["mean"]).norm()


def test_energy_prior_adapter_matches_the_exact_energy(problem):
    """EnergyPrior on the exact oracle energy (MixtureEnergy) gives the MixturePrior's gradient."""
    from energy_utils.energy_models import MixtureEnergy
    ep = P.EnergyPrior(MixtureEnergy(problem["gm"]))
    x = torch.randn(7, D, dtype=F64)
    var = torch.tensor([0.01, 2.0, 0.01, 2.0], dtype=F64)
    u1, g1 = ep.energy_and_grad(x, var)
    u2, g2 = problem["prior"].energy_and_grad(x, var)
    assert torch.allclose(u1, u2, atol=1e-10) and torch.allclose(g1, g2, atol=1e-10)
    d, _, _ = P.tweedie_denoise(problem["prior"], x, 0.3)
    assert torch.allclose(d, problem["gm"].posterior_mean(x, 0.3), atol=1e-10)


# ---------------------------------------------------------------------------------------------------------
# Clear errors
# ---------------------------------------------------------------------------------------------------------
def test_bad_inputs_get_clear_errors(problem):
    pr, y, lik = problem["prior"], problem["y_full"][:8], P.LinearGaussianLikelihood(problem["A"], problem["y"].expand(8, 2), SN2)
    path = P.geometric_path(10.0, 1e-2, 5)
    with pytest.raises(ValueError, match="obs_var"):
        P.pc_sample(pr, y, MASK, 0.0, path, disable=True)
    with pytest.raises(ValueError, match="decreasing"):
        P.pc_sample(pr, y, MASK, SN2, path.flip(0), disable=True)
    with pytest.raises(ValueError, match="broadcast"):
        P.pc_sample(pr, y, torch.ones(3, dtype=torch.bool), SN2, path, disable=True)
    with pytest.raises(ValueError, match="eps_rule"):
        P.pc_sample(pr, y, MASK, SN2, path, eps_rule="median", disable=True)
    with pytest.raises(ValueError, match="per-chain"):
        P.pc_sample(pr, y, MASK, SN2, path, eps_rule="batch", mala=True, disable=True)
    with pytest.raises(ValueError, match="mala"):
        P.pc_sample(pr, y, MASK, SN2, path, mala="yes", disable=True)
    with pytest.raises(ValueError, match="positive"):
        P.mala_sample(pr, lik, torch.zeros(8, D, dtype=F64), step=-0.1, n_steps=3, disable=True)
    with pytest.raises(ValueError, match="8 signals"):
        P.mala_sample(pr, lik, torch.zeros(5, D, dtype=F64), step=0.1, n_steps=3, disable=True)
    with pytest.raises(ValueError, match="noise_var"):
        P.LinearGaussianLikelihood(problem["A"], problem["y"], 0.0)
    with pytest.raises(ValueError, match=r"y must have shape"):
        P.LinearGaussianLikelihood(problem["A"], torch.zeros(3, 5, dtype=F64), SN2)
    with pytest.raises(ValueError, match="'auto'"):
        P.daps_sample(pr, lik, lr="fast", n_levels=3, disable=True)
    with pytest.raises(ValueError, match="sigma_min"):
        P.dps_sample(pr, lik, sigma_max=0.1, sigma_min=1.0, n_levels=3, disable=True)
    with pytest.raises(ValueError, match="positive"):
        pr.energy_and_grad(torch.zeros(2, D, dtype=F64), torch.tensor([1.0, 0.0, 1.0, 1.0]))
    with pytest.raises(TypeError):
        P.dps_sample(pr, lik, n_levels=3, zeta_typo=1.0)


def test_divergence_guard_stops_with_an_error(problem):
    class NaNPrior:
        def energy_and_grad(self, x, var, create_graph=False):
            return torch.full((x.shape[0],), float("nan"), dtype=x.dtype), torch.zeros_like(x)
    lik = P.LinearGaussianLikelihood(problem["A"], problem["y"].expand(8, 2), SN2)
    with pytest.raises(P.SamplerDivergence, match="non-finite"):
        P.mala_sample(NaNPrior(), lik, torch.zeros(8, D, dtype=F64), step=0.01, n_steps=3, disable=True)
    with pytest.raises(P.SamplerDivergence):             # a step far beyond stability: ULA explodes
        P.langevin_sample(problem["prior"], lik, torch.zeros(8, D, dtype=F64), step=5.0, n_steps=200, disable=True)
