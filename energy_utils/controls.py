"""The strongest simple controls a learned prior must beat: the prior mean and the Gaussian (linear-MMSE) prior.

A learned denoiser or energy earns its keep only by beating what a Gaussian with the data's mean μ and
covariance C already does. For that prior everything is exact and linear:

* **noise of covariance Σ**, y = x + n, n ~ N(0, Σ):
  E[x | y] = μ + C (C + Σ)⁻¹ (y − μ),   Cov[x | y] = C − C (C + Σ)⁻¹ C,   p(y | Σ) = N(y; μ, C + Σ).
  For any prior with this mean and covariance it is the best *linear* estimator (the Wiener / linear-MMSE
  denoiser); for a Gaussian prior it is the exact posterior mean.
* **linear measurement**, x_c = Mᵀx + n, n ~ N(0, σ_n² I_m) (M with orthonormal columns,
  :mod:`energy_utils.operators`):  with K = C M (MᵀCM + σ_n² I)⁻¹,
  E[x | x_c] = μ + K (x_c − Mᵀμ),   Cov[x | x_c] = C − K MᵀC;  exact posterior samples are
  E[x | x_c] + L z with L Lᵀ = Cov[x | x_c].
* **any linear forward model**, b = A x + n, n ~ N(0, σ_n² I), A a dense (m, d) matrix (a blur, a pooling;
  :func:`linear_matrix` builds it from the forward function): E[x | b] = μ + C Aᵀ (A C Aᵀ + σ_n² I)⁻¹ (b − Aμ).
* **ridge regression on task pairs** (:class:`RidgeMap`): the best affine map from inputs to answers learned
  from n pairs only, ŷ = ȳ + (x − x̄) W with W = (X̃ᵀX̃ + λI)⁻¹ X̃ᵀỸ (centred data): the control of a solver
  that learns a task from pairs without knowing the degradation. As n grows it tends to the linear-MMSE
  estimator of the answer given the input.
* **prior mean with the observations kept**: M x_c + (I − MMᵀ) μ (the measured part is the observation, the
  rest the average training example) — the control of "fill the hole with the mean digit".
* **no learned prior at all**, for b = A x + n with A dense: the truncated pseudo-inverse A⁺_r b (singular values
  below r·s_max dropped: the exact Moore–Penrose inverse for r → 0, a regularised one otherwise) and total-variation
  regularisation, argmin_x ½‖Ax − b‖² + λ TV(x) (:func:`pseudo_inverse_solution`, :func:`tv_solution`).
* **blind Gaussian denoiser** (:meth:`GaussianPrior.blind_denoiser`): the exact posterior mean with the noise
  level unknown, σ̂² by maximum marginal likelihood: an exact prior in the form a blind sampler needs, to test
  the sampler apart from any learned network.
* **stationary Gaussian** (:class:`StationaryGaussian`): the Wiener filter μ + F⁻¹[P/(P + σ²) F(y − μ)] with the
  training images' power spectrum P, the denoising control for whole images, where a dense C is too large.

All algebra is in float64 on dense d × d matrices (d = 784 for MNIST: fine on a CPU). ``GaussianPrior.fit``
estimates μ and C from training examples, with a small ridge so that C is positive definite.
"""
from __future__ import annotations

import math

import torch

from .covariances import DiagCov
from .operators import image_divergence, image_gradient


def _flat(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1).double()


