"""A-DSM and A-CSM, the two losses that train a normalised energy, and the normalisation that follows.

For clean x, noise ε ~ N(0, Σ), y = x + ε, d = dim(y), ε̃ = Σ^{−½}ε (white), and U = U_θ(y, Σ):

* **A-DSM** (Σ-whitened denoising score matching, minimiser ∇_yU = −∇_y log p(y|Σ)):

      ℓ_DSM = (1/d) ‖Σ^{½}∇_yU − Σ^{−½}ε‖²  = (1/d) ‖Σ^{−½}(D(y) − x)‖²,  D = y − Σ∇_yU.

* **A-CSM** (covariance score matching). For the Gaussian likelihood, ∂/∂log v_i [−log N(ε; 0, Σ)] =
  ½ Σ_c (1 − ε̃²_{c,i}) (summed over the C channels that share v_i; in the Fourier basis ε̃²_k = |(Fε)_k|²/S_k),
  so by the covariance Tweedie identity (notebook 01) E[½Σ_c(1 − ε̃²_{c,i}) | y] = v_i ∂_{v_i}[−log p(y|Σ)].
  The per-coordinate residual and loss are

      r_i = v_i ∂U/∂v_i − ½ Σ_c (1 − ε̃²_{c,i}),      ℓ_CSM = (1/d²) Σ_i r_i².

  Summing over channels (not averaging, as the released code does) keeps ∂U/∂v_i consistent with ∇_yU when
  one variance is shared by C channels; the Fourier target stays in the Fourier domain, where the gradient is.

A-DSM fixes U only up to an additive c(Σ); A-CSM fixes how U changes with Σ, so U_θ = −log p + one constant.
That constant comes from a large isotropic anchor Σ_ref = tI, where p(y | Σ_ref) ≈ N(0, Σ_ref):

      c = E_y[−log N(y; 0, Σ_ref) − U_θ(y, Σ_ref)]   (≈ ½ log det(2πeΣ_ref) − E_y[U_θ]),  y = x + √t n unclamped,

and log p_θ(y | Σ) = −U_θ(y, Σ) − c. Log-ratios log p(y|Σ₁) − log p(y|Σ₂) (:func:`log_ratio`) and posterior
ratios log p(x₁|y) − log p(x₂|y) (:func:`posterior_log_ratio`) do not need c at all.

Whether the result is normalised can be tested without an exact density: :func:`noise_entropy_excess` (the
cross-entropy on y = x + ε can never fall below the entropy of the noise ε alone) and :func:`importance_log_z`
(log ∫exp(−U − c) by importance sampling, e.g. from the Gaussian control N(μ, C + Σ)). The fair A-DSM-only
control adds an analytic log-normaliser ½ log det(C + Σ) to the energy (:class:`GaussianLogdetOffset`).

Precision: under bf16 autocast (``training.fit(..., autocast_dtype=torch.bfloat16)``) the networks' matrix
products and convolutions run in bf16, but U, ∇_yU, ∂U/∂log v and both residuals stay float32: y and log v are
float32 autograd leaves, so their gradients come back in float32; the energy networks recombine their bf16
outputs with the float32 preconditioner (type promotion), and ``energy_and_scores`` casts a reduced-precision U
to float32 before differentiating it; the residuals, their squares and means are then float32 operations.
"""
from __future__ import annotations

import math

import torch

from .covariances import DiagCov
from .energy_models import energy_and_scores


def acsm_target(eps: torch.Tensor, cov: DiagCov) -> torch.Tensor:
    """½ Σ_c (1 − ε̃²_{c,i}) per variance coordinate (shape of the variance map)."""
    C = cov.channels(eps)
    return 0.5 * (C - cov.whitened_energy(eps))


