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


def test_divergence_guard_bounds_the_iterate_not_a_large_finite_energy(problem):
    """A chain far from the data has a huge but finite potential; only a non-finite energy or an iterate beyond
    ``diverge`` stops a sampler."""
    class ShiftedPrior:                                  # the same prior, its energy shifted by 1e12 (a constant)
        def energy_and_grad(self, x, var, create_graph=False):
            u, g = problem["prior"].energy_and_grad(x, var, create_graph)
            return u + 1e12, g
    lik = P.LinearGaussianLikelihood(problem["A"], problem["y"].expand(8, 2), SN2)
    x, info = P.mala_sample(ShiftedPrior(), lik, torch.zeros(8, D, dtype=F64), step=0.01, n_steps=5, disable=True)
    assert torch.isfinite(x).all() and info["nfe"] == 6
    with pytest.raises(P.SamplerDivergence, match=r"\|x\|"):
        P.mala_sample(ShiftedPrior(), lik, torch.zeros(8, D, dtype=F64), step=0.01, n_steps=5, disable=True,
                      diverge=1e-6)


# ---------------------------------------------------------------------------------------------------------
# The energy-guided covariance schedule (brief §5.3)
# ---------------------------------------------------------------------------------------------------------
OBS_TINY = 1e-10


def _smoothed_posterior(gm, y, s_end):
    """The exact law targeted at the end of a noiseless-mask schedule: z = x + N(0, s_end) on the unobserved
    coordinates, given z_obs = y (observed with variance OBS_TINY): a Gaussian prior N(m, C + s_end·diag(unobs))."""
    C = gm.covs[0] + s_end * torch.diag((~MASK).to(F64))
    post = GaussianMixture([1.0], gm.means, C[None]).posterior(torch.eye(D, dtype=F64)[MASK], OBS_TINY, y)
    return dict(mean=post.mean()[0], cov=post.covariance()[0])


@pytest.mark.parametrize("mala", [False, True], ids=["predictor-only", "mala-corrector"])
def test_energy_guided_sampler_recovers_exact_posterior(problem, mala):
    """Noiseless mask, Gaussian prior: the end state matches the exact Gaussian law of x + N(0, s_end) given
    x_obs = y (not p(x | y) itself: the O(s_end) smoothing is part of the target, so it is compared exactly).

    Settings: s_begin = 100, far above the prior's variances (≲ 1): the start x_init + √s_begin ξ ignores the
    prior mean, an error the reverse steps only shrink by ≈ (c + s_end)/(c + s_begin) (from s_begin = 10 it
    was still ≈ 5 standard errors at 8000 chains). γ = 0.1 with min_rel_step = 0.02: with one variance per
    coordinate the covariance score is a one-draw estimate and the chains drift to where it is small
    (measured: mean |v ∂U/∂v| 0.47 at the start, ≈ 0.15 after 50 steps), and below the conditional variances
    (≈ 0.4) v ∂U/∂v → 0 like v, so the pure rule (min_rel_step = 0) needs thousands of steps to reach
    s_end = 0.01 (γ = 0.025: mean v still 0.07 after 3000 steps); the floor bounds the run (≈ 420 steps, the
    energy-guided rate dominating until v ≈ 0.1). Measured with 3000 chains, seeds 0–3: mean errors ≤ 2.9
    standard errors, covariance error ≤ 0.047 of the largest variance (MALA, seeds 0–2: ≤ 1.8 and ≤ 0.028);
    with 8000 chains the state-dependent schedule left ≈ 2 standard errors on coordinate 3 where the
    geometric path (γ → 0, same floor) left 0.4: the adaptive schedule is a heuristic (the reverse-step
    argument assumes a fixed path). Hence 5 standard errors for the means (4 in _check_moments) and the usual
    0.08 for the covariance. MALA's acceptance is ≈ 0.999: the corrector step η ΔΣ_t is ~1–2 % of the
    variance, too small to correct much, but it must not hurt."""
    g = torch.Generator().manual_seed(11)
    n = 3000
    y_full = problem["y_full"][:n]
    z, info = P.energy_guided_sample(problem["prior"], y_full, MASK, OBS_TINY, 100.0, 1e-2, gamma=0.1,
                                     min_rel_step=0.02, n_corrector=1 if mala else 0, mala=mala, generator=g,
                                     disable=True)
    assert z.shape == (n, D) and info["converged"] and info["wall_s"] > 0
    assert info["nfe"] == 1 + info["n_steps"] * (2 if mala else 1)
    assert info["n_steps"] < 456                       # faster than the floor alone: ln(1e4)/−ln(0.98) steps
    if mala:
        assert 0.5 < info["acceptance"] <= 1.0
    else:
        assert info["acceptance"] is None
    assert torch.equal(z[:, MASK], y_full[:, MASK])
    _check_moments(z, _smoothed_posterior(problem["gm"], problem["y"], 1e-2), mean_se=5.0)


