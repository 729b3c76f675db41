"""`linear(x, weight, bias)`: F.linear, except float32 on CPU, where forward and both backward matmuls run in oneDNN.

On CPUs where MKL's sgemm takes a slow path (measured: AMD EPYC, 2 cores: MKL ~215 GFLOP/s, oneDNN ~470 GFLOP/s for
the BERT-base shapes), this halves the matmul time of a training step. The maths is the same product; results differ
from F.linear only by float32 summation order (relative ~1e-6). Autocast, other dtypes and devices, torch.compile
tracing, or `set_onednn_linear(False)` take the plain F.linear path.
"""
from __future__ import annotations

import functools
import os

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable
from torch.nn import functional as F

_enabled = os.environ.get("VLBERT_ONEDNN_LINEAR", "1") != "0"


def set_onednn_linear(enabled: bool) -> None:
    """Switch the oneDNN CPU path on or off for the whole process (env VLBERT_ONEDNN_LINEAR=0 starts it off)."""
    global _enabled
    _enabled = bool(enabled)


@functools.cache
def onednn_linear_available() -> bool:
    """True when this torch build has oneDNN's linear kernel and it gives F.linear's result on a small case."""
    op = getattr(torch.ops.mkldnn, "_linear_pointwise", None)
    if op is None or not torch.backends.mkldnn.is_available():
        return False
    try:
        x, w = torch.randn(3, 8), torch.randn(5, 8)
        return bool(torch.allclose(_onednn_mm(x, w.t().t(), None), F.linear(x, w), atol=1e-5))
    except RuntimeError:
        return False


def _onednn_mm(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """x [..., K] @ weight[N, K]^T (+ bias); strided (transposed) views of x and weight are accepted."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


class _OneDnnLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return _onednn_mm(x, weight, bias)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        x, weight = ctx.saved_tensors
        grad2d = grad.reshape(-1, grad.shape[-1])  # [M, N]
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = _onednn_mm(grad2d, weight.t(), None).view(x.shape)  # [M, N] @ [N, K]
        if ctx.needs_input_grad[1]:
            grad_w = _onednn_mm(grad2d.t(), x.reshape(-1, x.shape[-1]).t(), None)  # [N, M] @ [M, K]
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad2d.sum(0)
        return grad_x, grad_w, grad_b


def use_onednn(x: Tensor, weight: Tensor) -> bool:
    """Whether `linear` takes the oneDNN path for these operands."""
    return (_enabled and x.device.type == "cpu" and x.dtype == torch.float32 and weight.dtype == torch.float32
            and x.dim() >= 2 and x.numel() > 0 and not torch.is_autocast_enabled("cpu")
            and not torch.compiler.is_compiling() and onednn_linear_available())


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """F.linear(x, weight, bias) with x [..., K], weight [N, K], bias [N] -> [..., N]."""
    if use_onednn(x, weight):
        return _OneDnnLinear.apply(x, weight, bias)
    return F.linear(x, weight, bias)
