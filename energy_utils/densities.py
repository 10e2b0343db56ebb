"""Gaussian mixtures whose noisy (smoothed) densities are exact: the ground truth for every identity we check.

A prior p(x) = Σ_k w_k N(x; μ_k, C_k) observed through y = x + n, n ~ N(0, Σ), has the closed-form density

    p(y | Σ) = Σ_k w_k N(y; μ_k, S_k),   S_k = C_k + Σ,

so its score ∇_y log p(y|Σ), its covariance score ∇_Σ log p(y|Σ) and the posterior mean E[x | y] are all
exact. Σ is a :class:`NoiseCov`: isotropic (σ²), diagonal or full, optionally one per batch element.
C_k may be singular (a point mass or a low-rank Gaussian) as long as every S_k is positive definite.
:meth:`GaussianMixture.posterior` gives the exact posterior of a linear measurement y = Ax + n, again a
mixture (:class:`MixturePosterior`: its moments, log-density and exact samples).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

KINDS = ("isotropic", "diagonal", "full")


@dataclass(frozen=True)
class NoiseCov:
    """A noise covariance Σ of one kind; ``value`` may carry a leading batch dimension (one Σ per sample).

    isotropic: value () or (B,) holding σ²; diagonal: (d,) or (B, d); full: (d, d) or (B, d, d).
    Build with :meth:`isotropic`, :meth:`diagonal` or :meth:`full`, which validate the input.
    """
    kind: str
    value: torch.Tensor

    @classmethod
    def isotropic(cls, var, dtype=torch.float64) -> "NoiseCov":
        v = torch.as_tensor(var, dtype=dtype)
        if v.ndim > 1:
            raise ValueError(f"isotropic variance must be a scalar or a (B,) tensor, got shape {tuple(v.shape)}")
        if not torch.all(v > 0):
            raise ValueError(f"noise variances must be positive, got min {v.min().item():.3g}")
        return cls("isotropic", v)

    @classmethod
    def diagonal(cls, variances, dtype=torch.float64) -> "NoiseCov":
        v = torch.as_tensor(variances, dtype=dtype)
        if v.ndim not in (1, 2):
            raise ValueError(f"diagonal variances must have shape (d,) or (B, d), got {tuple(v.shape)}")
        if not torch.all(v > 0):
            raise ValueError(f"noise variances must be positive, got min {v.min().item():.3g}")
        return cls("diagonal", v)

    @classmethod
    def full(cls, matrix, dtype=torch.float64) -> "NoiseCov":
        m = torch.as_tensor(matrix, dtype=dtype)
        if m.ndim not in (2, 3) or m.shape[-1] != m.shape[-2]:
            raise ValueError(f"a full covariance must have shape (d, d) or (B, d, d), got {tuple(m.shape)}")
        asym = (m - m.transpose(-1, -2)).abs().max()
        if asym > 1e-10 * max(1.0, m.abs().max().item()):
            raise ValueError(f"covariance must be symmetric (max |Σ - Σᵀ| = {asym.item():.3g}); symmetrise it with (S + S.T)/2")
        if torch.linalg.cholesky_ex(m).info.any():
            raise ValueError("covariance must be positive definite (Cholesky failed); add a small multiple of the identity")
        return cls("full", m)

    @property
    def batch_size(self) -> int | None:
        unbatched_ndim = {"isotropic": 0, "diagonal": 1, "full": 2}[self.kind]
        return self.value.shape[0] if self.value.ndim > unbatched_ndim else None

    def dim(self) -> int | None:
        return None if self.kind == "isotropic" else self.value.shape[-1]

    def matrix(self, d: int) -> torch.Tensor:
        """Σ as a dense (d, d) matrix, or (B, d, d) when batched."""
        if self.dim() not in (None, d):
            raise ValueError(f"covariance is {self.dim()}-dimensional but the data are {d}-dimensional")
        eye = torch.eye(d, dtype=self.value.dtype, device=self.value.device)
        if self.kind == "isotropic":
            return self.value[..., None, None] * eye
        if self.kind == "diagonal":
            return torch.diag_embed(self.value)
        return self.value

    def to(self, dtype=None, device=None) -> "NoiseCov":
        return NoiseCov(self.kind, self.value.to(dtype=dtype, device=device))

    def sample(self, n: int, d: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw n ~ N(0, Σ) with shape (n, d) (n must equal B when batched)."""
        if self.batch_size not in (None, n):
            raise ValueError(f"batched covariance holds {self.batch_size} matrices, cannot draw {n} samples")
        z = torch.randn(n, d, dtype=self.value.dtype, generator=generator).to(self.value.device)
        if self.kind == "isotropic":
            return z * self.value.sqrt()[..., None]
        if self.kind == "diagonal":
            return z * self.value.sqrt()
        return torch.einsum("...ij,...j->...i", torch.linalg.cholesky(self.value), z)

    def gradient_from_matrix(self, grad: torch.Tensor) -> torch.Tensor:
        """Map a gradient w.r.t. the full matrix Σ, (B, d, d), to the gradient w.r.t. this kind's parameters:
        the trace for σ², the diagonal for diagonal variances, the matrix itself for a full Σ."""
        if self.kind == "isotropic":
            return grad.diagonal(dim1=-2, dim2=-1).sum(-1)
        if self.kind == "diagonal":
            return grad.diagonal(dim1=-2, dim2=-1)
        return grad


