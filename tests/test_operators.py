"""Measurement operators: orthonormal columns (MᵀM = I), exact projectors ((MMᵀ)² = MMᵀ), adjointness; explicit
forms (given mask, box, basis, frequencies); one counting rule; the released variants and how they differ."""
import copy
import math

import pytest
import torch

from energy_utils import operators as O


def _g(seed=0):
    return torch.Generator().manual_seed(seed)


def _ops(shape=(1, 24, 24)):
    g = _g()
    mask = torch.rand(2, 6, 5, generator=_g(3)) < 0.4
    U = torch.linalg.qr(torch.randn(3 * 4 * 4, 10, generator=_g(4), dtype=torch.float64)).Q
    return [O.BlockInpainting(shape), O.RandomPixels(shape, 0.2, g), O.BlockAverageSR(shape, 4),
            O.SpectralLowPass(shape, 0.1), O.CompressiveSensing(shape, 0.25, generator=g),
            O.CompressiveSensing((2, 32, 48), 0.2, block=16, generator=g), O.SpectralLowPass((3, 15, 16), 0.2),
            O.SpectralLowPass((1, 20, 20), 0.15),                                      # with a half pair
            O.SpectralLowPass((2, 12, 10), frequencies=[(0, 0), (1, 2), (-1, -2), (6, 0)]),
            O.RandomPixels(mask=mask), O.BlockInpainting((2, 10, 12), box=(1, 2, 3, 4)),
            O.CompressiveSensing((3, 8, 8), block=(3, 4, 4), basis=U),
            O.RandomPixels.as_released((3, 10, 10), 0.2, _g(5)),
            O.BlockInpainting.as_released((1, 60, 60), 30, 30, 20, 20),
            O.CompressiveSensing.as_released((3, 6, 6), 0.3, _g(6)),
            O.LinearConstraints((2, 1, 12), torch.randn(24, 5, generator=_g(7)))]


@pytest.mark.parametrize("op", _ops(), ids=lambda o: f"{type(o).__name__}{o.shape}m{o.m}")
def test_orthonormal_columns_and_projector(op):
    err = O.orthonormality_errors(op, n_probe=3, generator=_g(1))
    assert err["MtM_identity"] < 1e-12
    assert err["projector_idempotent"] < 1e-12
    assert err["adjoint"] < 1e-12


@pytest.mark.parametrize("op", _ops(), ids=lambda o: f"{type(o).__name__}{o.shape}m{o.m}")
def test_batched_equals_one_image_at_a_time_and_to_moves_every_tensor(op):
    x = torch.randn(3, *op.shape, dtype=torch.float64)
    v = torch.randn(3, op.m, dtype=torch.float64)
    assert torch.allclose(op.M_T(x), torch.cat([op.M_T(x[i:i + 1]) for i in range(3)]), atol=1e-12)
    assert torch.allclose(op.M(v), torch.cat([op.M(v[i:i + 1]) for i in range(3)]), atol=1e-12)
    assert op.A(x).shape == (3, op.m) and op.A_adjoint(v).shape == (3, *op.shape)
    tensors = [k for k, t in vars(op).items() if torch.is_tensor(t)]
    moved = copy.deepcopy(op)
    assert moved.to("meta") is moved                                              # "meta": a device without data
    assert all(getattr(moved, k).device.type == "meta" for k in tensors)
    assert all(getattr(op, k).device.type == "cpu" for k in tensors)


# --- one counting rule ----------------------------------------------------------------------------------------
def test_counting_rule_rounds_half_up_and_measures_at_least_one():
    assert O.n_measurements(0.2, 784) == 157                    # 156.8
    assert O.n_measurements(0.5, 3) == 2 and O.n_measurements(0.3, 5) == 2      # ties go up, despite 0.3 < 3/10
    assert O.n_measurements(0.25, 10) == 3 and O.n_measurements(0.24, 10) == 2
    assert O.n_measurements(1e-6, 10) == 1 and O.n_measurements(1, 17) == 17


@pytest.mark.parametrize("shape,p,m", [((1, 28, 28), 0.2, 157), ((1, 20, 20), 0.15, 60), ((1, 15, 16), 0.3, 72)])
def test_every_operator_measures_the_same_m_for_the_same_fraction(shape, p, m):
    ops = [O.RandomPixels(shape, p, _g()), O.CompressiveSensing(shape, p, generator=_g()), O.SpectralLowPass(shape, p)]
    assert [op.m for op in ops] == [m] * 3 == [O.n_measurements(p, math.prod(shape))] * 3


