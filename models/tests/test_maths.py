"""Each equation of section 4 against hand-computed values."""
import math

import pytest
import torch

from cachenet_train import maths

PI = math.pi


def t(*v):
    """A float64 tensor; a single number gives a 0-d tensor."""
    return torch.tensor(v[0] if len(v) == 1 else v, dtype=torch.float64)


def test_eq9_every_branch():
    z = t([1, 1], [-1, 1], [-1, 0], [-1, -1], [0, 2], [0, -2], [0, 0], [1, 0])
    want = [PI / 4, 3 * PI / 4, PI, -3 * PI / 4, PI / 2, -PI / 2, 0.0, 0.0]
    assert maths.angle_eq9(z).tolist() == pytest.approx(want)


def test_eq9_matches_atan2_off_axes():
    a = torch.linspace(-3.1, 3.1, 97, dtype=torch.float64)
    z = torch.stack([a.cos(), a.sin()], 1) * 2
    assert torch.allclose(maths.angle_eq9(z), torch.atan2(z[:, 1], z[:, 0]))


def test_eq10_mod_two_pi_and_noise():
    th = t(-PI / 2, 0.0, 3 * PI)
    assert maths.noisy_angle_eq10(th).tolist() == pytest.approx([3 * PI / 2, 0.0, PI])
    g = torch.Generator().manual_seed(0)
    noisy = maths.noisy_angle_eq10(torch.zeros(1000, dtype=torch.float64), 0.1, g)
    assert (noisy >= 0).all() and (noisy < 2 * PI).all()
    assert not torch.allclose(noisy, torch.zeros_like(noisy))


def test_eq11_midpoints():
    assert maths.midpoints_eq11(4).tolist() == pytest.approx([PI / 4, 3 * PI / 4, 5 * PI / 4, 7 * PI / 4])


def test_eq12_soft_code_hand_checked():
    c = maths.soft_code_eq12(t(0.0), 4, 0.5)
    near = math.exp(-(PI / 4) ** 2 / 0.5)
    far = math.exp(-(3 * PI / 4) ** 2 / 0.5)
    assert c.tolist() == pytest.approx([near, far, far, near])
    assert maths.soft_code_eq12(t(PI / 4), 4, 0.5)[0].item() == pytest.approx(1.0)


def test_eq13_sigma_and_paper_figure_2():
    s = maths.sigma_eq13(4, 0.3, 0.3)
    assert s == pytest.approx(0.657976, abs=1e-5)
    assert s * math.sqrt(-2 * math.log(0.3)) == pytest.approx(PI * 1.3 / 4)
    assert (maths.soft_code_eq12(t(PI / 3), 4, s) >= 0.3).tolist() == [True, False, False, False]
    assert (maths.soft_code_eq12(t(4 * PI / 9), 4, s) >= 0.3).tolist() == [True, True, False, False]


def test_eq14_entropy():
    assert maths.entropy_eq14(torch.zeros(4)).item() == pytest.approx(math.log(4), abs=1e-6)
    logits = torch.log(t(0.5, 0.25, 0.25))
    assert maths.entropy_eq14(logits).item() == pytest.approx(1.0397208, abs=1e-6)


def test_eq15_uncertainty_code():
    u = maths.uncertainty_code_eq15(t(0.9, 0.2, 0.5), 0.3)
    assert u.tolist() == pytest.approx([0.0, 0.3, 0.0])


def test_eq16_partition():
    tau = 0.3
    soft = t(1.0, 0.35, 0.1, 0.05)
    unc = t(0.0, 0.0, 0.3, 0.0)
    # c = [0.5, 0.175, 0.2, 0.025] -> c >= 0.15: {0, 1, 2}
    assert maths.partition_eq16(soft, unc, tau).tolist() == [True, True, True, False]
    # never empty, even with tiny soft codes
    assert maths.partition_eq16(t(0, 0, 0, 0), t(0, 0, 0, 0.3), tau).tolist() == [False, False, False, True]


def test_kl_and_mmd():
    mu, lv = torch.zeros(8, 3), torch.zeros(8, 3)
    assert maths.kl_standard_normal(mu, lv).item() == pytest.approx(0.0)
    # KL(N(1, 1) || N(0, 1)) = 1/2 per dim
    assert maths.kl_standard_normal(torch.ones(2, 3), torch.zeros(2, 3)).item() == pytest.approx(1.5)
    a = torch.randn(200, 2, generator=torch.Generator().manual_seed(1))
    assert maths.mmd_rbf(a, a).item() == pytest.approx(0.0, abs=1e-6)
    assert maths.mmd_rbf(a, a + 3).item() > 0.1
