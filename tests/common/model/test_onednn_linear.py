"""The oneDNN module swap keeps the plain maths and the plain model: OneDnnLinear vs F.linear (values and gradients),
QKV projections vs a hand-written reference with and without the swap, a whole layer swapped vs plain, the same
parameters and keys after the swap, and torch's global random stream untouched by the swap and its self-test."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from common.model import onednn_linear
from common.model.bert_encoder import BertLayer, BertSelfAttention
from common.model.onednn_linear import OneDnnLinear, swap_linear_modules, takes_onednn_path

needs_onednn = pytest.mark.skipif(not onednn_linear.onednn_linear_available(),
                                  reason="this torch build has no oneDNN linear kernel")


@pytest.fixture(params=["plain", "swapped"])
def attention(request) -> BertSelfAttention:
    """A small attention block as built (plain nn.Linear) and after the module swap."""
    if request.param == "swapped" and not onednn_linear.onednn_linear_available():
        pytest.skip("this torch build has no oneDNN linear kernel")
    torch.manual_seed(0)
    block = BertSelfAttention(hidden_size=16, num_heads=2, dropout=0.0)
    if request.param == "swapped":
        assert swap_linear_modules(block) == 3
    return block


def test_qkv_projections_equal_a_hand_written_reference(attention):
    hidden = torch.randn(3, 4, 16)
    query, key, value = attention.project_qkv(hidden)
    for got, proj in ((query, attention.query), (key, attention.key), (value, attention.value)):
        expected = (hidden @ proj.weight.T + proj.bias).view(3, 4, 2, 8).transpose(1, 2)
        assert got.shape == (3, 2, 4, 8)
        torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-6)


def test_qkv_gradients_reach_each_projection(attention):
    hidden = torch.randn(3, 4, 16)
    weights = torch.randn(3, 3, 2, 4, 8)  # (q, k, v) x [B, heads, L, d]: a linear functional of each
    outputs = attention.project_qkv(hidden)
    sum((w * t).sum() for w, t in zip(weights, outputs, strict=True)).backward()
    for w, proj in zip(weights, (attention.query, attention.key, attention.value), strict=True):
        w_tokens = w.transpose(1, 2).reshape(3, 4, 16)  # [B, L, h], feature = head * d + j
        # d/dW of sum(w . (x W^T + b)) = sum over tokens of w_token^T x_token
        expected_w = torch.einsum("blo,bli->oi", w_tokens, hidden)
        torch.testing.assert_close(proj.weight.grad, expected_w, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(proj.bias.grad, w_tokens.sum((0, 1)), atol=1e-5, rtol=1e-5)


@needs_onednn
@pytest.mark.parametrize("shape", [(7, 24), (2, 5, 24)])
@pytest.mark.parametrize("with_bias", [True, False])
def test_onednn_linear_matches_f_linear_values_and_gradients(shape, with_bias):
    torch.manual_seed(0)
    layer = OneDnnLinear.from_linear(nn.Linear(24, 40, bias=with_bias))
    x = torch.randn(*shape, requires_grad=True)
    upstream = torch.randn(*shape[:-1], 40)
    params = [layer.weight] + ([layer.bias] if with_bias else [])
    grads = torch.autograd.grad((layer(x) * upstream).sum(), [x, *params])
    ref_inputs = [t.detach().clone().requires_grad_() for t in (x, *params)]
    ref = F.linear(*ref_inputs)
    ref_grads = torch.autograd.grad((ref * upstream).sum(), ref_inputs)
    torch.testing.assert_close(layer(x), ref, atol=1e-5, rtol=1e-5)
    for got, expected in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_onednn_path_only_for_float32_cpu_without_autocast():
    x, weight = torch.randn(3, 8), torch.randn(5, 8)
    assert takes_onednn_path(x, weight)
    assert not takes_onednn_path(x.double(), weight.double())
    assert not takes_onednn_path(torch.randn(8), weight)  # a single vector: F.linear
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not takes_onednn_path(x, weight)
        assert OneDnnLinear.from_linear(nn.Linear(8, 5))(x).dtype == torch.bfloat16  # autocast's F.linear


@needs_onednn
def test_swapped_layer_agrees_with_the_plain_layer():
    torch.manual_seed(0)
    plain = BertLayer(32, 4, 64, "gelu", hidden_dropout=0.0, attention_dropout=0.0)
    swapped = BertLayer(32, 4, 64, "gelu", hidden_dropout=0.0, attention_dropout=0.0)
    swapped.load_state_dict(plain.state_dict())
    assert swap_linear_modules(swapped) == 6  # Q, K, V, attention output, FFN in, FFN out
    hidden = torch.randn(2, 6, 32)
    key_mask = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])[:, None, None, :]

    def run(layer: nn.Module):
        x = hidden.clone().requires_grad_()
        out, _ = layer(x, key_mask)
        out.pow(2).sum().backward()
        return out.detach(), x.grad, [p.grad for p in layer.parameters()]

    out_fast, dx_fast, dp_fast = run(swapped)
    out_ref, dx_ref, dp_ref = run(plain)
    torch.testing.assert_close(out_fast, out_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(dx_fast, dx_ref, atol=1e-5, rtol=1e-5)
    for got, expected in zip(dp_fast, dp_ref, strict=True):
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


class _Wrapped(nn.Linear):
    """Stands for a LoRA / quantised subclass of nn.Linear, which the swap must leave alone."""


@needs_onednn
def test_swap_keeps_parameters_keys_and_order_and_leaves_subclasses_alone():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Sequential(nn.Linear(8, 8, bias=False), _Wrapped(8, 2)))
    model.eval()
    params_before = list(model.named_parameters())
    keys_before = list(model.state_dict())
    assert swap_linear_modules(model) == 2
    assert [type(m) for m in (model[0], model[2][0], model[2][1])] == [OneDnnLinear, OneDnnLinear, _Wrapped]
    assert list(model.state_dict()) == keys_before
    after = list(model.named_parameters())
    assert [n for n, _ in after] == [n for n, _ in params_before]
    assert all(p is q for (_, p), (_, q) in zip(after, params_before, strict=True))  # shared, not copied
    assert model[2][0].bias is None and not model[0].training


def test_swap_and_self_test_leave_the_global_random_stream_alone():
    """A resumed run restores torch's generator from the checkpoint: anything that draws from it outside the run's
    own steps (here: the availability probe, the swap, the first oneDNN call) shifts every later dropout mask."""
    torch.manual_seed(123)
    model = nn.Sequential(nn.Linear(6, 6), nn.Linear(6, 3))
    x = torch.randn(4, 6)
    before = torch.get_rng_state()
    onednn_linear.onednn_linear_available.cache_clear()  # run the self-test again, as the first build of a process
    swap_linear_modules(model)
    model(x).sum().backward()
    assert torch.equal(torch.get_rng_state(), before)