def test_energy_guided_schedule_ends_at_s_end_and_keeps_observations(problem):
    g = torch.Generator().manual_seed(12)
    y_full = problem["y_full"][:200]
    steps = []
    z, info = P.energy_guided_sample(problem["prior"], y_full, MASK, OBS_TINY, 10.0, 0.05, gamma=0.2,
                                     min_rel_step=0.02, generator=g, disable=True,
                                     callback=lambda d: steps.append((d["step"], d["var"].clone(), d["delta_var"])))
    assert info["converged"] and info["n_steps"] == len(steps) == steps[-1][0]
    var = info["var"]
    assert var.shape == (200, D)
    assert torch.all(var[:, ~MASK] == 0.05) and torch.all(var[:, MASK] == OBS_TINY)
    assert torch.equal(z[:, MASK], y_full[:, MASK])
    tr, tr_max = info["var_trace"], info["var_max_trace"]
    assert len(tr) == len(tr_max) == info["n_steps"] + 1 and tr[0] == tr_max[0] == 10.0
    assert all(b <= a for a, b in zip(tr, tr[1:])) and tr_max[-1] == 0.05 and tr_max[-2] > 0.05
    for _, v, dS in steps:                                # ΔΣ: never negative, zero on the observed coordinates
        assert torch.all(dS >= 0) and torch.all(dS[:, MASK] == 0) and torch.all(v[:, MASK] == OBS_TINY)
    # the variances fall at different rates per chain and coordinate (the schedule is the energy's, not a path)
    mid = steps[len(steps) // 3][1][:, ~MASK]
    assert mid.std() > 0.05 * mid.mean()
    # cap reached: not converged, the sample is at the variances reported
    z2, info2 = P.energy_guided_sample(problem["prior"], y_full, MASK, OBS_TINY, 10.0, 0.05, max_steps=7,
                                       n_corrector=2, generator=g, disable=True)
    assert not info2["converged"] and info2["n_steps"] == 7 and info2["nfe"] == 1 + 7 * 3
    assert torch.all(info2["var"][:, ~MASK] > 0.05) and torch.equal(z2[:, MASK], y_full[:, MASK])


def test_energy_guided_positive_rule_and_grad_clip_run(problem):
    """cov_grad='positive' (signed natural-gradient step, increases dropped) and the released raw clamp."""
    g = torch.Generator().manual_seed(13)
    y_full = problem["y_full"][:100]
    for kw in (dict(cov_grad="positive"), dict(grad_clip=50.0)):
        z, info = P.energy_guided_sample(problem["prior"], y_full, MASK, OBS_TINY, 10.0, 0.05, gamma=0.2,
                                         min_rel_step=0.02, generator=g, disable=True, **kw)
        assert info["converged"] and torch.isfinite(z).all() and torch.equal(z[:, MASK], y_full[:, MASK])


def test_energy_guided_bad_inputs_get_clear_errors(problem):
    pr, y = problem["prior"], problem["y_full"][:8]
    ok = dict(obs_var=OBS_TINY, s_begin=10.0, s_end=1e-2)

    def call(**kw):
        args = ok | kw
        return P.energy_guided_sample(pr, y, kw.pop("mask", MASK), args.pop("obs_var"), args.pop("s_begin"),
                                      args.pop("s_end"), **{k: v for k, v in args.items() if k != "mask"},
                                      disable=True)

    for kw, message in [
        (dict(obs_var=0.0), "obs_var"),
        (dict(obs_var=0.05), "pc_sample"),                  # noisy masks: obs_var > s_end
        (dict(s_end=20.0), "s_end < s_begin"),
        (dict(s_end=-1.0), "s_end < s_begin"),
        (dict(gamma=0.0), "gamma"),
        (dict(cov_grad="sign"), "cov_grad"),
        (dict(grad_clip=-1.0), "grad_clip"),
        (dict(max_rel_step=1.5), "max_rel_step"),
        (dict(min_rel_step=0.6), "min_rel_step"),
        (dict(max_steps=0), "max_steps"),
        (dict(n_corrector=-1), "n_corrector"),
        (dict(mala="yes"), "mala"),
        (dict(temperature=0.0), "temperature"),
        (dict(mask=torch.ones(3, dtype=torch.bool)), "broadcast"),
        (dict(mask=torch.ones(D, dtype=torch.bool)), "unobserved"),
        (dict(x_init=torch.zeros(8, 3, dtype=F64)), "x_init"),
    ]:
        with pytest.raises(ValueError, match=message):
            call(**kw)
    with pytest.raises(ValueError, match="y_obs"):
        P.energy_guided_sample(pr, torch.zeros(D, dtype=F64), MASK, OBS_TINY, 10.0, 1e-2, disable=True)

    class NoCovScore:                                       # a prior without ∂U/∂Σ
        def energy_and_grad(self, x, var, create_graph=False):
            return pr.energy_and_grad(x, var, create_graph)
    with pytest.raises(TypeError, match="energy_grad_and_var_grad"):
        P.energy_guided_sample(NoCovScore(), y, MASK, OBS_TINY, 10.0, 1e-2, disable=True)


def test_mixture_prior_variance_gradient_matches_finite_differences():
    """∂U/∂v of MixturePrior (exact formula) against central differences of energy_and_grad's U, for a shared
    (d,) map, per-chain (B, d) maps, an isotropic float and an image map shared by the channels (whose
    derivative sums over the channels); and EnergyPrior on the exact oracle energy agrees (float32 there)."""
    from energy_utils.densities import random_mixture
    from energy_utils.energy_models import MixtureEnergy
    gen = torch.Generator().manual_seed(21)
    gm = random_mixture(3, 4, gen)
    pr = P.MixturePrior(gm)
    x = 2 * torch.randn(6, 4, generator=gen, dtype=F64)

    def fd(x, v, idx):                                      # d U / d v[idx], relative step 1e-6
        h = 1e-6 * v[idx].item()
        vp, vm = v.clone(), v.clone()
        vp[idx] += h
        vm[idx] -= h
        return (pr.energy_and_grad(x, vp)[0] - pr.energy_and_grad(x, vm)[0]) / (2 * h)

    v = torch.tensor([0.01, 0.5, 2.0, 30.0], dtype=F64)
    u, g, dv = pr.energy_grad_and_var_grad(x, v)
    u0, g0 = pr.energy_and_grad(x, v)
    assert torch.equal(u, u0) and torch.allclose(g, g0, atol=1e-12) and dv.shape == (6, 4)
    for i in range(4):
        assert torch.allclose(dv[:, i], fd(x, v, i), rtol=1e-6, atol=1e-7 / v[i].item())
    vb = torch.rand(6, 4, generator=gen, dtype=F64) + 0.05                     # one map per chain
    dvb = pr.energy_grad_and_var_grad(x, vb)[2]
    for b, i in [(0, 0), (3, 2), (5, 3)]:
        assert torch.allclose(dvb[b, i], fd(x, vb, (b, i))[b], rtol=1e-6, atol=1e-7)
    dvs = pr.energy_grad_and_var_grad(x, 0.3)[2]                             # float: per coordinate
    assert dvs.shape == (6, 4) and torch.allclose(dvs, pr.energy_grad_and_var_grad(x, torch.full((4,), 0.3, dtype=F64))[2])
    # images (B, 2, 1, 2) with a (1, 1, 2) map shared by the 2 channels: the derivative sums over the channels
    xi, vi = x.reshape(6, 2, 1, 2), torch.tensor([[[0.2, 1.5]]], dtype=F64)
    dvi = pr.energy_grad_and_var_grad(xi, vi)[2]
    assert dvi.shape == (6, 1, 1, 2)
    for j in range(2):
        assert torch.allclose(dvi[:, 0, 0, j], fd(xi, vi, (0, 0, j)), rtol=1e-6, atol=1e-7)
    # EnergyPrior: ∂U/∂v = (∂U/∂log v)/v on the oracle energy (which runs in float32 inside the adapter)
    ep = P.EnergyPrior(MixtureEnergy(gm))
    ue, ge, dve = ep.energy_grad_and_var_grad(x, v)
    assert dve.shape == (6, 4) and torch.allclose(dve, dv, rtol=1e-4, atol=1e-4)
    assert torch.allclose(ue, u, rtol=1e-5, atol=1e-4)


def test_energy_guided_sampler_with_an_energy_network_counts_nfe(problem):
    """A tiny untrained VectorEnergy: shapes, observed coordinates kept, and NFE = network forward passes
    (each one with one backward for ∇_zU and ∂U/∂Σ together)."""
    from energy_utils.energy_models import VectorEnergy
    torch.manual_seed(0)
    model = VectorEnergy(D, width=16).double()
    calls = {"fwd": 0}
    model.register_forward_hook(lambda *a: calls.__setitem__("fwd", calls["fwd"] + 1))
    ep = P.EnergyPrior(model)
    y = problem["y_full"][:16]
    u, g, dv = ep.energy_grad_and_var_grad(y, torch.where(MASK, 1e-4, 2.0).to(F64))
    assert u.shape == (16,) and g.shape == dv.shape == (16, D) and calls["fwd"] == 1
    calls["fwd"] = 0
    for mala in (False, True):
        z, info = P.energy_guided_sample(ep, y, MASK, OBS_TINY, 5.0, 1e-2, max_steps=6, n_corrector=2, mala=mala,
                                         generator=torch.Generator().manual_seed(3), disable=True)
        assert z.shape == (16, D) and torch.isfinite(z).all() and torch.equal(z[:, MASK], y[:, MASK])
        assert info["var"].shape == (16, D) and info["n_steps"] <= 6
        assert info["nfe"] == calls["fwd"] == 1 + info["n_steps"] * 3
        calls["fwd"] = 0
