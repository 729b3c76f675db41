"""ResNet backbone against torchvision's (names, shapes, outputs), plus stride/dilation, freezing and loading."""
import pytest
import torch
import torchvision
from torch import nn

from common.model.resnet import (
    Bottleneck,
    ResNet,
    load_resnet_weights,
    resnet_spec,
    resolve_resnet_weights_path,
)
from common.model.state_dict_io import CheckpointError


def build(num_layers, **kwargs):
    block, layers = resnet_spec(num_layers)
    return ResNet(block, layers, **kwargs)


def torchvision_trunk(model):
    return nn.Sequential(*list(model.children())[:-2])  # drop avgpool + fc


@pytest.mark.parametrize("depth", [18, 50])
def test_keys_shapes_and_outputs_match_torchvision(depth):
    torch.manual_seed(0)
    reference = getattr(torchvision.models, f"resnet{depth}")(weights=None).eval()
    ours = build(depth).eval()
    ref_state = {k: v for k, v in reference.state_dict().items() if not k.startswith("fc.")}
    shapes = lambda state: {k: tuple(v.shape) for k, v in state.items()}  # noqa: E731
    assert shapes(ours.state_dict()) == shapes(ref_state)
    ours.load_state_dict(ref_state)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), torchvision_trunk(reference)(x), rtol=1e-4, atol=1e-5)


def test_stride_in_1x1_and_dilated_c5():
    caffe_style = build(50, stride_in_1x1=True, dilations=(1, 1, 1, 2))
    first = caffe_style.layer2[0]
    assert first.conv1.stride == (2, 2) and first.conv2.stride == (1, 1)
    torch_style = build(50)
    assert torch_style.layer2[0].conv1.stride == (1, 1) and torch_style.layer2[0].conv2.stride == (2, 2)
    c5 = caffe_style.layer4[1].conv2
    assert c5.dilation == (2, 2) and c5.padding == (2, 2) and caffe_style.layer4[0].downsample[0].stride == (1, 1)
    x = torch.randn(1, 3, 64, 64)
    assert caffe_style.eval()(x).shape == (1, 2048, 4, 4)  # stride 16 with a dilated C5
    assert torch_style.eval()(x).shape == (1, 2048, 2, 2)  # stride 32
    assert ResNet(Bottleneck, (3, 4, 6)).eval()(x).shape == (1, 1024, 4, 4)  # C4 only


def test_frozen_stages_and_frozen_bn_survive_an_optimizer_step():
    torch.manual_seed(0)
    model = build(18, frozen_stages=(1, 2), frozen_bn=True)
    model.train()
    assert not any(m.training for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(trainable, lr=0.1)
    model(torch.randn(2, 3, 32, 32)).square().mean().backward()
    opt.step()
    after = model.state_dict()
    for key in before:
        frozen = key.startswith(("conv1.", "bn1.", "layer1.")) or ".bn" in key or ".downsample.1." in key
        changed = not torch.equal(before[key], after[key])
        if frozen:
            assert not changed, key  # includes running_mean / running_var: BN stayed in eval mode
        elif key.endswith("weight"):
            assert changed, key


def test_channels_last_gives_the_same_output():
    torch.manual_seed(0)
    plain = build(18).eval()
    fast = build(18, channels_last=True).eval()
    fast.load_state_dict(plain.state_dict())
    x = torch.randn(1, 3, 32, 48)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), plain(x), rtol=1e-4, atol=1e-5)


def test_load_resnet_weights_formats_and_errors(tmp_path):
    state = torchvision.models.resnet18(weights=None).state_dict()
    flat = tmp_path / "resnet18-pt-test-0000.model"
    torch.save(state, flat)
    loaded = load_resnet_weights(str(flat))
    assert set(loaded) == set(state)
    assert torch.equal(loaded["layer4.1.bn2.running_var"], state["layer4.1.bn2.running_var"])
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in state.items()}}, wrapped)
    assert set(load_resnet_weights(str(wrapped))) == set(state)
    assert resolve_resnet_weights_path(str(tmp_path / "resnet18-pt-test"), 0) == str(flat)
    assert resolve_resnet_weights_path(str(wrapped), 3) == str(wrapped)
    with pytest.raises(CheckpointError, match="PREPARE_PRETRAINED_MODELS.md") as info:
        load_resnet_weights(str(tmp_path / "absent-0000.model"))
    assert "absent-0000.model" in str(info.value)
    other = tmp_path / "other.model"
    torch.save({"encoder.weight": torch.zeros(2)}, other)
    with pytest.raises(CheckpointError, match="conv1.weight"):
        load_resnet_weights(str(other))


def test_unknown_depth_names_the_key():
    with pytest.raises(ValueError, match="IMAGE_NUM_LAYERS"):
        resnet_spec(42)