def test_rule_applies_per_channel_for_the_low_pass_and_per_block_for_blocked_cs():
    assert O.SpectralLowPass((3, 28, 28), 0.2).m == 3 * 157
    assert O.CompressiveSensing((3, 32, 32), 0.2, block=16, generator=_g()).m == 3 * 4 * O.n_measurements(0.2, 256)
    assert O.RandomPixels((3, 28, 28), 0.2, _g()).m == O.n_measurements(0.2, 3 * 784)          # 470 ≠ 3·157


# --- explicit forms ---------------------------------------------------------------------------------------------
def test_random_pixels_with_a_given_mask_measures_exactly_those_entries():
    mask = torch.rand(3, 7, 9, generator=_g(2)) < 0.3
    op = O.RandomPixels(mask=mask)
    x = torch.randn(2, 3, 7, 9)
    assert op.m == int(mask.sum()) and torch.equal(op.mask, mask)
    assert torch.equal(op.M_T(x), x[:, mask])                                      # row-major order
    assert torch.equal(op.project(x), x * mask)
    hw = torch.rand(7, 9, generator=_g(3)) < 0.5                                   # (H, W): every channel
    assert torch.equal(O.RandomPixels((3, 7, 9), mask=hw).mask, hw.expand(3, 7, 9))
    assert torch.equal(O.RandomPixels(mask=mask.int()).mask, mask)


def test_random_pixels_is_seeded_and_the_released_count_is_the_floor():
    a, b = O.RandomPixels((1, 28, 28), 0.2, _g(7)), O.RandomPixels((1, 28, 28), 0.2, _g(7))
    assert torch.equal(a.mask, b.mask)
    r = O.RandomPixels.as_released((1, 28, 28), 0.2, _g(7))
    assert r.m == 156 == int(0.2 * 784) and a.m == 157
    assert not (r.mask & ~a.mask).any()                                            # same permutation, one fewer
    assert O.RandomPixels.as_released((3, 10, 10), 0.2, _g()).m == 60


def test_block_inpainting_centred_by_default_explicit_box_and_mask():
    op = O.BlockInpainting((1, 28, 28))
    top, left, h, w = op.block
    assert (h, w) == (9, 9) and top == left == 9 and 28 - (top + h) == 10     # centred; the odd row goes below
    assert O.BlockInpainting((1, 60, 60)).block == (20, 20, 20, 20)              # KS2021's demo: 20×20 in 60×60
    assert O.BlockInpainting((1, 28, 28), hole=0.4).block == (8, 8, 11, 11)
    assert O.BlockInpainting((1, 29, 28)).block == (9, 9, 10, 9)                 # h = round(29/3), ⌊(29 − 10)/2⌋
    box = O.BlockInpainting((2, 12, 12), box=(2, 3, 4, 5))
    assert torch.equal(box.mask, O.BlockInpainting((2, 12, 12), 2, 3, 4, 5).mask)
    assert box.m == 2 * (144 - 20) and not box.mask[:, 2:6, 3:8].any() and box.mask.sum() == box.m
    from_mask = O.BlockInpainting(mask=box.mask)
    assert from_mask.block == (2, 3, 4, 5) and torch.equal(from_mask.mask, box.mask)
    assert O.BlockInpainting((2, 12, 12), mask=box.mask[0]).block == (2, 3, 4, 5)


def test_block_inpainting_as_released_is_centred_at_x0_y0_with_even_size():
    r = O.BlockInpainting.as_released((1, 60, 60), 30, 30, 20, 20)
    assert r.block == (20, 20, 20, 20) and torch.equal(r.mask, O.BlockInpainting((1, 60, 60)).mask)
    assert O.BlockInpainting.as_released((1, 28, 28), 10, 14, 5, 7).block == (8, 11, 4, 6)   # 2⌊h/2⌋ × 2⌊w/2⌋


