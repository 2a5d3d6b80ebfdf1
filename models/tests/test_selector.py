"""The class-consistent selector and the resize the element shares with training."""
import math

import numpy as np
import torch

from cachenet_train import maths
from cachenet_train.nets import ClassSectorSelector
from cachenet_train.replay import area_resize, area_weights
from cachenet_train.train import Config, class_angles


def test_area_weights_match_the_element():
    # gst-cachenet/src/frame.rs tests the same numbers.
    w = area_weights(5, 2)
    assert np.allclose(w, [[0.4, 0.4, 0.2, 0, 0], [0, 0, 0.2, 0.4, 0.4]])
    ramp = np.array([[0, 50, 100, 150, 200]], np.uint8)
    assert area_resize(ramp, 2, 1).tolist() == [[40, 160]]
    # Upscaling copies: every output pixel lies inside one input pixel.
    assert area_resize(np.array([[10, 20]], np.uint8), 4, 1).tolist() == [[10, 10, 20, 20]]


def test_class_angles_put_each_group_in_its_sector():
    cfg = Config(k=4)
    groups = [[0, 2, 3, 4, 6], [1], [5, 7, 9], [8]]
    ang = class_angles(cfg, groups, 10)
    width = 2 * math.pi / cfg.k
    for k, grp in enumerate(groups):
        for c in grp:
            # within +-0.1 sector widths of the midpoint (eq 11)
            assert abs(ang[c] - width * (k + 0.5)) <= 0.1 * width + 1e-9
    sel = ClassSectorSelector(ang)
    onehot = torch.eye(10)[:, :, None, None]
    theta = maths.noisy_angle_eq10(maths.angle_eq9(sel(onehot).double()))
    chosen = maths.soft_code_eq12(theta, cfg.k, cfg.sigma).argmax(1).tolist()
    want = [next(k for k, g in enumerate(groups) if c in g) for c in range(10)]
    assert chosen == want
    # A frame the full model splits between two classes of one group stays in that group's
    # sector.
    p = torch.zeros(1, 10, 1, 1)
    p[0, 5], p[0, 9] = 0.5, 0.5
    theta = maths.noisy_angle_eq10(maths.angle_eq9(sel(p).double()))
    assert int(maths.soft_code_eq12(theta, cfg.k, cfg.sigma).argmax()) == 2