def adsm_loss(grad_y: torch.Tensor, eps: torch.Tensor, cov: DiagCov, floor: float = 0.0) -> torch.Tensor:
    """Per-sample A-DSM loss (1/d)‖Σ^{½}∇_yU − Σ^{−½}ε‖² = (1/d)‖Σ^{−½}(D − x)‖², shape (B,).

    With ``floor`` c > 0 each coordinate of Σ's basis is weighted by v_i/(v_i + c): the loss becomes
    (1/d)‖(Σ + cI)^{−½}(D − x)‖². Any positive per-coordinate weight keeps the minimiser (the true score), but
    the weights decide what a model of limited capacity trades: the plain whitening charges an error on a pixel
    observed at v = 1e-4 10⁴ times more than the same error in a region of variance 1, so a model can lower the
    loss by sharpening observed pixels while its estimate inside a masked box degrades (measured in notebook 08's
    box tasks); the floor caps the weight at 1/c."""
    if floor < 0:
        raise ValueError(f"floor must be >= 0, got {floor}")
    d = eps[0].numel()
    res = cov.apply(grad_y, 0.5) - cov.whiten(eps)
    if floor > 0:
        res = cov.apply_multiplier(res, (cov.var / (cov.var + floor)).sqrt())
    return res.pow(2).flatten(1).sum(1) / d


def acsm_loss(grad_logvar: torch.Tensor, eps: torch.Tensor, cov: DiagCov) -> torch.Tensor:
    """Per-sample A-CSM loss (1/d²) Σ_i (v_i ∂U/∂v_i − ½Σ_c(1 − ε̃²_{c,i}))², shape (B,)."""
    d = eps[0].numel()
    res = grad_logvar - acsm_target(eps, cov)
    return res.pow(2).flatten(1).sum(1) / d**2


def score_matching_loss(model, x: torch.Tensor, cov: DiagCov, dual: bool = True, csm_weight: float = 1.0,
                        eps: torch.Tensor | None = None, generator: torch.Generator | None = None,
                        create_graph: bool = True, dsm_floor: float = 0.0):
    """Training loss: mean A-DSM (+ ``csm_weight`` · mean A-CSM when ``dual``), both gradients from one
    autograd call; ``dsm_floor`` is :func:`adsm_loss`'s floor (0: the paper's whitening). Returns
    ``(loss, {"dsm": ..., "csm": ...})``."""
    if x.shape[0] != cov.batch_size:
        raise ValueError(f"{x.shape[0]} clean samples but {cov.batch_size} covariances")
    if eps is None:
        eps = cov.sample(cov.channels(x), generator)
    y = x + eps
    sc = energy_and_scores(model, y, cov, create_graph=create_graph, cov_score=dual)
    l_dsm = adsm_loss(sc.grad_y, eps, cov, dsm_floor).mean()
    extra = {"dsm": l_dsm.detach()}
    loss = l_dsm
    if dual:
        l_csm = acsm_loss(sc.grad_logvar, eps, cov).mean()
        loss = loss + csm_weight * l_csm
        extra["csm"] = l_csm.detach()
    return loss, extra


# ---------------------------------------------------------------------------------------------------------
# Evaluation and normalisation
# ---------------------------------------------------------------------------------------------------------
@torch.no_grad()
def energies(model, y: torch.Tensor, cov: DiagCov, batch_size: int = 512) -> torch.Tensor:
    """U(y, Σ) in batches, no graph; shape (B,)."""
    out = [model(y[i:i + batch_size], cov[i:i + batch_size]) for i in range(0, y.shape[0], batch_size)]
    return torch.cat(out)


def anchor_entropy(cov: DiagCov, n_channels: int = 1) -> torch.Tensor:
    """½ log det(2πeΣ) per sample: the entropy of N(0, Σ)."""
    d = n_channels * cov.n_coords
    return 0.5 * (cov.logdet(n_channels) + d * math.log(2 * math.pi * math.e))