def test_compressive_sensing_uses_the_given_basis():
    U = torch.linalg.qr(torch.randn(784, 40, generator=_g(1), dtype=torch.float64)).Q
    op = O.CompressiveSensing((1, 28, 28), basis=U)
    x = torch.randn(2, 1, 28, 28, dtype=torch.float64)
    assert op.m == 40 and torch.allclose(op.M_T(x), x.flatten(1) @ U, atol=1e-12)
    Ub = torch.linalg.qr(torch.randn(16, 5, generator=_g(2), dtype=torch.float64)).Q
    blk = O.CompressiveSensing((1, 8, 8), block=4, basis=Ub)
    xb = torch.randn(1, 1, 8, 8, dtype=torch.float64)
    assert torch.allclose(blk.M_T(xb)[0, :5], xb[0, 0, :4, :4].flatten() @ Ub, atol=1e-12)   # first block
    assert torch.allclose(blk.M_T(xb)[0, 5:10], xb[0, 0, :4, 4:].flatten() @ Ub, atol=1e-12)  # its right neighbour
    assert torch.allclose(O.CompressiveSensing((1, 8, 8), block=4, basis=Ub.float()).U, Ub, atol=1e-7)


def test_compressive_sensing_as_released_is_one_dense_basis_over_all_channels():
    op = O.CompressiveSensing.as_released((3, 10, 10), 0.2, _g(1))
    assert op.U.shape == (300, 60) and op.m == 60 and op.n_blocks == 1
    x = torch.randn(2, 3, 10, 10, dtype=torch.float64)
    assert torch.allclose(op.M_T(x), x.flatten(1) @ op.U, atol=1e-12)             # Uᵀ vec(x), channels mixed
    assert O.CompressiveSensing.as_released((1, 28, 28), 0.2).m == 156


def test_spectral_low_pass_with_given_frequencies_is_the_ideal_low_pass():
    freqs = [(0, 0), (0, 1), (0, -1), (2, 3), (-2, -3), (5, 0)]                   # (5, 0): Nyquist, self-conjugate
    op = O.SpectralLowPass((2, 10, 12), frequencies=freqs)
    mask = torch.zeros(10, 12, dtype=torch.bool)
    for a, b in freqs:
        mask[a % 10, b % 12] = True
    assert torch.equal(op.mask, mask) and op.m == 2 * 6
    assert torch.equal(O.SpectralLowPass((2, 10, 12), mask=mask).mask, mask)
    x = torch.randn(3, 2, 10, 12, dtype=torch.float64)
    assert torch.allclose(op.project(x), torch.fft.ifft2(torch.fft.fft2(x) * mask).real, atol=1e-12)


def test_spectral_low_pass_keeps_exactly_n_lowest_frequencies_conjugate_symmetric():
    op = O.SpectralLowPass((1, 28, 28), 0.2)                                      # 157 = DC + 78 pairs
    m = op.mask
    assert op.half_pair.numel() == 0 and int(m.sum()) == 157
    assert torch.equal(m, torch.roll(m.flip(0, 1), shifts=(1, 1), dims=(0, 1)))    # mask[k] == mask[-k]
    f = torch.fft.fftfreq(28, dtype=torch.float64)
    r = (f[:, None] ** 2 + f[None, :] ** 2).sqrt()
    assert r[m].max() <= r[~m].min() + 1e-12                                      # a disc, ties at the rim split
    assert r[~m].min() < op.cutoff + 1e-12                                        # the rim is shared (ties)
    x = torch.randn(2, 1, 28, 28, dtype=torch.float64)
    assert torch.allclose(op.project(x), torch.fft.ifft2(torch.fft.fft2(x) * m).real, atol=1e-12)


