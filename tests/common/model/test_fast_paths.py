"""The fast paths of the encoder give the plain maths: QKV projection (fused and oneDNN paths) vs a hand-written
reference, the oneDNN linear vs F.linear (values and gradients), and a whole layer with the oneDNN path on vs off."""
from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from common.model import fast_linear
from common.model.bert_encoder import BertLayer, BertSelfAttention


@pytest.fixture
def onednn_off():
    """Run a block with the oneDNN path switched off, restoring the previous state afterwards."""
    previous = fast_linear._enabled
    fast_linear.set_onednn_linear(False)
    yield
    fast_linear.set_onednn_linear(previous)


@pytest.fixture(params=["fused", "onednn"])
def qkv_path(request):
    """Run project_qkv on the fused path (oneDNN off) and on the oneDNN path (three matmuls, where available)."""
    previous = fast_linear._enabled
    fast_linear.set_onednn_linear(request.param == "onednn")
    yield request.param
    fast_linear.set_onednn_linear(previous)


def test_fused_qkv_equals_separate_projections(qkv_path):
    torch.manual_seed(0)
    attention = BertSelfAttention(hidden_size=32, num_heads=4, dropout=0.0)
    hidden = torch.randn(2, 5, 32)
    query, key, value = attention.project_qkv(hidden)
    for got, proj in ((query, attention.query), (key, attention.key), (value, attention.value)):
        expected = (hidden @ proj.weight.T + proj.bias).view(2, 5, 4, 8).transpose(1, 2)
        assert got.shape == (2, 4, 5, 8)
        torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-6)


def test_fused_qkv_gradients_reach_the_separate_parameters(qkv_path):
    torch.manual_seed(0)
    attention = BertSelfAttention(hidden_size=16, num_heads=2, dropout=0.0)
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


@pytest.mark.parametrize("shape", [(7, 24), (2, 5, 24)])
@pytest.mark.parametrize("with_bias", [True, False])
def test_linear_matches_f_linear_values_and_gradients(shape, with_bias):
    torch.manual_seed(0)
    x = torch.randn(*shape, requires_grad=True)
    weight = torch.randn(40, 24, requires_grad=True)
    bias = torch.randn(40, requires_grad=True) if with_bias else None
    upstream = torch.randn(*shape[:-1], 40)
    out = fast_linear.linear(x, weight, bias)
    grads = torch.autograd.grad((out * upstream).sum(), [x, weight] + ([bias] if with_bias else []))
    ref_inputs = [t.detach().clone().requires_grad_() for t in (x, weight)] + (
        [bias.detach().clone().requires_grad_()] if with_bias else [])
    ref = F.linear(*ref_inputs)
    ref_grads = torch.autograd.grad((ref * upstream).sum(), ref_inputs)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    for got, expected in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_linear_uses_onednn_only_for_float32_cpu(onednn_off):
    x, weight = torch.randn(3, 8), torch.randn(5, 8)
    assert not fast_linear.use_onednn(x, weight)  # switched off
    fast_linear.set_onednn_linear(True)
    assert fast_linear.use_onednn(x, weight) == fast_linear.onednn_linear_available()
    assert not fast_linear.use_onednn(x.double(), weight.double())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not fast_linear.use_onednn(x, weight)


def test_layer_with_and_without_onednn_agree():
    torch.manual_seed(0)
    layer = BertLayer(32, 4, 64, "gelu", hidden_dropout=0.0, attention_dropout=0.0)
    hidden = torch.randn(2, 6, 32)
    key_mask = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])[:, None, None, :]

    def run(enabled: bool):
        previous = fast_linear._enabled
        fast_linear.set_onednn_linear(enabled)
        try:
            layer.zero_grad(set_to_none=True)
            x = hidden.clone().requires_grad_()
            out, _ = layer(x, key_mask)
            out.pow(2).sum().backward()
            return out.detach(), x.grad, [p.grad.clone() for p in layer.parameters()]
        finally:
            fast_linear.set_onednn_linear(previous)

    out_fast, dx_fast, dp_fast = run(True)
    out_ref, dx_ref, dp_ref = run(False)
    torch.testing.assert_close(out_fast, out_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(dx_fast, dx_ref, atol=1e-5, rtol=1e-5)
    for got, expected in zip(dp_fast, dp_ref, strict=True):
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