class GaussianPrior:
    """N(μ, C) on flattened signals of shape ``shape`` (e.g. (1, 28, 28)); see the module docstring."""

    def __init__(self, mean: torch.Tensor, cov: torch.Tensor, shape: tuple[int, ...] | None = None):
        mean = torch.as_tensor(mean, dtype=torch.float64).reshape(-1)
        cov = torch.as_tensor(cov, dtype=torch.float64)
        d = mean.numel()
        if cov.shape != (d, d):
            raise ValueError(f"the covariance must be ({d}, {d}) to match a mean of {d} entries, got {tuple(cov.shape)}")
        if (cov - cov.T).abs().max() > 1e-8 * max(1.0, cov.abs().max().item()):
            raise ValueError("the covariance must be symmetric")
        self.shape = tuple(shape) if shape is not None else (d,)
        if math.prod(self.shape) != d:
            raise ValueError(f"shape {self.shape} does not hold {d} entries")
        self.mean, self.cov, self.d = mean, 0.5 * (cov + cov.T), d
        self.chol_prior = torch.linalg.cholesky(self.cov)   # raises if C is not positive definite

    @classmethod
    def fit(cls, x: torch.Tensor, ridge: float = 1e-4) -> "GaussianPrior":
        """μ and C (+ ridge · I) of the examples ``x`` (n, ...)."""
        if x.shape[0] < 2:
            raise ValueError("need at least two examples to estimate a covariance")
        if ridge < 0:
            raise ValueError(f"ridge must be >= 0, got {ridge}")
        X = _flat(x.cpu())
        mu = X.mean(0)
        Xc = X - mu
        C = Xc.T @ Xc / (X.shape[0] - 1) + ridge * torch.eye(X.shape[1], dtype=torch.float64)
        return cls(mu, C, tuple(x.shape[1:]))

    def to_signal(self, v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return v.reshape(v.shape[0], *self.shape).to(dtype=like.dtype, device=like.device)

    def _check(self, y: torch.Tensor) -> torch.Tensor:
        if tuple(y.shape[1:]) != self.shape:
            raise ValueError(f"expected signals of shape (B, {', '.join(map(str, self.shape))}), got {tuple(y.shape)}")
        return _flat(y.cpu())

    def _noise_matrices(self, Sigma, B: int) -> torch.Tensor:
        """Σ as float64: (d, d) when one isotropic variance serves every signal, else (B, d, d) — from a
        DiagCov, a (B,) tensor of isotropic variances, or dense matrices."""
        if isinstance(Sigma, DiagCov):
            if Sigma.batch_size != B:
                Sigma = Sigma.expand_batch(B) if Sigma.batch_size == 1 else None
                if Sigma is None:
                    raise ValueError(f"got covariances for a different batch than the {B} signals")
            channels = self.shape[0] if len(self.shape) == 3 else 1
            return Sigma.to(dtype=torch.float64, device="cpu").dense(channels)
        S = torch.as_tensor(Sigma, dtype=torch.float64).cpu()
        if S.ndim <= 1:
            if S.numel() not in (1, B):
                raise ValueError(f"an isotropic variance is a number or one per signal ({B}), got {tuple(S.shape)}")
            if torch.any(S <= 0):
                raise ValueError("noise variances must be > 0")
            eye = torch.eye(self.d, dtype=torch.float64)
            return S.reshape(()) * eye if S.numel() == 1 else S.reshape(-1, 1, 1) * eye
        if S.shape[-2:] != (self.d, self.d):
            raise ValueError(f"dense noise covariances must be (B, {self.d}, {self.d}), got {tuple(S.shape)}")
        return S if S.ndim == 2 else S.expand(B, self.d, self.d)

    # -- denoising under Σ ------------------------------------------------------------------------------
    def denoise(self, y: torch.Tensor, Sigma) -> torch.Tensor:
        """E[x | y] = μ + C (C + Σ)⁻¹ (y − μ) for each signal, Σ per signal (see ``_noise_matrices``)."""
        Y = self._check(y)
        S = self.cov + self._noise_matrices(Sigma, Y.shape[0])
        if S.ndim == 2:                                                  # one Σ for all: one solve
            sol = torch.linalg.solve(S, (Y - self.mean).T).T
        else:
            sol = torch.linalg.solve(S, (Y - self.mean)[..., None])[..., 0]
        return self.to_signal(self.mean + sol @ self.cov, y)           # C symmetric: (C a)ᵀ = aᵀ C

    def denoise_mse(self, Sigma, B: int = 1) -> torch.Tensor:
        """Expected per-coordinate error E‖x̂ − x‖²/d = tr(C − C (C + Σ)⁻¹ C)/d under the Gaussian prior, (B,)."""
        S = self.cov + self._noise_matrices(Sigma, B)
        post = self.cov - self.cov @ torch.linalg.solve(S, self.cov.expand_as(S))
        return (post.diagonal(dim1=-2, dim2=-1).sum(-1) / self.d).expand(B)

    def log_prob(self, y: torch.Tensor, Sigma) -> torch.Tensor:
        """log N(y; μ, C + Σ) per signal, (B,), in nats."""
        Y = self._check(y)
        S = self.cov + self._noise_matrices(Sigma, Y.shape[0])
        L = torch.linalg.cholesky(S)
        if S.ndim == 2:
            r = torch.linalg.solve_triangular(L, (Y - self.mean).T, upper=False).T
        else:
            r = torch.linalg.solve_triangular(L, (Y - self.mean)[..., None], upper=False)[..., 0]
        logdet = 2 * L.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        return -0.5 * (r.pow(2).sum(-1) + logdet + self.d * math.log(2 * math.pi))

    def entropy(self, Sigma=0.0) -> float:
        """Differential entropy of N(μ, C + Σ) in nats (Σ one matrix/number; 0 gives the prior's entropy)."""
        S = self.cov if isinstance(Sigma, float) and Sigma == 0.0 else self.cov + self._noise_matrices(Sigma, 1).reshape(self.d, self.d)
        return 0.5 * (torch.linalg.slogdet(S)[1].item() + self.d * (1 + math.log(2 * math.pi)))

    # -- linear measurements ----------------------------------------------------------------------------
    def _gain(self, operator, noise_var: float):
        """(K, CM) with K = C M (MᵀCM + σ_n² I)⁻¹, M the operator's dense (d, m) matrix."""
        M = operator_matrix(operator)
        CM = self.cov @ M
        A = M.T @ CM + noise_var * torch.eye(M.shape[1], dtype=torch.float64)
        return torch.linalg.solve(A, CM.T).T, M

    def posterior_mean(self, operator, xc: torch.Tensor, noise_var: float = 0.0) -> torch.Tensor:
        """E[x | x_c] = μ + K (x_c − Mᵀμ) for measurements x_c (B, m) = Mᵀx + N(0, σ_n² I)."""
        if noise_var < 0:
            raise ValueError(f"noise_var must be >= 0, got {noise_var}")
        K, M = self._gain(operator, noise_var)
        out = self.mean + (xc.double().cpu() - self.mean @ M) @ K.T
        return out.reshape(xc.shape[0], *self.shape).to(device=xc.device, dtype=xc.dtype)

    def posterior_cov(self, operator, noise_var: float = 0.0) -> torch.Tensor:
        """Cov[x | x_c] = C − K MᵀC (d, d), the same for every measurement."""
        K, M = self._gain(operator, noise_var)
        P = self.cov - K @ (M.T @ self.cov)
        return 0.5 * (P + P.T)

    def posterior_sample(self, operator, xc: torch.Tensor, noise_var: float = 0.0, n: int = 1,
                         generator: torch.Generator | None = None) -> torch.Tensor:
        """n exact posterior samples per measurement, returned as (B·n, ...) with each row's samples consecutive."""
        mean = _flat(self.posterior_mean(operator, xc, noise_var).cpu()).repeat_interleave(n, 0)
        P = self.posterior_cov(operator, noise_var)
        evals, evecs = torch.linalg.eigh(P)                       # P is only semi-definite without noise
        root = evecs * evals.clamp_min(0).sqrt()
        z = torch.randn(mean.shape, dtype=torch.float64, generator=generator)
        return self.to_signal(mean + z @ root.T, xc if xc.is_floating_point() else mean)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        z = torch.randn(n, self.d, dtype=torch.float64, generator=generator)
        return (self.mean + z @ self.chol_prior.T).reshape(n, *self.shape)

    def blind_denoiser(self, sigma_min: float = 1e-3, sigma_max: float = 10.0, n_grid: int = 400) -> "BlindGaussianDenoiser":
        """This prior's exact denoiser for an unknown noise level (see :class:`BlindGaussianDenoiser`)."""
        return BlindGaussianDenoiser(self, sigma_min, sigma_max, n_grid)

    def linear_posterior_mean(self, A: torch.Tensor, b: torch.Tensor, noise_var: float) -> torch.Tensor:
        """E[x | b] = μ + C Aᵀ (A C Aᵀ + σ_n² I)⁻¹ (b − Aμ) for b (B, ...) = A x + N(0, σ_n² I), A dense (m, d)."""
        A = torch.as_tensor(A, dtype=torch.float64).cpu()
        if A.ndim != 2 or A.shape[1] != self.d:
            raise ValueError(f"A must be a dense (m, {self.d}) matrix, got {tuple(A.shape)}")
        if noise_var <= 0:
            raise ValueError(f"noise_var must be > 0 (a general A need not be invertible), got {noise_var}")
        B = _flat(b.cpu())
        if B.shape[1] != A.shape[0]:
            raise ValueError(f"measurements have {B.shape[1]} entries per example, A has {A.shape[0]} rows")
        CA = self.cov @ A.T
        S = A @ CA + noise_var * torch.eye(A.shape[0], dtype=torch.float64)
        out = self.mean + torch.linalg.solve(S, (B - self.mean @ A.T).T).T @ CA.T
        return out.reshape(b.shape[0], *self.shape).to(device=b.device, dtype=b.dtype)


class BlindGaussianDenoiser(torch.nn.Module):
    """E[x | y] under a Gaussian prior N(μ, C) for y = x + σz with σ unknown (a *blind* denoiser, as the
    samplers of :mod:`energy_utils.samplers` need), σ estimated per signal by maximum marginal likelihood.

    In C's eigenbasis, C = U Λ Uᵀ and c = Uᵀ(y − μ),

        log p(y | σ²) = −½ Σ_i [log(λ_i + σ²) + c_i² / (λ_i + σ²)] + const,

    maximised over a log grid of σ ∈ [``sigma_min``, ``sigma_max``] (``n_grid`` points); then
    x̂ = μ + U diag(λ / (λ + σ̂²)) c. With σ known this is :meth:`GaussianPrior.denoise`; the estimate σ̂ of the
    last call is kept in ``last_sigma`` (B,)."""

    def __init__(self, prior: GaussianPrior, sigma_min: float = 1e-3, sigma_max: float = 10.0, n_grid: int = 400):
        super().__init__()
        if not 0 < sigma_min < sigma_max:
            raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
        if n_grid < 2:
            raise ValueError(f"n_grid must be >= 2, got {n_grid}")
        self.prior = prior
        self.lam, self.U = torch.linalg.eigh(prior.cov)
        self.grid = torch.logspace(2 * math.log10(sigma_min), 2 * math.log10(sigma_max), n_grid, dtype=torch.float64)
        self.last_sigma: torch.Tensor | None = None

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        c = (self.prior._check(y) - self.prior.mean) @ self.U                       # (B, d)
        best_ll = torch.full((c.shape[0],), -math.inf, dtype=torch.float64)
        best = torch.empty(c.shape[0], dtype=torch.float64)
        for chunk in self.grid.split(50):                                            # bounded memory: (B, d, 50)
            v = self.lam[None, :, None] + chunk[None, None, :]
            ll = -0.5 * (v.log() + c[:, :, None].pow(2) / v).sum(1)                  # (B, 50)
            val, arg = ll.max(1)
            take = val > best_ll
            best_ll, best = torch.where(take, val, best_ll), torch.where(take, chunk[arg], best)
        self.last_sigma = best.sqrt()
        out = self.prior.mean + (c * self.lam / (self.lam + best[:, None])) @ self.U.T
        return self.prior.to_signal(out, y)


class StationaryGaussian:
    """A stationary (translation-invariant, periodic) Gaussian prior on images: the **Wiener filter** control of
    image denoising at any size the spectrum was fitted at.

    Each channel c has a constant mean μ_c and a circulant covariance, diagonal in the orthonormal 2-D DFT F with
    power spectrum P_c(ω) = E|F(x_c − μ_c)(ω)|² (fitted as the average over examples). For y = x + σz the exact
    posterior mean under this prior is

        E[x | y] = μ + F⁻¹[ P / (P + σ²) · F(y − μ) ],

    the best linear shift-invariant denoiser for images with this mean and spectrum (channels treated apart).
    Unlike :class:`GaussianPrior` it needs no d × d matrix, so it scales to whole test images (d = 128² here).
    """

    def __init__(self, mean: torch.Tensor, spectrum: torch.Tensor):
        mean, spectrum = torch.as_tensor(mean, dtype=torch.float64), torch.as_tensor(spectrum, dtype=torch.float64)
        if spectrum.ndim != 3 or mean.shape != (spectrum.shape[0],):
            raise ValueError(f"need a spectrum (C, H, W) and a mean (C,); got {tuple(spectrum.shape)} and {tuple(mean.shape)}")
        if not torch.all(spectrum > 0):
            raise ValueError("the power spectrum must be positive everywhere (fit adds a ridge)")
        self.mean, self.spectrum = mean, spectrum

    @classmethod
    def fit(cls, x: torch.Tensor, ridge: float = 1e-6) -> "StationaryGaussian":
        """μ_c: the mean of every pixel of channel c; P_c(ω): the mean of |F(x_c − μ_c)|² over the examples
        ``x`` (n, C, H, W) (+ ``ridge``)."""
        if x.ndim != 4 or x.shape[0] < 2:
            raise ValueError(f"need at least two images (n, C, H, W); got {tuple(x.shape)}")
        X = x.detach().cpu().double()
        mu = X.mean(dim=(0, 2, 3))
        P = torch.fft.fft2(X - mu[:, None, None], norm="ortho").abs().pow(2).mean(0)
        return cls(mu, P + ridge)

    def denoise(self, y: torch.Tensor, noise_var: float) -> torch.Tensor:
        """E[x | y] for y = x + σz, z white, σ² = ``noise_var`` (the Wiener filter)."""
        if y.ndim != 4 or tuple(y.shape[1:]) != tuple(self.spectrum.shape):
            raise ValueError(f"images must be (B, {', '.join(map(str, self.spectrum.shape))}) like the fitted spectrum; "
                             f"got {tuple(y.shape)} (fit the spectrum at this size)")
        if noise_var < 0:
            raise ValueError(f"noise_var must be >= 0, got {noise_var}")
        mu, P = self.mean.to(y.device)[:, None, None], self.spectrum.to(y.device)
        Y = torch.fft.fft2(y.double() - mu, norm="ortho")
        return (mu + torch.fft.ifft2(P / (P + noise_var) * Y, norm="ortho").real).to(y.dtype)


def linear_matrix(forward, shape: tuple[int, ...]) -> torch.Tensor:
    """The dense (m, d) matrix A of a linear map ``forward`` from (B, *shape) to (B, ...): column j is A e_j."""
    d = math.prod(shape)
    eye = torch.eye(d, dtype=torch.float64).reshape(d, *shape)
    cols = forward(eye).reshape(d, -1)
    if not torch.allclose(forward(2 * eye[:1]).reshape(1, -1), 2 * cols[:1]):
        raise ValueError("forward is not linear (A(2x) != 2A(x)): remove offsets and noise from it")
    return cols.T.contiguous()


class RidgeMap:
    """Affine map ŷ = ȳ + (x − x̄) W fitted by ridge regression on pairs (x_i, y_i); see the module docstring.

    Inputs and answers are flattened; the primal (features × features) or dual (pairs × pairs) system is solved,
    whichever is smaller — the two give the same W."""

    def __init__(self, x_mean: torch.Tensor, y_mean: torch.Tensor, W: torch.Tensor, y_shape: tuple[int, ...], ridge: float):
        self.x_mean, self.y_mean, self.W, self.y_shape, self.ridge = x_mean, y_mean, W, tuple(y_shape), ridge

    @classmethod
    def fit(cls, x: torch.Tensor, y: torch.Tensor, ridge: float) -> "RidgeMap":
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"need as many inputs as answers, got {x.shape[0]} and {y.shape[0]}")
        if x.shape[0] < 2:
            raise ValueError("need at least two pairs to fit a ridge map")
        if ridge <= 0:
            raise ValueError(f"ridge must be > 0, got {ridge}")
        X, Y = _flat(x.cpu()), _flat(y.cpu())
        xm, ym = X.mean(0), Y.mean(0)
        Xc, Yc = X - xm, Y - ym
        n, p = Xc.shape
        if p <= n:
            W = torch.linalg.solve(Xc.T @ Xc + ridge * torch.eye(p, dtype=torch.float64), Xc.T @ Yc)
        else:
            W = Xc.T @ torch.linalg.solve(Xc @ Xc.T + ridge * torch.eye(n, dtype=torch.float64), Yc)
        return cls(xm, ym, W, tuple(y.shape[1:]), ridge)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        X = _flat(x.cpu())
        if X.shape[1] != self.x_mean.numel():
            raise ValueError(f"inputs have {X.shape[1]} entries per example, the map was fitted on {self.x_mean.numel()}")
        out = self.y_mean + (X - self.x_mean) @ self.W
        return out.reshape(x.shape[0], *self.y_shape).to(device=x.device, dtype=x.dtype)

    @classmethod
    def fit_validated(cls, x, y, val_x, val_y, ridges=tuple(10.0 ** k for k in range(-3, 4))):
        """The map of the ridge in ``ridges`` with the lowest validation MSE, and {ridge: validation MSE}."""
        scores, best = {}, None
        for r in ridges:
            m = cls.fit(x, y, r)
            scores[r] = (m(val_x).cpu().double() - val_y.cpu().double().reshape(val_x.shape[0], *m.y_shape)).pow(2).mean().item()
            if best is None or scores[r] < scores[best.ridge]:
                best = m
        return best, scores


