"""Measurement operators: orthonormal columns (MᵀM = I), exact projectors ((MMᵀ)² = MMᵀ), adjointness."""
import pytest
import torch

from energy_utils import operators as O


def _ops(shape=(1, 24, 24)):
    g = torch.Generator().manual_seed(0)
    return [O.BlockInpainting(shape), O.RandomPixels(shape, 0.2, g), O.BlockAverageSR(shape, 4),
            O.SpectralLowPass(shape, 0.1), O.CompressiveSensing(shape, 0.25, generator=g),
            O.CompressiveSensing((2, 32, 48), 0.2, block=16, generator=g), O.SpectralLowPass((3, 15, 16), 0.2)]


@pytest.mark.parametrize("op", _ops(), ids=lambda o: type(o).__name__)
def test_orthonormal_columns_and_projector(op):
    err = O.orthonormality_errors(op, n_probe=3, generator=torch.Generator().manual_seed(1))
    assert err["MtM_identity"] < 1e-12
    assert err["projector_idempotent"] < 1e-12
    assert err["adjoint"] < 1e-12


def test_spectral_mask_is_conjugate_symmetric_and_low_pass():
    op = O.SpectralLowPass((1, 20, 20), 0.15)
    m = op.mask
    assert torch.equal(m, torch.roll(m.flip(0, 1), shifts=(1, 1), dims=(0, 1)))  # mask[k] == mask[-k]
    assert abs(op.fraction - 0.15) < 0.03
    x = torch.randn(2, 1, 20, 20, dtype=torch.float64)
    ref = torch.fft.ifft2(torch.fft.fft2(x) * m).real                             # the ideal low-pass
    assert torch.allclose(op.project(x), ref, atol=1e-12)


def test_block_average_measures_block_means_and_counts():
    op = O.BlockAverageSR((1, 8, 8), 4)
    x = torch.arange(64, dtype=torch.float64).view(1, 1, 8, 8)
    assert torch.allclose(op.low_resolution(op.M_T(x)), torch.nn.functional.avg_pool2d(x, 4))
    assert op.m == 4 and O.RandomPixels((1, 10, 10), 0.3).m == 30
    inp = O.BlockInpainting((1, 12, 12), top=2, left=3, h=4, w=5)
    assert inp.m == 144 - 20 and not inp.mask[0, 2:6, 3:8].any()


def test_tv_baseline_is_consistent_and_better_than_pseudo_inverse():
    x = torch.zeros(2, 1, 24, 24)
    x[:, :, 6:18, 6:18] = 1.0                                                     # piecewise constant
    op = O.BlockInpainting((1, 24, 24), h=6, w=6)
    xc = op.M_T(x)
    rec = O.tv_reconstruct(op, xc, n_iter=200)
    assert (op.M_T(rec) - xc).abs().max() < 1e-5
    assert (rec - x).pow(2).mean() < 0.5 * (op.M(xc) - x).pow(2).mean()


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="divide"):
        O.BlockAverageSR((1, 10, 10), 4)
    with pytest.raises(ValueError, match="tile"):
        O.CompressiveSensing((1, 10, 10), 0.2, block=4)
    with pytest.raises(ValueError, match="expected images"):
        O.BlockInpainting((1, 8, 8)).M_T(torch.rand(1, 8, 8))
    with pytest.raises(ValueError, match="keep_fraction"):
        O.SpectralLowPass((1, 8, 8), 0.0)
