"""The checks that notebooks 04 and 06 assert can fail: each is computed here on a correct and on a perturbed
input (the seed's signs, a shifted arm, a non-equivariant modulation), and the perturbed one must fail it.

check (notebook)                                                        perturbation that must fail it
- corrected update is −σ²∇E of the exact energy, finite differences (06)  the seed's signs
- seed level: IREM below predict-zero / feedforward / baseline (04, 06)    an arm shifted above the reference
- equivariant modulation keeps D_a(ay) = a D_a(y) at random a (06)        the biased control
"""
import torch

from energy_utils import adaptation as ad
from energy_utils import adaptation_tasks as at
from energy_utils import denoisers, stats
from energy_utils.hybrid import central_difference_gradient
from energy_utils.networks import DenoiserCNN
from test_hybrid import setup


def finite_difference_error(seed_signs):
    """max |d + σ²∇E_fd| / |σ²∇E_fd| with ∇E_fd by central differences (notebook 06, section 1)."""
    src, energy, y, sigma2 = setup(seed_signs)
    d = src.direction(src.x, y)[0]
    grad_fd = central_difference_gradient(energy, y)
    return float(((d + sigma2 * grad_fd).norm(dim=1) / (sigma2 * grad_fd).norm(dim=1)).max())


def test_finite_difference_sign_check_fails_for_the_seed_signs():
    assert finite_difference_error(False) < 1e-6
    assert finite_difference_error(True) > 1.0


def test_seed_level_check_fails_when_the_arm_moves_above_the_reference():
    arm, reference = [0.20, 0.21, 0.19], 0.25
    iv = stats.seed_interval(arm)
    assert reference - iv.high > 0                                   # the check as notebooks 04/06 write it
    shifted = stats.seed_interval([v + 0.1 for v in arm])
    assert reference - shifted.high < 0
    noisy = stats.seed_interval([0.20, 0.30, 0.19])                 # same mean region, seed spread too large
    assert reference - noisy.high < 0


def test_equivariance_check_fails_for_the_biased_control():
    torch.manual_seed(0)
    den = DenoiserCNN(1, depth=3, width=8).eval()
    g = torch.Generator().manual_seed(0)
    images = torch.rand(4, 1, 28, 28, generator=g)
    x = at.degrade("deblur", images, torch.arange(4), g)
    y = at.initial_iterate(x, 0.3, g)
    alphas = tuple(torch.empty(3).uniform_(0.3, 3.0, generator=g).tolist())
    worst = {}
    for kind in ("equivariant", "biased"):
        src = ad.ModulatedSource(den, ad.MODULATIONS[kind](at.X_CHANNELS))
        worst[kind] = max(denoisers.scale_equivariance_error(lambda v: src.adapted(v, x), y, alphas=alphas).values())
    assert worst["equivariant"] <= 1e-4 < worst["biased"]
