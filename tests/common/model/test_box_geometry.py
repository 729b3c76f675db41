"""Box geometry embedding against values worked out by hand with math.sin / math.cos."""
import math

import pytest
import torch

from common.model.box_geometry import box_geometry_embedding


def test_known_box_matches_hand_computed_entries():
    # box (10, 20, 50, 60) in a 200 x 100 image: xc=30, yc=40, w=40, h=40 -> p = (15, 40, 20, 40)
    emb = box_geometry_embedding(torch.tensor([[10.0, 20.0, 50.0, 60.0]]), torch.tensor([[200.0, 100.0]]))[0]
    assert emb.shape == (2048,)
    f = lambda j: 1000.0 ** (j / 256)  # noqa: E731
    expected = {
        0: math.sin(15.0),                     # xc, sin block, j = 0
        1: math.sin(15.0 / f(1)),
        256: math.cos(15.0),                   # xc, cos block, j = 0
        512 + 3: math.sin(40.0 / f(3)),        # yc
        512 + 256 + 100: math.cos(40.0 / f(100)),
        1024 + 256 + 10: math.cos(20.0 / f(10)),  # w
        1536 + 255: math.sin(40.0 / f(255)),   # h, last sin
        2047: math.cos(40.0 / f(255)),
    }
    for index, value in expected.items():
        assert emb[index].item() == pytest.approx(value, abs=2e-5), index


def test_batched_broadcast_equals_per_box_and_is_float32():
    boxes = torch.tensor([[[0.0, 0.0, 99.0, 49.0], [5.0, 6.0, 20.0, 30.0]],
                          [[0.0, 0.0, 59.0, 79.0], [1.0, 2.0, 3.0, 4.0]]]).half()
    im_wh = torch.tensor([[100.0, 50.0], [60.0, 80.0]])
    batched = box_geometry_embedding(boxes, im_wh, dim=64)
    assert batched.dtype == torch.float32 and batched.shape == (2, 2, 64)
    for b in range(2):
        for n in range(2):
            single = box_geometry_embedding(boxes[b, n].float(), im_wh[b], dim=64)
            torch.testing.assert_close(batched[b, n], single)


def test_bad_dim_raises():
    with pytest.raises(ValueError, match="multiple of 8"):
        box_geometry_embedding(torch.zeros(1, 4), torch.ones(1, 2), dim=100)