@torch.no_grad()
def normalization_constant(model, x: torch.Tensor, anchor_var: float = 1e3, batch_size: int = 256,
                           generator: torch.Generator | None = None, repeats: int = 1, basis: str = "pixel") -> dict:
    """The additive constant c with log p_θ(y|Σ) = −U_θ(y, Σ) − c, from the isotropic anchor Σ_ref = tI.

    y = x + √t n (unclamped), ``repeats`` noise draws per clean sample. Returns
    ``{"c": E[−log N(y;0,Σ_ref) − U], "c_paper": ½logdet(2πeΣ_ref) − E[U], "stderr": ..., "stderr_paper": ...,
    "anchor_var": t, "n": ...}``. The two estimators differ only by E[½yᵀΣ⁻¹y] − d/2: the first uses it as a
    control variate (much lower variance). Biases relative to the true constant: +KL(p(·|Σ_ref) ‖ N(0, Σ_ref))
    ≈ ‖E x‖²/(2t) for ``c`` and ≈ −tr Cov[x]/(2t) for ``c_paper``; both vanish as t → ∞.
    """
    if anchor_var <= 0:
        raise ValueError("anchor_var must be > 0")
    cv, plain = [], []
    xs = x.repeat_interleave(repeats, 0) if repeats > 1 else x
    C = 1 if x.ndim == 2 else x.shape[1]
    map_shape = (x.shape[1],) if x.ndim == 2 else (1, *x.shape[2:])
    for i in range(0, xs.shape[0], batch_size):
        xb = xs[i:i + batch_size]
        cov = DiagCov.isotropic(anchor_var, map_shape, basis, xb.dtype, xb.device).expand_batch(xb.shape[0])
        y = xb + cov.sample(C, generator).to(xb.device)
        u = model(y, cov).double()
        cv.append(cov.gaussian_nll(y).double() - u)
        plain.append(anchor_entropy(cov, C).double() - u)
    cv, plain = torch.cat(cv), torch.cat(plain)
    n = cv.numel()
    return {"c": cv.mean().item(), "c_paper": plain.mean().item(), "stderr": (cv.std() / math.sqrt(n)).item(),
            "stderr_paper": (plain.std() / math.sqrt(n)).item(), "anchor_var": anchor_var, "n": n}


def normalization_constants(model, x: torch.Tensor, anchor_var: float = 1e3, **kwargs) -> dict:
    """One constant per basis, ``{"pixel": {...}, "fourier": {...}}``: a network that embeds pixel- and
    Fourier-type Σ separately has, as far as A-DSM and A-CSM can tell, one free additive constant per basis,
    so each is fixed at the same isotropic anchor written in that basis (a flat spectrum for Fourier)."""
    return {b: normalization_constant(model, x, anchor_var, basis=b, **kwargs) for b in ("pixel", "fourier")}


def _constant_per_sample(c, cov: DiagCov) -> torch.Tensor | float:
    if isinstance(c, dict):
        cp = c["pixel"]["c"] if isinstance(c["pixel"], dict) else c["pixel"]
        cf = c["fourier"]["c"] if isinstance(c["fourier"], dict) else c["fourier"]
        return torch.where(cov.fourier.cpu(), torch.tensor(cf, dtype=torch.float64), torch.tensor(cp, dtype=torch.float64))
    return float(c)


def log_prob(model, y: torch.Tensor, cov: DiagCov, c, batch_size: int = 512) -> torch.Tensor:
    """Normalised log p_θ(y | Σ) = −U_θ(y, Σ) − c in nats, shape (B,); ``c`` a float or the per-basis dict of
    :func:`normalization_constants`."""
    u = energies(model, y, cov, batch_size).double()
    cc = _constant_per_sample(c, cov)
    return -u - (cc.to(u.device) if torch.is_tensor(cc) else cc)


class GaussianLogdetOffset(torch.nn.Module):
    """U(y, Σ) + ½ log det(C + Σ): an energy with the Σ-dependent log-normaliser of N(m, C + Σ) added at
    evaluation time (``C`` a number, C = cI, or a dense (d, d) matrix, see :meth:`DiagCov.logdet_plus`).

    A-DSM leaves U free up to an additive c(Σ). An energy that starts at the Gaussian ½yᵀ(C₀ + Σ)⁻¹y (as
    :class:`~energy_utils.energy_models.VectorEnergy` does with C₀ = I) but has no log-det term is missing
    ½ log det(C₀ + Σ) even when its shape is right; adding it analytically gives the fair A-DSM-only control
    that A-CSM has to beat: ½ log det(I + Σ) (the model's own Gaussian start) or ½ log det(C_x + Σ) (the
    normaliser of the Gaussian with the data covariance C_x)."""

    def __init__(self, model: torch.nn.Module, data_cov):
        super().__init__()
        self.model = model
        self.data_cov = data_cov

    def forward(self, y: torch.Tensor, cov: DiagCov) -> torch.Tensor:
        u = self.model(y, cov)
        return u + 0.5 * cov.logdet_plus(self.data_cov, cov.channels(y)).to(u.dtype)

    energy = forward


