"""Clipping returns the pre-clip global norm and really rescales the gradients (checked by hand)."""
import torch
from torch import nn

from common.engine.amp import MixedPrecision


def test_clip_rescales_gradients_to_the_limit_and_returns_the_norm_before():
    params = [nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(1))]
    params[0].grad = torch.tensor([3.0, 0.0])
    params[1].grad = torch.tensor([4.0])  # global norm 5
    optimizer = torch.optim.SGD(params, lr=1.0)
    norm = MixedPrecision(torch.device("cpu")).unscale_and_clip(optimizer, params, clip_norm=1.0)
    assert norm.item() == 5.0
    torch.testing.assert_close(params[0].grad, torch.tensor([0.6, 0.0]), atol=1e-5, rtol=0)
    torch.testing.assert_close(params[1].grad, torch.tensor([0.8]), atol=1e-5, rtol=0)


def test_negative_clip_leaves_gradients_alone():
    param = nn.Parameter(torch.zeros(2))
    param.grad = torch.tensor([3.0, 4.0])
    norm = MixedPrecision(torch.device("cpu")).unscale_and_clip(torch.optim.SGD([param], lr=1.0), [param], -1.0)
    assert norm.item() == 5.0 and param.grad.tolist() == [3.0, 4.0]


def test_fp16_initial_scale_from_config_and_dynamic_default():
    from easydict import EasyDict

    fixed = MixedPrecision.from_config(EasyDict(TRAIN=dict(FP16=True, BF16=False, FP16_LOSS_SCALE=128.0)),
                                       torch.device("cpu"))
    dynamic = MixedPrecision.from_config(EasyDict(TRAIN=dict(FP16=True, BF16=False, FP16_LOSS_SCALE="dynamic")),
                                         torch.device("cpu"))
    assert fixed.scaler.get_scale() == 128.0 and dynamic.scaler.get_scale() == 2.0**16
    assert MixedPrecision.from_config(EasyDict(TRAIN=dict(FP16=False, BF16=True)), torch.device("cpu")).scaler is None