def operator_matrix(operator) -> torch.Tensor:
    """The dense (N, m) matrix M of an operator with ``M(v)`` (back-projection), built column by column."""
    m = operator.m
    eye = torch.eye(m, dtype=torch.float32, device=_operator_device(operator))
    cols = operator.M(eye)                                              # (m, C, H, W): column j is M e_j
    return cols.reshape(m, -1).T.double().cpu()


def _operator_device(operator):
    for v in vars(operator).values():
        if torch.is_tensor(v):
            return v.device
    return torch.device("cpu")


def prior_mean_fill(operator, xc: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """M x_c + (I − MMᵀ) μ: the observations kept, everything unobserved set to the prior mean μ."""
    mu = mean.reshape(1, *operator.shape).to(xc.dtype if xc.is_floating_point() else torch.float32).to(xc.device)
    mu = mu.expand(xc.shape[0], *operator.shape)
    return operator.M(xc) + mu - operator.project(mu)


def _dense_problem(A: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    A = torch.as_tensor(A, dtype=torch.float64).cpu()
    if A.ndim != 2:
        raise ValueError(f"A must be a dense (m, d) matrix, got shape {tuple(A.shape)}")
    B = _flat(b.cpu())
    if B.shape[1] != A.shape[0]:
        raise ValueError(f"measurements have {B.shape[1]} entries per example, A has {A.shape[0]} rows")
    return A, B


def pseudo_inverse_solution(A: torch.Tensor, b: torch.Tensor, shape: tuple[int, ...], rcond: float = 1e-10) -> torch.Tensor:
    """x̂ = A⁺_r b = V diag(1/s_i, s_i > r·s_max) Uᵀ b for every row of b (B, m): the minimum-norm least-squares
    solution, with singular values below ``rcond`` times the largest dropped (a truncated SVD: for an
    ill-conditioned A such as a blur, the exact inverse, r → 0, amplifies the noise by 1/s_min). Returns (B, *shape)."""
    A, B = _dense_problem(A, b)
    if math.prod(shape) != A.shape[1]:
        raise ValueError(f"shape {tuple(shape)} does not hold the {A.shape[1]} columns of A")
    if not 0 <= rcond < 1:
        raise ValueError(f"rcond must be in [0, 1), got {rcond}")
    U, S, Vh = torch.linalg.svd(A, full_matrices=False)
    inv = torch.where(S > rcond * S.max(), 1.0 / S, torch.zeros_like(S))
    x = ((B @ U) * inv) @ Vh
    return x.reshape(B.shape[0], *shape).to(device=b.device, dtype=b.dtype if b.is_floating_point() else torch.float64)


@torch.no_grad()
def tv_solution(A: torch.Tensor, b: torch.Tensor, shape: tuple[int, ...], weight: float, n_iter: int = 300) -> torch.Tensor:
    """Total-variation regularisation for b = A x + n with a dense A, for every row of b (B, m):

        x̂ = argmin_x ½‖Ax − b‖² + λ TV(x),   TV(x) = Σ_pixels |∇x| (isotropic, forward differences),

    solved by the primal–dual algorithm of Chambolle & Pock (2011) with K = ∇ (‖∇‖² ≤ 8, steps τ = σ = 1/√8):
    p ← Π_{|p| ≤ λ}(p + σ∇x̄),  x⁺ = (I + τAᵀA)⁻¹(x − τ∇ᵀp + τAᵀb),  x̄ = 2x⁺ − x (the dense solve factored once).
    Starts from Aᵀb. λ = ``weight`` trades data fit for flatness: choose it on validation examples.
    Returns (B, *shape) with ``shape`` an image grid (..., H, W)."""
    A, B = _dense_problem(A, b)
    if math.prod(shape) != A.shape[1] or len(shape) < 2:
        raise ValueError(f"shape must be an image grid (..., H, W) holding the {A.shape[1]} columns of A, got {tuple(shape)}")
    if weight < 0:
        raise ValueError(f"weight (λ) must be ≥ 0, got {weight}")
    if n_iter < 1:
        raise ValueError(f"n_iter must be ≥ 1, got {n_iter}")
    tau = sigma = 1.0 / math.sqrt(8.0)
    d = A.shape[1]
    chol = torch.linalg.cholesky(torch.eye(d, dtype=torch.float64) + tau * A.T @ A)
    AtB = B @ A
    grid = lambda v: v.reshape(-1, *shape)
    x = AtB.clone()
    x_bar = x.clone()
    px = torch.zeros_like(grid(x))
    py = torch.zeros_like(px)
    for _ in range(n_iter):
        gx, gy = image_gradient(grid(x_bar))
        px, py = px + sigma * gx, py + sigma * gy
        scale = (torch.sqrt(px ** 2 + py ** 2) / max(weight, 1e-300)).clamp_min(1.0)
        px, py = px / scale, py / scale
        v = x + tau * image_divergence(px, py).reshape(x.shape) + tau * AtB
        x_new = torch.cholesky_solve(v.T, chol).T
        x_bar, x = 2 * x_new - x, x_new
    if not torch.isfinite(x).all():
        raise FloatingPointError("tv_solution diverged (non-finite values): check A, b and the weight")
    return x.reshape(B.shape[0], *shape).to(device=b.device, dtype=b.dtype if b.is_floating_point() else torch.float64)