def as_noise_cov(cov, dtype=torch.float64) -> NoiseCov:
    """Accept a NoiseCov or a plain number (isotropic σ²)."""
    if isinstance(cov, NoiseCov):
        return cov.to(dtype=dtype)
    if isinstance(cov, (int, float)) or (torch.is_tensor(cov) and cov.ndim == 0):
        return NoiseCov.isotropic(cov, dtype=dtype)
    raise TypeError("pass the noise covariance as a float σ² or a NoiseCov (NoiseCov.isotropic/diagonal/full)")


class GaussianMixture:
    """p(x) = Σ_k w_k N(x; μ_k, C_k) with exact noisy densities p(y | Σ); float64 by default, any dimension."""

    def __init__(self, weights, means, covs=None, dtype=torch.float64, factors=None):
        self.weights = torch.as_tensor(weights, dtype=dtype)
        self.means = torch.as_tensor(means, dtype=dtype)
        if self.means.ndim != 2:
            raise ValueError(f"means must have shape (K, d), got {tuple(self.means.shape)}")
        K, d = self.means.shape
        if self.weights.shape != (K,):
            raise ValueError(f"weights must have shape ({K},) to match the means, got {tuple(self.weights.shape)}")
        if torch.any(self.weights < 0) or abs(self.weights.sum().item() - 1.0) > 1e-9:
            raise ValueError("weights must be non-negative and sum to 1")
        self.dtype = dtype
        # C_k = V_k diag(λ_k) V_kᵀ with V_k (d, r), computed once: sampling and isotropic noise reuse it.
        if factors is not None:   # low rank, C_k = R_k R_kᵀ: a thin SVD of R_k instead of a d×d eigensolver
            R = torch.as_tensor(factors, dtype=dtype)
            if R.ndim != 3 or R.shape[:2] != (K, d):
                raise ValueError(f"factors must have shape ({K}, {d}, r), got {tuple(R.shape)}")
            U, S, _ = torch.linalg.svd(R, full_matrices=False)
            self.evecs, self.evals = U, S**2
            self.covs = R @ R.transpose(-1, -2)
            return
        self.covs = torch.zeros(K, d, d, dtype=dtype) if covs is None else torch.as_tensor(covs, dtype=dtype)
        if self.covs.shape != (K, d, d):
            raise ValueError(f"covs must have shape ({K}, {d}, {d}), got {tuple(self.covs.shape)}")
        if (self.covs - self.covs.transpose(-1, -2)).abs().max() > 1e-10:
            raise ValueError("component covariances must be symmetric")
        self.evals, self.evecs = torch.linalg.eigh(self.covs)
        if self.evals.min() < -1e-10:
            raise ValueError("component covariances must be positive semi-definite")
        self.evals = self.evals.clamp_min(0)

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def n_components(self) -> int:
        return self.means.shape[0]

    def smoothed(self, var: float) -> "GaussianMixture":
        """p * N(0, var·I): the same mixture with every component covariance C_k + var·I (the prior that a
        sampler stopping at noise variance ``var`` targets)."""
        if not var >= 0:
            raise ValueError(f"var must be >= 0, got {var}")
        return GaussianMixture(self.weights, self.means,
                               self.covs + var * torch.eye(self.dim, dtype=self.dtype, device=self.means.device))

    def moment_matched(self) -> "GaussianMixture":
        """The single Gaussian with the mixture's mean μ = Σ_k w_k μ_k and covariance
        Σ_k w_k (C_k + (μ_k − μ)(μ_k − μ)ᵀ): the linear-MMSE (Gaussian) control of this prior."""
        mu = self.weights @ self.means
        dev = self.means - mu
        C = (self.weights[:, None, None] * (self.covs + dev[:, :, None] * dev[:, None, :])).sum(0)
        return GaussianMixture(torch.ones(1, dtype=self.dtype), mu[None], C[None])

    def to(self, device) -> "GaussianMixture":
        gm = GaussianMixture.__new__(GaussianMixture)
        gm.weights, gm.means, gm.covs, gm.evals, gm.evecs = (
            t.to(device) for t in (self.weights, self.means, self.covs, self.evals, self.evecs))
        gm.dtype = self.dtype
        return gm

    # -- sampling --------------------------------------------------------------------------------------
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw n samples from the prior p(x); shape (n, d)."""
        k = torch.multinomial(self.weights.cpu(), n, replacement=True, generator=generator)
        roots = (self.evecs * self.evals.sqrt()[:, None, :]).cpu()      # C_k = R Rᵀ
        z = torch.randn(n, roots.shape[-1], dtype=self.dtype, generator=generator)
        x = self.means.cpu()[k]
        for j in range(self.n_components):                              # a loop over components, not samples
            sel = k == j
            x[sel] += z[sel] @ roots[j].T
        return x.to(self.means.device)

    def sample_noisy(self, n: int, cov, generator: torch.Generator | None = None):
        """Draw (x, y) with x ~ p(x) and y = x + n, n ~ N(0, Σ)."""
        cov = as_noise_cov(cov, self.dtype).to(device=self.means.device)
        x = self.sample(n, generator)
        return x, x + cov.sample(n, self.dim, generator)

    # -- exact densities ---------------------------------------------------------------------------------
    def _check_y(self, y) -> torch.Tensor:
        y = torch.as_tensor(y, dtype=self.dtype, device=self.means.device)
        if y.ndim != 2 or y.shape[1] != self.dim:
            raise ValueError(f"y must have shape (B, {self.dim}), got {tuple(y.shape)}")
        return y

    def _terms(self, y: torch.Tensor, cov: NoiseCov):
        """Per-component log w_k N(y; μ_k, S_k), a_k = S_k⁻¹(y − μ_k), and a function returning S_k⁻¹
        ((K,d,d) shared or (B,K,d,d) per sample; built only when a caller needs it)."""
        B, d = y.shape
        if cov.batch_size not in (None, B):
            raise ValueError(f"batched covariance holds {cov.batch_size} matrices but y holds {B} samples")
        diff = y[:, None, :] - self.means[None]                            # (B,K,d)
        if cov.kind == "isotropic":
            # S_k = σ²I + V (diag λ) Vᵀ, so S_k⁻¹ = I/σ² + V diag(1/(λ + σ²) − 1/σ²) Vᵀ: no factorisation per call
            s2 = cov.value[:, None, None] if cov.batch_size else cov.value               # () or (B,1,1)
            corr = 1 / (self.evals + s2) - 1 / s2                                           # (K,r) or (B,K,r)
            c = torch.einsum("kdr,bkd->bkr", self.evecs, diff)                              # Vᵀ(y − μ)
            a = diff / s2 + torch.einsum("kdr,bkr->bkd", self.evecs, c * corr)
            maha = (diff * diff).sum(-1) / s2[..., 0] + (c * c * corr).sum(-1) if cov.batch_size else \
                (diff * diff).sum(-1) / s2 + (c * c * corr).sum(-1)
            r = self.evals.shape[-1]
            logdet = (self.evals + s2).log().sum(-1) + (d - r) * (s2[..., 0] if cov.batch_size else s2).log()
            log_terms = self.weights.log() - 0.5 * (maha + logdet + d * math.log(2 * math.pi))
            eye = torch.eye(d, dtype=y.dtype, device=y.device)
            return log_terms, a, lambda: eye / s2[..., None] + torch.einsum("kir,...kr,kjr->...kij", self.evecs, corr, self.evecs) \
                if cov.batch_size else eye / s2 + torch.einsum("kir,kr,kjr->kij", self.evecs, corr, self.evecs)
        S = self.covs + cov.matrix(d)[..., None, :, :] if cov.batch_size else self.covs + cov.matrix(d)
        L, info = torch.linalg.cholesky_ex(S)
        if info.any():
            raise ValueError("C_k + Σ is not positive definite for some component; use a positive-definite Σ")
        S_inv = torch.cholesky_inverse(L)                                  # (K,d,d) or (B,K,d,d)
        logdet = 2 * L.diagonal(dim1=-2, dim2=-1).log().sum(-1)            # (K,) or (B,K)
        a = torch.einsum("...kij,bkj->bki", S_inv, diff) if S_inv.ndim == 3 else torch.einsum("bkij,bkj->bki", S_inv, diff)
        maha = (diff * a).sum(-1)
        log_terms = self.weights.log() - 0.5 * (maha + logdet + d * math.log(2 * math.pi))
        return log_terms, a, lambda: S_inv

    def log_prob(self, y, cov=None) -> torch.Tensor:
        """log p(y | Σ), shape (B,). ``cov=None`` evaluates the prior itself (needs positive-definite C_k)."""
        y = self._check_y(y)
        # cov=None: a zero "full" Σ, so the Cholesky of C_k itself is used (σ² = 1e-300 through the isotropic
        # branch cancelled catastrophically, 1/σ² − 1/σ², and returned values like ±1e285)
        cov = NoiseCov("full", torch.zeros(self.dim, self.dim, dtype=self.dtype)) if cov is None \
            else as_noise_cov(cov, self.dtype)
        log_terms, _, _ = self._terms(y, cov.to(device=y.device))
        return torch.logsumexp(log_terms, dim=1)

    def responsibilities(self, y, cov) -> torch.Tensor:
        """r_k(y) = p(k | y, Σ), shape (B, K)."""
        y = self._check_y(y)
        log_terms, _, _ = self._terms(y, as_noise_cov(cov, self.dtype).to(device=y.device))
        return torch.softmax(log_terms, dim=1)

    def score(self, y, cov) -> torch.Tensor:
        """∇_y log p(y | Σ) = −Σ_k r_k S_k⁻¹ (y − μ_k), shape (B, d)."""
        y = self._check_y(y)
        log_terms, a, _ = self._terms(y, as_noise_cov(cov, self.dtype).to(device=y.device))
        r = torch.softmax(log_terms, dim=1)
        return -(r[..., None] * a).sum(1)

    def posterior_mean(self, y, cov) -> torch.Tensor:
        """E[x | y] = Σ_k r_k (μ_k + C_k S_k⁻¹ (y − μ_k)), from the component posteriors (not from Tweedie)."""
        y = self._check_y(y)
        log_terms, a, _ = self._terms(y, as_noise_cov(cov, self.dtype).to(device=y.device))
        r = torch.softmax(log_terms, dim=1)
        Ca = torch.einsum("kdr,bkr->bkd", self.evecs, self.evals * torch.einsum("kdr,bkd->bkr", self.evecs, a))
        comp_mean = self.means[None] + Ca                                   # μ_k + C_k S_k⁻¹(y − μ_k)
        return (r[..., None] * comp_mean).sum(1)

    def tweedie_mean(self, y, cov) -> torch.Tensor:
        """The Miyasawa/Tweedie denoiser y + Σ ∇_y log p(y | Σ)."""
        y = self._check_y(y)
        cov = as_noise_cov(cov, self.dtype).to(device=y.device)
        Sig = cov.matrix(self.dim)
        s = self.score(y, cov)
        return y + (torch.einsum("bij,bj->bi", Sig, s) if Sig.ndim == 3 else s @ Sig.T)

    def covariance_score(self, y, cov) -> torch.Tensor:
        """∇_Σ log p(y | Σ) = Σ_k r_k ½ (a_k a_kᵀ − S_k⁻¹) as a symmetric (B, d, d) matrix."""
        y = self._check_y(y)
        log_terms, a, S_inv = self._terms(y, as_noise_cov(cov, self.dtype).to(device=y.device))
        r = torch.softmax(log_terms, dim=1)
        outer = torch.einsum("bk,bki,bkj->bij", r, a, a)
        S_inv = S_inv()
        weighted = torch.einsum("bk,bkij->bij", r, S_inv) if S_inv.ndim == 4 else torch.einsum("bk,kij->bij", r, S_inv)
        return 0.5 * (outer - weighted)

    def variance_score(self, y, cov) -> torch.Tensor:
        """Gradient of log p(y | Σ) w.r.t. the parameters of Σ's kind: d/dσ² (B,), d/dv_i (B, d) or d/dΣ (B, d, d)."""
        cov = as_noise_cov(cov, self.dtype)
        return cov.gradient_from_matrix(self.covariance_score(y, cov))

    def hessian_log_prob(self, y, cov) -> torch.Tensor:
        """∇²_y log p(y | Σ) = Σ_k r_k (a_k a_kᵀ − S_k⁻¹) − s sᵀ, shape (B, d, d)."""
        s = self.score(y, cov)
        return 2 * self.covariance_score(y, cov) - s[:, :, None] * s[:, None, :]

    # -- linear inverse problems ------------------------------------------------------------------------
    def posterior(self, A, noise_var, y) -> "MixturePosterior":
        """The exact posterior p(x | y) for y = A x + n, n ~ N(0, σ² I_m), A an (m, d) matrix, y (B, m).

        Each component stays Gaussian and the posterior is the mixture

            p(x | y) = Σ_k w_k'(y) N(x; μ_k'(y), C_k'),
            G_k  = A C_k Aᵀ + σ² I_m                              (covariance of y under component k)
            K_k  = C_k Aᵀ G_k⁻¹                                     (gain)
            μ_k' = μ_k + K_k (y − A μ_k)
            C_k' = C_k − K_k A C_k  = (C_k⁻¹ + AᵀA/σ²)⁻¹           (the same for every y)
            w_k' ∝ w_k N(y; A μ_k, G_k).

        The gain form needs only G_k to be invertible (σ² > 0), so singular C_k (point masses, low rank) are
        fine; C_k' is then singular too and :meth:`MixturePosterior.log_prob` refuses it. Computed in the
        mixture's dtype (float64 by default), by Cholesky solves of the m × m matrices G_k.
        """
        A = torch.as_tensor(A, dtype=self.dtype, device=self.means.device)
        if A.ndim != 2 or A.shape[1] != self.dim:
            raise ValueError(f"A must be an (m, {self.dim}) matrix, got shape {tuple(A.shape)}")
        s2 = float(noise_var)
        if not s2 > 0 or not math.isfinite(s2):
            raise ValueError(f"noise_var must be a positive finite number, got {noise_var}")
        y = torch.as_tensor(y, dtype=self.dtype, device=self.means.device)
        m = A.shape[0]
        if y.ndim != 2 or y.shape[1] != m:
            raise ValueError(f"y must have shape (B, {m}) for an ({m}, {self.dim}) operator, got {tuple(y.shape)}")
        CAt = self.covs @ A.T                                                  # (K, d, m)
        G = A @ CAt + s2 * torch.eye(m, dtype=self.dtype, device=A.device)      # (K, m, m)
        G = 0.5 * (G + G.transpose(-1, -2))
        L, info = torch.linalg.cholesky_ex(G)
        if info.any():
            raise ValueError("A C_k Aᵀ + σ² I is not positive definite for some component")
        Kt = torch.cholesky_solve(CAt.transpose(-1, -2), L)                    # (K, m, d) = G⁻¹ A C_k = K_kᵀ
        resid = y[:, None, :] - self.means @ A.T                               # (B, K, m): y − A μ_k
        means = self.means[None] + torch.einsum("bkm,kmd->bkd", resid, Kt)
        covs = self.covs - CAt @ Kt
        covs = 0.5 * (covs + covs.transpose(-1, -2))
        white = torch.linalg.solve_triangular(L[:, None], resid.transpose(0, 1)[..., None], upper=False)[..., 0]  # (K, B, m)
        logdet = 2 * L.diagonal(dim1=-2, dim2=-1).log().sum(-1)                # (K,)
        log_ev = -0.5 * (white.pow(2).sum(-1) + logdet[:, None] + m * math.log(2 * math.pi))             # (K, B)
        log_w = self.weights.log()[None] + log_ev.T                            # (B, K)
        log_evidence = torch.logsumexp(log_w, dim=1)
        return MixturePosterior(torch.softmax(log_w, dim=1), means, covs, log_evidence)


