"""Energy networks: the inner-product form, scores from one autograd call, and the exact mixture oracle."""
import pytest
import torch

from energy_utils.covariances import CovFamily, DiagCov, flip_frequencies
from energy_utils.densities import NoiseCov, random_mixture
from energy_utils.energy_models import (ImageEnergy, MixtureEnergy, VectorEnergy, build_model, denoise,
                                        energy_and_scores)

F64 = torch.float64


def vector_setup(basis="pixel", B=4, d=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    cov = CovFamily(var_min=1e-2, var_max=1e1).sample(B, (d,), g, F64)
    cov = DiagCov(cov.log_var, torch.full((B,), basis == "fourier"))
    cov = DiagCov(cov.symmetrized_log_var(), cov.fourier)
    y = torch.randn(B, d, generator=g, dtype=F64)
    return y, cov


def randomize(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.2 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model


@pytest.mark.parametrize("basis", ["pixel", "fourier"])
def test_vector_energy_is_half_inner_product_and_scores_match_finite_differences(basis):
    torch.manual_seed(0)
    model = randomize(VectorEnergy(6, width=16, depth=2, emb=8).double())
    y, cov = vector_setup(basis)
    assert torch.allclose(model(y, cov), 0.5 * (y * model.s_theta(y, cov)).sum(1))
    sc = energy_and_scores(model, y, cov)
    h = 1e-6
    for i in range(6):
        e = torch.zeros(6, dtype=F64)
        e[i] = h
        fd_y = (model(y + e, cov) - model(y - e, cov)) / (2 * h)
        assert torch.allclose(sc.grad_y[:, i], fd_y, atol=1e-6)
        cp, cm = DiagCov(cov.log_var + e, cov.fourier), DiagCov(cov.log_var - e, cov.fourier)
        fd_v = (model(y, cp) - model(y, cm)) / (2 * h)
        assert torch.allclose(sc.grad_logvar[:, i], fd_v, atol=1e-6)


def test_fourier_covariance_score_is_conjugate_symmetric():
    model = randomize(ImageEnergy(widths=(8, 8, 8), emb=8).double())
    g = torch.Generator().manual_seed(1)
    cov = CovFamily(var_min=1e-2, var_max=1e1, p_fourier=1.0).sample(2, (1, 8, 8), g, F64)
    y = torch.randn(2, 1, 8, 8, generator=g, dtype=F64)
    gl = energy_and_scores(model, y, cov).grad_logvar
    assert torch.allclose(gl, flip_frequencies(gl, (-2, -1)), atol=1e-10)


def test_image_energy_shapes_mixed_batch_and_inner_product():
    model = randomize(ImageEnergy(channels=2, widths=(8, 8, 8), emb=8))
    g = torch.Generator().manual_seed(2)
    cov = CovFamily().sample(4, (1, 12, 12), g)
    y = torch.randn(4, 2, 12, 12, generator=g)
    u = model(y, cov)
    assert u.shape == (4,)
    assert torch.allclose(u, 0.5 * (y * model.s_theta(y, cov)).flatten(1).sum(1), rtol=1e-5)
    sc = energy_and_scores(model, y, cov)
    assert sc.grad_y.shape == y.shape and sc.grad_logvar.shape == (4, 1, 12, 12)
    assert build_model("image", channels=2, widths=(8, 8, 8), emb=8)(y, cov).shape == (4,)


def test_pooled_pixel_gain_is_spatially_constant_with_the_same_parameters_and_exact_scores():
    """``pixel_gain="pooled"``: the gains of pixel-Σ rows are one per channel (the gain convolutions see a 1×1
    embedding), the parameters are those of the default spatial-map variant, and the scores still match finite
    differences of U in y and in log v."""
    kw = dict(widths=(8, 8, 8), emb=4)
    model = randomize(ImageEnergy(pixel_gain="pooled", **kw).double())
    assert [(k, v.shape) for k, v in model.state_dict().items()] == \
        [(k, v.shape) for k, v in ImageEnergy(**kw).state_dict().items()]
    seen = []
    model.inp.gain.register_forward_hook(lambda m, inp, out: seen.append(inp[0].shape[-2:]))
    g = torch.Generator().manual_seed(5)
    cov = CovFamily(var_min=1e-2, var_max=1e1, p_fourier=0.0).sample(2, (1, 6, 6), g, F64)
    y = torch.randn(2, 1, 6, 6, generator=g, dtype=F64)
    sc = energy_and_scores(model, y, cov)
    assert seen[0] == (1, 1)
    h, i = 1e-6, (0, 0, 2, 3)
    e = torch.zeros_like(y)
    e[i] = h
    fd_y = (model(y + e, cov) - model(y - e, cov))[0] / (2 * h)
    fd_v = (model(y, DiagCov(cov.log_var + e, cov.fourier)) - model(y, DiagCov(cov.log_var - e, cov.fourier)))[0] / (2 * h)
    assert torch.allclose(sc.grad_y[i], fd_y, atol=1e-6) and torch.allclose(sc.grad_logvar[i], fd_v, atol=1e-6)
    with pytest.raises(ValueError, match="pixel_gain"):
        ImageEnergy(pixel_gain="spatial")


@pytest.mark.parametrize("basis", ["pixel", "fourier"])
def test_bounded_image_energy_scales_the_networks_share_of_the_denoiser_by_c(basis):
    """With ``bounded`` the network's term is ½⟨u, c g⟩, c = σ_d(σ_d² + Σ)^{−½}: for Σ = tI its share of the
    denoiser, Σ∇_yU, is the unbounded one's times σ_d/√(σ_d² + t) (same weights, offset heads off), in either basis."""
    shares = {}
    for bounded in (False, True):
        model = randomize(ImageEnergy(widths=(8, 8, 8), emb=8, identity=False, bounded=bounded).double())
        with torch.no_grad():
            for m in (model.phi["pixel"][2], model.phi["fourier"][2], model.a_img):
                m.weight.zero_(); m.bias.zero_()
        y = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(3), dtype=F64)
        shares[bounded] = {t: t * energy_and_scores(model, y, DiagCov.isotropic(t, (1, 8, 8), basis, F64).expand_batch(3),
                                                    cov_score=False).grad_y for t in (0.1, 10.0, 1e3)}
    for t, share in shares[False].items():
        assert share.abs().max() > 1e-3                          # the network does contribute
        assert torch.allclose(shares[True][t], share * 0.5 / (0.25 + t) ** 0.5, rtol=1e-8, atol=1e-12)


def test_vector_energy_can_take_any_value_at_the_origin():
    """The 1/r component: U(y → 0, Σ) tends to the offset head a, not to ½⟨0, s⟩ = 0."""
    model = VectorEnergy(4, width=8, depth=1, emb=4).double()
    with torch.no_grad():
        model.out.bias[-1] = 3.0
    y, cov = vector_setup(d=4)
    # (the 1/r is smoothed as r² + 1e-6, so "near 0" means |u| ≳ 1e-2 here)
    assert torch.allclose(model(0.05 * y, cov), torch.full((4,), 3.0, dtype=F64), atol=0.05)


@pytest.mark.parametrize("basis", ["pixel", "fourier"])
def test_mixture_oracle_matches_the_exact_scores(basis):
    """Image-shaped mixture with C = 2 channels sharing one 2×2 variance map (d = 8)."""
    gm = random_mixture(3, 8, torch.Generator().manual_seed(3), spread=1.0, scale=0.5)
    g = torch.Generator().manual_seed(4)
    B = 5
    cov = CovFamily(var_min=1e-2, var_max=1e1).sample(B, (1, 2, 2), g, F64)
    cov = DiagCov(cov.log_var, torch.full((B,), basis == "fourier"))
    cov = DiagCov(cov.symmetrized_log_var(), cov.fourier)
    y = torch.randn(B, 2, 2, 2, generator=g, dtype=F64)
    sc = energy_and_scores(MixtureEnergy(gm), y, cov)
    M = cov.dense(2)
    nc = NoiseCov.full(0.5 * (M + M.transpose(1, 2)))
    yf = y.reshape(B, -1)
    assert torch.allclose(sc.energy, -gm.log_prob(yf, nc), atol=1e-10)
    assert torch.allclose(sc.grad_y.reshape(B, -1), -gm.score(yf, nc), atol=1e-10)
    # ∂U/∂log v_k = v_k tr(∇_Σ U · ∂Σ/∂v_k), ∂Σ/∂v_k the dense operator with eigenvalue 1 at k only
    # (per sample: the reference is the unbatched exact covariance score)
    G = torch.cat([-gm.covariance_score(yf[i:i + 1], NoiseCov.full(nc.value[i])) for i in range(B)])
    ref = torch.zeros(B, 4, dtype=F64)
    for k in range(4):
        unit = torch.zeros(B, 1, 2, 2, dtype=F64).reshape(B, 4)
        unit[:, k] = 1.0
        unit = unit.reshape(B, 1, 2, 2)
        # the operator is symmetrised the way the network sees the spectrum (k and −k share)
        if basis == "fourier":
            unit = 0.5 * (unit + flip_frequencies(unit, (-2, -1)))
        basis_vecs = torch.eye(8, dtype=F64).reshape(8, 2, 2, 2)
        dS = torch.stack([DiagCov(cov.log_var[i:i + 1].expand(8, -1, -1, -1), cov.fourier[i:i + 1].expand(8))
                          .apply_multiplier(basis_vecs, unit[i:i + 1]).reshape(8, 8) for i in range(B)])
        ref[:, k] = (G * dS).sum((1, 2)) * cov.var.reshape(B, 4)[:, k]
    assert torch.allclose(sc.grad_logvar.reshape(B, 4), ref, atol=1e-10)
    # anisotropic Tweedie: D = y − Σ∇_yU is the exact posterior mean
    D = denoise(MixtureEnergy(gm), y, cov).reshape(B, -1)
    assert torch.allclose(D, gm.posterior_mean(yf, nc), atol=1e-9)


def test_pixel_oracle_matches_diagonal_variance_score():
    gm = random_mixture(2, 5, torch.Generator().manual_seed(5))
    y, cov = vector_setup("pixel", B=3, d=5, seed=6)
    sc = energy_and_scores(MixtureEnergy(gm), y, cov)
    ref = torch.cat([-gm.variance_score(y[i:i + 1], NoiseCov.diagonal(cov.var[i])) for i in range(3)]) * cov.var
    assert torch.allclose(sc.grad_logvar, ref, atol=1e-10)


def test_bad_shapes_raise():
    model = VectorEnergy(4, width=8, depth=1, emb=4)
    y, cov = vector_setup(d=5)
    with pytest.raises(ValueError, match="VectorEnergy expects"):
        model(y.float(), cov.to(torch.float32))
    with pytest.raises(ValueError, match="unknown model kind"):
        build_model("graph")


def test_image_offset_head_adds_a_sigma_only_offset_that_adsm_cannot_train():
    from energy_utils.score_losses import score_matching_loss

    torch.manual_seed(0)
    model = randomize(ImageEnergy(widths=(8, 8, 8), emb=8).double())
    g = torch.Generator().manual_seed(7)
    cov = CovFamily(var_min=1e-2, var_max=1e1).sample(3, (1, 6, 6), g, F64)
    y = torch.randn(3, 1, 6, 6, generator=g, dtype=F64)
    u0 = model(y, cov)
    with torch.no_grad():
        model.phi["pixel"][2].bias += 0.1
        model.phi["fourier"][2].bias += 0.1
    shift = 8 * 1 * 36 * 0.1                       # LOGVAR_SCALE · C · coordinates · Δbias
    assert torch.allclose(model(y, cov) - u0, torch.full((3,), shift, dtype=F64), rtol=1e-4)
    # A-DSM alone gives the Σ-only part of the head (almost) no gradient — only through the 1e-3 that keeps
    # 2a·u/(‖u‖² + 1e-3) finite at u = 0 — while A-CSM does
    x = torch.rand(3, 1, 6, 6, generator=g, dtype=F64)
    grads = {}
    for dual in (False, True):
        model.zero_grad()
        loss, _ = score_matching_loss(model, x, cov, dual=dual, generator=torch.Generator().manual_seed(1))
        loss.backward()
        grads[dual] = sum(p.grad.abs().sum() for p in model.phi.parameters() if p.grad is not None)
    assert grads[False] < 1e-2 * grads[True]


@pytest.mark.parametrize("kind", ["vector", "image"])
def test_each_row_is_embedded_in_its_own_basis_whatever_the_batch(kind):
    """The networks run each basis' Σ-branch only on the rows of that basis (rows reordered inside): scores of a
    mixed batch equal those of each row alone and follow a permutation of the batch; a one-basis batch still
    gives every parameter a (zero for the absent basis) gradient, as DDP and the optimizers expect."""
    from energy_utils.score_losses import score_matching_loss

    g = torch.Generator().manual_seed(3)
    if kind == "vector":
        model, shape = randomize(VectorEnergy(5, width=16, depth=2, emb=8).double()), (5,)
    else:
        model, shape = randomize(ImageEnergy(2, widths=(8, 8, 8), emb=4).double()), (1, 6, 6)
    B = 6
    cov = CovFamily(var_min=1e-2, var_max=1e1).sample(B, shape, g, F64)
    cov = DiagCov(cov.log_var, torch.tensor([True, False, False, True, False, True]))
    y = torch.randn(B, *((5,) if kind == "vector" else (2, 6, 6)), generator=g, dtype=F64)
    sc = energy_and_scores(model, y, cov)
    for i in range(B):
        one = energy_and_scores(model, y[i:i + 1], cov[i:i + 1])
        for a, b in zip(sc, one):
            assert torch.allclose(a[i:i + 1], b, rtol=1e-10, atol=1e-12)
    perm = torch.tensor([5, 2, 0, 4, 1, 3])
    sp = energy_and_scores(model, y[perm], cov[perm])
    for a, b in zip(sc, sp):
        assert torch.allclose(a[perm], b, rtol=1e-10, atol=1e-12)
    pix = DiagCov(cov.log_var, torch.zeros(B, dtype=torch.bool))
    loss, _ = score_matching_loss(model, y, pix, generator=g)
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(v is not None for v in grads.values())
    fourier_names = [n for n in grads if "four" in n]
    assert fourier_names and all(torch.count_nonzero(grads[n]) == 0 for n in fourier_names)


def _residual_model(rank=10):
    from energy_utils.energy_models import GaussianResidualEnergy
    torch.manual_seed(0)
    x = torch.rand(300, 1, 6, 6, dtype=torch.float64) ** 3
    return GaussianResidualEnergy.from_data(x, rank, dict(widths=(8, 8, 8), emb=8)).double(), x


@pytest.mark.parametrize("fourier", [[True, False, True, False, True, False], [False] * 6, [True] * 6],
                         ids=["mixed", "all_pixel", "all_fourier"])
def test_gaussian_base_energy_and_scores_are_exact_for_pixel_and_fourier_covariances(fourier):
    """U_G = −log N(y; μ, C_k + Σ) and its two scores, against a dense reference differentiated by autograd, for
    batches with both kinds of rows and with one kind only (the FFTs run on the Fourier rows alone)."""
    from energy_utils.energy_models import energy_and_scores
    model, _ = _residual_model()
    y = torch.rand(6, 1, 6, 6, dtype=torch.float64)
    cov = CovFamily(var_min=1e-3, var_max=10.0).sample(6, (1, 6, 6), torch.Generator().manual_seed(1), torch.float64)
    cov = DiagCov(cov.log_var, torch.tensor(fourier))
    sc = energy_and_scores(model, y, cov)                   # the residual is zero at initialisation
    cv, yl = cov.requires_grad_(), y.clone().requires_grad_(True)
    K = model.base.covariance() + cv.dense(1)
    ref = -torch.distributions.MultivariateNormal(model.base.mean.reshape(-1), 0.5 * (K + K.transpose(1, 2))).log_prob(
        yl.reshape(6, -1))
    gy, glv = torch.autograd.grad(ref.sum(), (yl, cv.log_var))
    assert torch.allclose(sc.energy, ref, atol=1e-10)
    assert torch.allclose(sc.grad_y, gy, atol=1e-10)
    assert torch.allclose(sc.grad_logvar, glv, atol=1e-10)
    assert torch.allclose(model(y, cov), ref, atol=1e-10)   # the plain forward gives the same energy


def test_gaussian_base_shares_one_factorisation_per_distinct_covariance():
    """A batch whose rows repeat a few Σ gives, row by row, what each row gives alone."""
    from energy_utils.energy_models import energy_and_scores
    model, _ = _residual_model()
    cov = CovFamily(var_min=1e-3, var_max=10.0).sample(3, (1, 6, 6), torch.Generator().manual_seed(5), torch.float64)
    cov = DiagCov(cov.log_var, torch.tensor([True, False, False]))
    idx = torch.tensor([2, 0, 2, 1, 0, 2, 1])
    rep = DiagCov(cov.log_var[idx], cov.fourier[idx])
    y = torch.rand(7, 1, 6, 6, dtype=torch.float64)
    together = energy_and_scores(model, y, rep)
    for i in range(7):
        alone = energy_and_scores(model, y[i:i + 1], rep[i:i + 1])
        assert torch.allclose(together.energy[i], alone.energy[0], atol=1e-10)
        assert torch.allclose(together.grad_y[i], alone.grad_y[0], atol=1e-10)
        assert torch.allclose(together.grad_logvar[i], alone.grad_logvar[0], atol=1e-10)


def test_gaussian_residual_energy_starts_as_the_linear_mmse_control_and_full_rank_is_the_sample_covariance():
    from energy_utils import controls
    model, x = _residual_model(rank=35)                     # d − 1: C_k is the sample covariance (+ ridge)
    assert torch.allclose(model.base.covariance(), torch.cov(x.reshape(300, -1).T) + 1e-4 * torch.eye(36), atol=1e-6)  # float32 buffers
    gauss = controls.GaussianPrior(model.base.mean.reshape(-1), model.base.covariance(), (1, 6, 6))
    y = torch.rand(4, 1, 6, 6, dtype=torch.float64)
    cov = DiagCov.isotropic(0.3, (1, 6, 6), dtype=torch.float64).expand_batch(4)
    expected = gauss.linear_posterior_mean(torch.eye(36, dtype=torch.float64), y, 0.3)
    assert torch.allclose(denoise(model, y, cov), expected, atol=1e-10)


@pytest.mark.parametrize("rows", [(0, 1, 2), (0, 1, 0)], ids=["distinct", "shared"])
def test_gaussian_residual_scores_with_create_graph_differentiate_through_the_base(rows):
    """DPS differentiates the denoiser: d⟨g, ∇_yU⟩/dy must be (C_k + Σ)⁻¹g for the base (the residual is zero),
    with every row its own Σ and with rows sharing one (solved together)."""
    from energy_utils.energy_models import energy_and_scores
    model, _ = _residual_model()
    y = torch.rand(3, 1, 6, 6, dtype=torch.float64, requires_grad=True)
    cov = CovFamily(var_min=1e-3, var_max=10.0).sample(3, (1, 6, 6), torch.Generator().manual_seed(4), torch.float64)
    cov = DiagCov(cov.log_var, torch.tensor([True, False, True]))
    cov = DiagCov(cov.log_var[list(rows)], cov.fourier[list(rows)])
    g = torch.randn(3, 1, 6, 6, dtype=torch.float64)
    sc = energy_and_scores(model, y, cov, create_graph=True)
    (hvp,) = torch.autograd.grad((sc.grad_y * g).sum(), y)
    K = model.base.covariance() + cov.dense(1)
    assert torch.allclose(hvp.reshape(3, -1), torch.linalg.solve(K, g.reshape(3, -1, 1))[..., 0], atol=1e-8)


def test_gaussian_residual_energy_trains_only_its_network_and_reloads_from_its_meta():
    from energy_utils.score_losses import score_matching_loss
    model, x = _residual_model()
    cov = CovFamily(var_min=1e-3, var_max=10.0).sample(8, (1, 6, 6), torch.Generator().manual_seed(2), torch.float64)
    loss = score_matching_loss(model, x[:8], cov, dual=True, csm_weight=36.0)
    (loss[0] if isinstance(loss, tuple) else loss).backward()
    assert all(p.grad is not None for p in model.net.parameters() if p.requires_grad)
    assert not list(model.base.parameters())                # μ, W and ψ are buffers
    again = build_model("image_gaussian_residual", shape=(1, 6, 6), rank=10, net_kwargs=dict(widths=(8, 8, 8), emb=8))
    again.load_state_dict(model.state_dict())
    assert torch.equal(again.base.factor, model.base.factor.float())
    with pytest.raises(ValueError, match="one-channel"):
        build_model("image_gaussian_residual", shape=(3, 6, 6), rank=4)


def test_gaussian_base_reuses_the_factors_of_a_repeated_covariance_bit_for_bit():
    """A sampler evaluates twice at one Σ: the second call reuses the cached factors and returns exactly what a
    recomputation gives; a different Σ, a refitted base or a Σ that needs a graph recomputes."""
    from energy_utils.energy_models import energy_and_scores
    model, x = _residual_model()
    base = model.base
    cov = CovFamily(var_min=1e-3, var_max=10.0).sample(4, (1, 6, 6), torch.Generator().manual_seed(7), torch.float64)
    cov = DiagCov(cov.log_var, torch.tensor([False, True, False, False]))
    y1, y2 = torch.rand(2, 4, 1, 6, 6, dtype=torch.float64)
    energy_and_scores(model, y1, cov)
    cached = base._factor_cache
    again = energy_and_scores(model, y2, cov)
    assert base._factor_cache is cached                     # reused, not recomputed
    base._factor_cache = None
    fresh = energy_and_scores(model, y2, cov)
    for a, b in zip(again, fresh):
        assert torch.equal(a, b)
    other = DiagCov(cov.log_var.clone(), cov.fourier)
    other.log_var[0, 0, 0, 0] += 1e-9
    energy_and_scores(model, y2, other)
    assert base._factor_cache is not cached and not torch.equal(base._factor_cache.key, cached.key)
    before = base._factor_cache
    base.fit(x[:200] ** 0.5)                                # new W, ψ: the same Σ must not reuse the old factors
    refit = energy_and_scores(model, y2, other)
    base._factor_cache = None
    assert torch.equal(refit.energy, energy_and_scores(model, y2, other).energy) and base._factor_cache is not before
    lv = other.log_var.clone().requires_grad_(True)
    base._factor_cache = None
    energy_and_scores(model, y2, DiagCov(lv, other.fourier), create_graph=True)
    assert base._factor_cache is None                       # factors with a graph are never cached


def _with_offset(model):
    """The residual model of ``_residual_model`` with a SigmaOffset head of random (non-zero) weights."""
    from energy_utils.energy_models import GaussianResidualEnergy
    off = GaussianResidualEnergy(model.base.shape, model.base.rank, dict(widths=(8, 8, 8), emb=8), offset=True).double()
    missing, unexpected = off.load_state_dict(model.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith("offset.") for k in missing)
    torch.manual_seed(3)
    for p in off.offset.parameters():
        p.data.normal_(0, 0.3)
    return off


def test_sigma_offset_is_zero_at_initialisation_and_adds_a_sigma_only_term():
    """U = U_G + U_θ + c(Σ): the head starts at zero; once trained it changes U by a function of Σ alone, so the
    denoiser (∇_yU) is the model's without it, and its ∂c/∂log v (autograd) matches central differences of c,
    for a batch of pixel and Fourier rows (any row order)."""
    from energy_utils.energy_models import GaussianResidualEnergy, energy_and_scores
    model, _ = _residual_model()
    fresh = GaussianResidualEnergy(model.base.shape, model.base.rank, dict(widths=(8, 8, 8), emb=8), offset=True).double()
    cov = CovFamily(var_min=1e-3, var_max=10.0).sample(6, (1, 6, 6), torch.Generator().manual_seed(2), torch.float64)
    cov = DiagCov(cov.log_var, torch.tensor([True, False, False, True, False, True]))
    assert torch.count_nonzero(fresh.offset(cov)) == 0
    off = _with_offset(model)
    y = torch.rand(6, 1, 6, 6, dtype=torch.float64)
    a, b = energy_and_scores(model, y, cov), energy_and_scores(off, y, cov)
    c = off.offset(cov)
    assert c.abs().min() > 1e-3
    assert torch.allclose(b.energy, a.energy + c, atol=1e-10) and torch.allclose(off(y, cov), b.energy, atol=1e-10)
    assert torch.equal(b.grad_y, a.grad_y)
    _, gc = off.offset.grad_logvar(cov)
    assert torch.allclose(b.grad_logvar, a.grad_logvar + gc, atol=1e-10)
    h, coord = 1e-5, (0, 2, 3)
    for row in (1, 3):                                               # a pixel row, a Fourier row
        up, dn = cov.log_var.clone(), cov.log_var.clone()
        up[(row, *coord)] += h
        dn[(row, *coord)] -= h
        fd = (off.offset(DiagCov(up, cov.fourier))[row] - off.offset(DiagCov(dn, cov.fourier))[row]) / (2 * h)
        assert torch.allclose(fd, gc[(row, *coord)], rtol=1e-5, atol=1e-8)
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    assert torch.allclose(off.offset(DiagCov(cov.log_var[perm], cov.fourier[perm])), c[perm], atol=1e-12)
    with pytest.raises(ValueError, match="variance maps"):
        off.offset(DiagCov.isotropic(1.0, (1, 5, 5), dtype=torch.float64).expand_batch(2))


def test_training_the_offset_head_alone_skips_the_frozen_networks_second_derivative():
    """With every parameter but the offset head's frozen, the training loss gives gradients to the head only, and
    the same gradients whether or not the frozen network's scores keep their graph."""
    from energy_utils.score_losses import score_matching_loss
    model, x = _residual_model()
    off = _with_offset(model)
    for n, p in off.named_parameters():
        p.requires_grad_(n.startswith("offset."))
    cov = CovFamily(var_min=1e-3, var_max=10.0).sample(6, (1, 6, 6), torch.Generator().manual_seed(4), torch.float64)
    eps = cov.sample(1, torch.Generator().manual_seed(5)).double()
    loss, _ = score_matching_loss(off, x[:6], cov, dual=True, csm_weight=4.0, eps=eps)
    # every weight of the head gets a gradient; its last bias adds a constant to U, which no loss sees (the anchor
    # absorbs it), so it stays at zero
    head = [p for n, p in off.offset.named_parameters() if n != "nets.pixel.4.bias" and n != "nets.fourier.4.bias"]
    g_fast = torch.autograd.grad(loss, head)
    assert all(torch.count_nonzero(g) > 0 for g in g_fast)
    y = (x[:6] + eps).requires_grad_(True)                              # y requiring grad: the network keeps its graph
    sc = off.scores(y, cov, create_graph=True)
    assert sc.grad_y.requires_grad
    from energy_utils.score_losses import acsm_loss, adsm_loss
    slow = adsm_loss(sc.grad_y, eps, cov).mean() + 4.0 * acsm_loss(sc.grad_logvar, eps, cov).mean()
    g_slow = torch.autograd.grad(slow, head)
    assert all(torch.allclose(a, b, atol=1e-12) for a, b in zip(g_fast, g_slow))