@torch.no_grad()
def importance_log_z(model, cov: DiagCov, y: torch.Tensor, log_q: torch.Tensor, c=0.0,
                     batch_size: int = 512) -> dict:
    """log ∫ exp(−U_θ(y, Σ) − c) dy for one Σ by importance sampling from a proposal q.

    ``cov``: one covariance (batch 1, or already one per row of ``y``); ``y`` (n, ...) drawn from q and
    ``log_q`` (n,) their log-densities; ``c`` a float or the per-basis dict of :func:`normalization_constants`
    (c = 0 estimates log ∫exp(−U)). With log-weights l_i = −U(y_i) − c − log q(y_i):

        log Ẑ = log mean_i exp(l_i),   ESS = (Σ_i w_i)² / Σ_i w_i²,   stderr ≈ sqrt(1/ESS − 1/n).

    0 for a normalised model (with its constant). The stderr is the delta-method one and is itself unreliable
    when the ESS is small; and E[log Ẑ] ≤ log Z (Jensen), so a small ESS biases the estimate *down*: an estimate
    far above 0 still shows that p_θ(·|Σ) integrates to more than 1. Returns
    ``{"log_z", "ess", "ess_fraction", "stderr", "n", "log_weights"}``."""
    n = y.shape[0]
    covs = cov.expand_batch(n) if cov.batch_size == 1 else cov
    if covs.batch_size != n or log_q.shape != (n,):
        raise ValueError(f"need one covariance (or {n}) and {n} proposal log-densities")
    lw = log_prob(model, y, covs, c, batch_size).cpu() - log_q.double().cpu()
    log_z = (torch.logsumexp(lw, 0) - math.log(n)).item()
    w = torch.softmax(lw, 0)
    ess = 1.0 / w.pow(2).sum().item()
    return {"log_z": log_z, "ess": ess, "ess_fraction": ess / n, "stderr": math.sqrt(max(1.0 / ess - 1.0 / n, 0.0)),
            "n": n, "log_weights": lw}