@dataclass
class MixturePosterior:
    """p(x | y) = Σ_k w_k N(x; μ_k, C_k) for a batch of B measurements (see :meth:`GaussianMixture.posterior`).

    ``weights`` (B, K), ``means`` (B, K, d), ``covs`` (K, d, d) (shared by every y), ``log_evidence`` (B,):
    log p(y) = log Σ_k w_k N(y; A μ_k, A C_k Aᵀ + σ² I).
    """
    weights: torch.Tensor
    means: torch.Tensor
    covs: torch.Tensor
    log_evidence: torch.Tensor

    @property
    def dim(self) -> int:
        return self.means.shape[-1]

    def mean(self) -> torch.Tensor:
        """E[x | y] = Σ_k w_k μ_k, (B, d)."""
        return torch.einsum("bk,bkd->bd", self.weights, self.means)

    def covariance(self) -> torch.Tensor:
        """Cov[x | y] = Σ_k w_k (C_k + μ_k μ_kᵀ) − E[x|y] E[x|y]ᵀ, (B, d, d) (law of total covariance)."""
        m = self.mean()
        dev = self.means - m[:, None, :]                                      # centred: no cancellation
        within = torch.einsum("bk,kij->bij", self.weights, self.covs)
        between = torch.einsum("bk,bki,bkj->bij", self.weights, dev, dev)
        return within + between

    def sample(self, n_per_y: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n_per_y exact draws for each measurement: (B, n_per_y, d). A component per draw, then its Gaussian."""
        if n_per_y < 1:
            raise ValueError(f"n_per_y must be >= 1, got {n_per_y}")
        B, K, d = self.means.shape
        dev = self.means.device
        k = torch.multinomial(self.weights.cpu(), n_per_y, replacement=True, generator=generator)      # (B, n)
        evals, evecs = torch.linalg.eigh(self.covs)                           # C_k' may be singular: eigh, not Cholesky
        roots = (evecs * evals.clamp_min(0).sqrt()[:, None, :]).cpu()
        z = torch.randn(B, n_per_y, d, dtype=self.means.dtype, generator=generator)
        x = torch.gather(self.means.cpu(), 1, k[..., None].expand(B, n_per_y, d))
        for j in range(K):                                                    # a loop over components, not samples
            sel = k == j
            x[sel] += z[sel] @ roots[j].T
        return x.to(dev)

    def log_prob(self, x) -> torch.Tensor:
        """log p(x | y) for x of shape (B, n, d) (n points per measurement), returns (B, n)."""
        return torch.logsumexp(self.component_log_probs(x), dim=1)

    def component_log_probs(self, x) -> torch.Tensor:
        """log w_k + log N(x; μ_k, C_k) for x of shape (B, n, d): (B, K, n). Their softmax over k is the
        responsibility of each posterior component for each point."""
        x = torch.as_tensor(x, dtype=self.means.dtype, device=self.means.device)
        B, K, d = self.means.shape
        if x.ndim != 3 or x.shape[0] != B or x.shape[2] != d:
            raise ValueError(f"x must have shape ({B}, n, {d}), got {tuple(x.shape)}")
        L, info = torch.linalg.cholesky_ex(self.covs)
        if info.any():
            raise ValueError("a posterior component covariance is singular (a degenerate prior component): "
                             "log_prob needs positive-definite C_k'")
        diff = x[:, None, :, :] - self.means[:, :, None, :]                  # (B, K, n, d)
        white = torch.linalg.solve_triangular(L[None], diff.transpose(-1, -2), upper=False)   # (B, K, d, n)
        logdet = 2 * L.diagonal(dim1=-2, dim2=-1).log().sum(-1)               # (K,)
        log_n = -0.5 * (white.pow(2).sum(-2) + logdet[None, :, None] + d * math.log(2 * math.pi))   # (B, K, n)
        return self.weights.log()[..., None] + log_n


def random_mixture(n_components: int, dim: int, generator: torch.Generator | None = None, spread: float = 2.0,
                   scale: float = 0.3, rank: int | None = None, dtype=torch.float64) -> GaussianMixture:
    """A random mixture: means ~ N(0, spread²), component covariances R Rᵀ·scale² with R of ``rank`` columns
    (full rank by default; low rank gives data concentrated near a union of affine subspaces)."""
    rank = dim if rank is None else rank
    w = torch.rand(n_components, generator=generator, dtype=dtype) + 0.5
    means = spread * torch.randn(n_components, dim, generator=generator, dtype=dtype)
    R = scale * torch.randn(n_components, dim, rank, generator=generator, dtype=dtype) / math.sqrt(rank)
    if rank < dim:
        return GaussianMixture(w / w.sum(), means, dtype=dtype, factors=R)
    covs = R @ R.transpose(-1, -2)
    return GaussianMixture(w / w.sum(), means, 0.5 * (covs + covs.transpose(-1, -2)), dtype=dtype)


def benchmark_mixture(dim: int, n_components: int, seed: int) -> GaussianMixture:
    """The fixed mixtures on which notebook 08 trains its vector energies (and notebook 09 samples their
    posteriors), built from their own ``seed`` so that committed models stay paired with their data:
    equal weights, means ~ N(0, 4·I / max(1, d/4)), component covariances 0.09·(R Rᵀ + 0.3·I) with
    R_ij ~ N(0, 1/d)."""
    if dim < 1 or n_components < 1:
        raise ValueError(f"dim and n_components must be >= 1, got {dim} and {n_components}")
    g = torch.Generator().manual_seed(seed)
    means = 2 * torch.randn(n_components, dim, generator=g, dtype=torch.float64) / math.sqrt(max(1.0, dim / 4))
    R = torch.randn(n_components, dim, dim, generator=g, dtype=torch.float64) / math.sqrt(dim)
    covs = 0.3**2 * (R @ R.transpose(1, 2) + 0.3 * torch.eye(dim, dtype=torch.float64))
    return GaussianMixture(torch.full((n_components,), 1.0 / n_components, dtype=torch.float64), means, covs)