def test_spectral_low_pass_half_pair_keeps_the_cosine_only():
    op = O.SpectralLowPass((1, 20, 20), 0.15)                                     # n = 60 = DC + 29 pairs + ½
    assert op.m == 60 and int(op.mask.sum()) == 59 and op.half_pair.numel() == 1
    k = int(op.half_pair)
    n1, n2 = torch.meshgrid(*[torch.arange(20, dtype=torch.float64)] * 2, indexing="ij")
    phase = 2 * math.pi * ((k // 20) * n1 + (k % 20) * n2) / 20
    cos, sin = torch.cos(phase).double()[None, None], torch.sin(phase).double()[None, None]
    assert torch.allclose(op.project(cos), cos, atol=1e-12)
    assert op.project(sin).abs().max() < 1e-12


def test_spectral_low_pass_as_released_rectangle_and_how_it_fails_to_be_a_projector():
    op = O.SpectralLowPass.as_released((1, 60, 60), 0.2)
    assert isinstance(op, O.ReleasedSpectralLowPass) and not isinstance(op, O.SpectralLowPass)
    assert (op.x_f, op.y_f) == (13, 13) and op.n_coefficients == 676 and op.m == 2 * 676
    assert abs(op.coefficient_fraction - 0.1878) < 1e-4                           # the demo's 18.8 %
    conj_mask = torch.roll(op.mask.flip(0, 1), shifts=(1, 1), dims=(0, 1))
    assert not torch.equal(op.mask, conj_mask) and int(op.unpaired.sum()) == 51
    w = (op.mask.double() + conj_mask.double()) / 2                              # P is this Fourier multiplier
    assert int((w == 0.5).sum()) == 102 and set(w.unique().tolist()) == {0.0, 0.5, 1.0}
    x = torch.randn(4, 1, 60, 60, dtype=torch.float64, generator=_g(1))
    Px = op.project(x)
    assert torch.allclose(Px, torch.fft.ifft2(torch.fft.fft2(x) * w).real, atol=1e-12)
    rel = ((op.project(Px) - Px).norm() / Px.norm()).item()                      # P² ≠ P
    expected = math.sqrt(((w ** 2 - w) ** 2).sum() / (w ** 2).sum())             # white-noise value, 0.099
    assert 0.08 < rel < 0.12 and abs(expected - 0.099) < 1e-3
    n1, n2 = torch.meshgrid(*[torch.arange(60, dtype=torch.float64)] * 2, indexing="ij")
    cos = torch.cos(2 * math.pi * 47 * n1 / 60).double()[None, None]             # row 47 kept, row 13 dropped
    assert torch.allclose(op.project(cos), cos / 2, atol=1e-12)                  # eigenvalue ½
    err = O.orthonormality_errors(op, n_probe=3, generator=_g(2))
    assert err["adjoint"] < 1e-12 and err["MtM_identity"] > 0.1 and err["projector_idempotent"] > 0.05
    xc = op.M_T(x)                                                               # the exact pseudo-inverse
    assert torch.allclose(op.M_T(op.pseudo_inverse(xc)), xc, atol=1e-12)
    assert not torch.allclose(op.M_T(op.M(xc)), xc, atol=1e-3)


def test_released_spectral_measurements_are_the_masked_spectrum():
    op = O.ReleasedSpectralLowPass((2, 28, 28), 0.2)
    assert (op.x_f, op.y_f, op.n_coefficients) == (6, 6, 2 * 144)
    x = torch.randn(1, 2, 28, 28, dtype=torch.float64)
    X = torch.fft.fft2(x, norm="ortho")[:, :, op.mask]
    v = op.M_T(x).view(1, 2, 2, 144)
    assert torch.allclose(v[:, :, 0], X.real) and torch.allclose(v[:, :, 1], X.imag)
    ref = torch.fft.ifft2(torch.fft.fft2(x, norm="ortho") * op.mask, norm="ortho").real
    assert torch.allclose(op.M(op.M_T(x)), ref, atol=1e-12)                       # the released Re IFFT


# --- unchanged behaviour --------------------------------------------------------------------------------------
def test_block_average_measures_block_means_and_counts():
    op = O.BlockAverageSR((1, 8, 8), 4)
    x = torch.arange(64, dtype=torch.float64).view(1, 1, 8, 8)
    assert torch.allclose(op.low_resolution(op.M_T(x)), torch.nn.functional.avg_pool2d(x, 4))
    assert op.m == 4 and O.RandomPixels((1, 10, 10), 0.3).m == 30


def test_tv_baseline_is_consistent_and_better_than_pseudo_inverse():
    x = torch.zeros(2, 1, 24, 24)
    x[:, :, 6:18, 6:18] = 1.0                                                     # piecewise constant
    op = O.BlockInpainting((1, 24, 24), h=6, w=6)
    xc = op.M_T(x)
    rec = O.tv_reconstruct(op, xc, n_iter=200)
    assert (op.M_T(rec) - xc).abs().max() < 1e-5
    assert (rec - x).pow(2).mean() < 0.5 * (op.M(xc) - x).pow(2).mean()


# --- errors -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("p", [0.0, -0.1, 1.5, float("nan"), True, "0.2"])
def test_fraction_outside_unit_interval_is_rejected(p):
    for make in (lambda: O.RandomPixels((1, 8, 8), p), lambda: O.CompressiveSensing((1, 8, 8), p),
                 lambda: O.SpectralLowPass((1, 8, 8), p), lambda: O.ReleasedSpectralLowPass((1, 8, 8), p),
                 lambda: O.RandomPixels.as_released((1, 8, 8), p), lambda: O.n_measurements(p, 10)):
        with pytest.raises(ValueError, match=r"keep_fraction must be a number in \(0, 1\]"):
            make()
    with pytest.raises(ValueError, match="hole"):
        O.BlockInpainting((1, 8, 8), hole=p)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="divide"):
        O.BlockAverageSR((1, 10, 10), 4)
    with pytest.raises(ValueError, match="tile"):
        O.CompressiveSensing((1, 10, 10), 0.2, block=4)
    with pytest.raises(ValueError, match="expected images"):
        O.BlockInpainting((1, 8, 8)).M_T(torch.rand(1, 8, 8))
    with pytest.raises(ValueError, match=r"mask has shape \(1, 7, 8\), expected"):
        O.RandomPixels((1, 8, 8), mask=torch.ones(1, 7, 8, dtype=torch.bool))
    with pytest.raises(ValueError, match="boolean"):
        O.RandomPixels(mask=torch.full((1, 4, 4), 0.5))
    with pytest.raises(ValueError, match="not both"):
        O.RandomPixels((1, 4, 4), 0.5, mask=torch.ones(1, 4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="keeps no pixel"):
        O.RandomPixels(mask=torch.zeros(1, 4, 4, dtype=torch.bool))
    ring = torch.ones(1, 8, 8, dtype=torch.bool)
    ring[0, 2:6, 2:6] = False
    ring[0, 3:5, 3:5] = True
    with pytest.raises(ValueError, match="not one rectangle"):
        O.BlockInpainting(mask=ring)
    with pytest.raises(ValueError, match="does not fit"):
        O.BlockInpainting((1, 8, 8), box=(5, 0, 4, 2))
    with pytest.raises(ValueError, match="not both"):
        O.BlockInpainting((1, 8, 8), 1, box=(0, 0, 2, 2))
    with pytest.raises(ValueError, match="not orthonormal"):
        O.CompressiveSensing((1, 4, 4), basis=torch.randn(16, 3, generator=_g()))
    with pytest.raises(ValueError, match=r"n_b = 16"):
        O.CompressiveSensing((1, 4, 4), basis=torch.eye(9)[:, :3])
    with pytest.raises(ValueError, match="exactly one"):
        O.CompressiveSensing((1, 4, 4))
    with pytest.raises(ValueError, match=r"not conjugate-symmetric: \(1, 2\) is kept"):
        O.SpectralLowPass((1, 8, 8), frequencies=[(0, 0), (1, 2)])
    with pytest.raises(ValueError, match="exactly one"):
        O.SpectralLowPass((1, 8, 8), 0.2, frequencies=[(0, 0)])
    with pytest.raises(ValueError, match=r"shape \(H, W\)"):
        O.SpectralLowPass((1, 8, 8), mask=torch.ones(8, 7, dtype=torch.bool))


def test_linear_constraints_enforce_the_given_values_and_reject_dependent_vectors():
    """Observed points plus a conserved total: the projected sampler's data-consistency step M x_c + (I − MMᵀ)x
    lands on the given values, computed from the constraint values alone."""
    shape = (1, 4, 6)
    x = torch.randn(3, *shape, dtype=torch.float64, generator=_g(8))
    points = torch.zeros(3, *shape, dtype=torch.float64)
    points[0, 0, 1, 2] = points[1, 0, 3, 5] = 1.0
    points[2] = 1.0                                                   # the total
    op = O.LinearConstraints(shape, points)
    c = op.constraint_values(x)
    assert torch.allclose(c[:, 2], x.flatten(1).sum(1))
    assert torch.allclose(op.measurements(c), op.M_T(x))
    z = torch.randn(3, *shape, dtype=torch.float64, generator=_g(9))
    consistent = z - op.project(z) + op.M(op.measurements(c))
    assert torch.allclose(op.constraint_values(consistent), c)
    with pytest.raises(ValueError, match="linearly dependent"):
        O.LinearConstraints(shape, torch.stack([points[0], points[1], points[0] + points[1]]))
    with pytest.raises(ValueError, match="constraint images"):
        O.LinearConstraints(shape, torch.randn(5, 3))


def test_linear_constraints_can_drop_constraints_implied_by_the_others():
    """Block averages plus 'all row sums equal': the differences between block rows are implied by the averages,
    so they are dropped, and the constraint values still map to the right measurements."""
    shape = (1, 4, 4)
    x = torch.randn(2, *shape, dtype=torch.float64, generator=_g(10))
    x = x - x.sum(-1, keepdim=True) / 4 + 0.3                    # every row sums to 1.2: a conserved total
    blocks = torch.zeros(4, *shape, dtype=torch.float64)
    for b, (i, j) in enumerate([(0, 0), (0, 2), (2, 0), (2, 2)]):
        blocks[b, 0, i:i + 2, j:j + 2] = 0.25
    rows = torch.zeros(3, *shape, dtype=torch.float64)
    for t in range(1, 4):
        rows[t - 1, 0, t] = 1.0
        rows[t - 1, 0, 0] = -1.0
    vectors = torch.cat([blocks, rows])
    with pytest.raises(ValueError, match="linearly dependent"):
        O.LinearConstraints(shape, vectors)
    op = O.LinearConstraints(shape, vectors, drop_dependent=True)
    assert op.kept.tolist() == [0, 1, 2, 3, 4, 5] and op.m == 6     # row 3 − row 0 follows from the rest
    c = op.constraint_values(x)
    assert torch.allclose(op.measurements(c), op.M_T(x))
    assert O.orthonormality_errors(op, n_probe=2, generator=_g(11))["MtM_identity"] < 1e-12


def test_make_consistent_keeps_the_free_part_and_sets_the_measured_part():
    op = O.RandomPixels((1, 6, 6), 0.3, _g(12))
    x = torch.randn(2, 1, 6, 6, dtype=torch.float64, generator=_g(13))
    v = torch.randn(2, op.m, dtype=torch.float64, generator=_g(14))
    y = op.make_consistent(x, v)
    assert torch.allclose(op.M_T(y), v)
    assert torch.allclose(y - op.project(y), x - op.project(x))


def test_image_gradient_and_divergence_are_adjoint_and_give_the_tv_gradient():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 1, 7, 9, generator=g, dtype=torch.float64)
    px, py = O.image_gradient(torch.randn(3, 1, 7, 9, generator=g, dtype=torch.float64))   # last col/row zero
    gx, gy = O.image_gradient(x)
    lhs = (gx * px).sum() + (gy * py).sum()
    assert torch.allclose(lhs, -(x * O.image_divergence(px, py)).sum(), atol=1e-10)
    eps = 0.05
    xr = x.clone().requires_grad_(True)
    dx, dy = O.image_gradient(xr)
    torch.sqrt(dx ** 2 + dy ** 2 + eps ** 2).sum().backward()
    assert torch.allclose(O.tv_gradient(x, eps), xr.grad, atol=1e-10)


def test_circular_gaussian_blur_is_a_symmetric_circular_convolution():
    A1 = O.circular_gaussian_blur((16,), 1.0)
    k = torch.arange(16, dtype=torch.float64)
    row = torch.exp(-0.5 * torch.minimum(k, 16 - k) ** 2)
    row = row / row.sum()
    assert torch.allclose(A1, torch.stack([torch.roll(row, i) for i in range(16)]))
    A = O.circular_gaussian_blur((1, 6, 8), 0.7)
    assert torch.allclose(A, A.T) and torch.allclose(A.sum(1), torch.ones(48, dtype=torch.float64))
    x = torch.randn(2, 1, 6, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    kern = torch.outer(O.circular_gaussian_blur((6,), 0.7)[0], O.circular_gaussian_blur((8,), 0.7)[0])
    conv = torch.fft.ifft2(torch.fft.fft2(x) * torch.fft.fft2(kern)).real       # circular convolution
    assert torch.allclose((x.reshape(2, -1) @ A.T).reshape(x.shape), conv, atol=1e-12)
    with pytest.raises(ValueError, match="std"):
        O.circular_gaussian_blur((16,), 0.0)
    with pytest.raises(ValueError, match=r"\(d,\) for 1-D signals or \(C, H, W\)"):
        O.circular_gaussian_blur((4, 4), 1.0)