def noise_entropy_excess(log_density, x: torch.Tensor, cov: DiagCov,
                         generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-sample −log p(y | Σ) − (−log N(ε; 0, Σ)) with y = x + ε, ε ~ N(0, Σ); shape (B,), nats.

    Its mean is CE − h(N(0, Σ)), the cross-entropy of the density ``log_density(y, cov)`` (a callable
    returning log p, (B,)) on y minus the entropy of the noise alone. For independent x and ε, h(y) ≥ h(ε),
    and CE ≥ h(y) for any normalised density (Gibbs), so the mean is ≥ 0 for every normalised model: a
    one-sided test of normalisation that needs no exact density. Pairing each y with its own noise's
    log-density leaves the mean unchanged and removes most of the variance (both grow like ‖ε‖²)."""
    eps = cov.sample(cov.channels(x), generator).to(device=x.device, dtype=x.dtype)
    y = x + eps
    return -log_density(y, cov).double().cpu() - cov.gaussian_nll(eps).double().cpu()


def log_ratio(model, y: torch.Tensor, cov1: DiagCov, cov2: DiagCov, batch_size: int = 512) -> torch.Tensor:
    """log p(y|Σ₁) − log p(y|Σ₂) = U(y,Σ₂) − U(y,Σ₁): the normalising constant cancels."""
    return (energies(model, y, cov2, batch_size) - energies(model, y, cov1, batch_size)).double()


def posterior_log_ratio(model, x1: torch.Tensor, x2: torch.Tensor, y: torch.Tensor, noise: DiagCov,
                        prior_cov: DiagCov, batch_size: int = 512) -> torch.Tensor:
    """log p(x₁ | y) − log p(x₂ | y) for y = x + n, n ~ N(0, Σ_n) (``noise``), with the prior density
    p(x) ≈ p_θ(x | Σ₀) (``prior_cov``, a small Σ₀):

        [log N(y − x₁; 0, Σ_n) − U_θ(x₁, Σ₀)] − [log N(y − x₂; 0, Σ_n) − U_θ(x₂, Σ₀)].

    Both the normalising constant c and log p(y) cancel (the quantity MALA acceptances and sampler
    comparisons need). Shape (B,)."""
    lik = noise.gaussian_nll(y - x2).double() - noise.gaussian_nll(y - x1).double()
    return lik + energies(model, x2, prior_cov, batch_size).double() - energies(model, x1, prior_cov, batch_size).double()


def nats_per_dim(logp: torch.Tensor, d: int) -> torch.Tensor:
    return logp / d


def bits_per_dim(logp: torch.Tensor, d: int, n_bits: int = 8) -> torch.Tensor:
    """−log₂ p / d + n_bits: the usual bits/dim of data in [0, 1] quantised to 2^n_bits levels (the + n_bits
    is log₂ of the Jacobian from [0, 1] to [0, 2^n_bits)); a continuous density at small noise stands in for
    the discrete probability."""
    return -logp / (d * math.log(2)) + n_bits


def perturbed_partners(covs: DiagCov, generator: torch.Generator | None = None, scale: float = math.log(2.0),
                       jitter: float = 0.5) -> DiagCov:
    """Σ₂ for each Σ₁: the same basis, every variance multiplied by ``exp(scale)`` and by an independent
    log-normal jitter (std ``jitter`` in log-variance; conjugate-symmetric for Fourier rows): the nearby
    candidates a blind estimate or a covariance schedule compares."""
    noise = jitter * torch.randn(covs.log_var.shape, generator=generator, dtype=torch.float64).to(covs.log_var)
    partner = DiagCov(covs.log_var + scale + noise, covs.fourier)
    return DiagCov(partner.symmetrized_log_var(), covs.fourier)


@torch.no_grad()
def exact_density_errors(model, exact, mixture, covs: DiagCov, c, n_y: int = 400,
                         generator: torch.Generator | None = None, batch_size: int = 2048,
                         partners: DiagCov | None = None) -> dict:
    """Error of the normalised log p_θ(y|Σ) against the exact mixture log p(y|Σ), for each Σ_j in ``covs``.

    y = x + ε with x ~ mixture and ε ~ N(0, Σ_j), n_y draws per Σ; Δ = log p_θ − log p (nats). Returns, per Σ
    (tensors of length S, all divided by d, i.e. nats/dim): ``offset`` = mean Δ (the expected log-density
    error), ``spread`` = std Δ (shape error), ``log_z`` = log mean exp Δ (the normalisation error of p_θ(·|Σ),
    an importance-sampling estimate of log ∫p_θ), and ``ratio`` = mean over y ~ p(·|Σ_j) of the error of the
    log-ratio log p(y|Σ_j) − log p(y|Σ'_j), with Σ'_j from ``partners`` (default :func:`perturbed_partners`:
    same basis, so the constant cancels), ``ratio_rms`` its RMS over y.
    """
    S = covs.batch_size
    d = mixture.dim
    p = next(model.parameters(), None)
    dev, dt = (p.device, p.dtype) if p is not None else (torch.device("cpu"), torch.float64)
    covs = covs.to(dtype=torch.float64, device=torch.device("cpu"))
    partners = perturbed_partners(covs, generator) if partners is None else \
        partners.to(dtype=torch.float64, device=torch.device("cpu"))
    deltas, ratios = [], []
    for j in range(S):
        cj = covs[j].expand_batch(n_y)
        ck = partners[j].expand_batch(n_y)
        x = mixture.sample(n_y, generator).cpu()
        y = x + cj.sample(1, generator)
        ym = y.to(device=dev, dtype=dt)
        dj = log_prob(model, ym, cj.to(dt, dev), c, batch_size).cpu() + energies(exact, y, cj, batch_size).double()
        dk = log_prob(model, ym, ck.to(dt, dev), c, batch_size).cpu() + energies(exact, y, ck, batch_size).double()
        deltas.append(dj)
        ratios.append(dj - dk)
    D = torch.stack(deltas) / d
    R = torch.stack(ratios) / d
    n = D.shape[1]
    return {"offset": D.mean(1), "spread": D.std(1), "log_z": torch.logsumexp(D * d, 1) / d - math.log(n) / d,
            "ratio": R.mean(1), "ratio_rms": R.pow(2).mean(1).sqrt()}
