"""`swap_linear_modules(model)`: put `OneDnnLinear` (an nn.Linear whose float32 CPU matmuls run in oneDNN) in place
of every nn.Linear, at build time, sharing the same parameters (same state-dict keys, no copy, no random draw).

On CPUs where MKL's sgemm takes a slow path (measured: AMD EPYC, 2 cores: MKL ~215 GFLOP/s, oneDNN ~470 GFLOP/s for
the BERT-base shapes), this halves the matmul time of a training step. The maths is the same product; results differ
from F.linear only by float32 summation order (relative ~1e-6). Autocast, other dtypes and devices, and torch.compile
tracing take nn.Linear's own forward. NETWORK.CPU_ONEDNN_LINEAR false skips the swap.
"""
from __future__ import annotations

import functools
import logging

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable
from torch.nn import functional as F

log = logging.getLogger(__name__)


@functools.cache
def onednn_linear_available() -> bool:
    """True when this torch build has oneDNN's linear kernel and it gives F.linear's result on a small case.

    The probe tensors are fixed (not drawn from torch's global generator), so calling this never shifts the
    random stream of a run: a resumed run must draw the same dropout masks as an uninterrupted one.
    """
    op = getattr(torch.ops.mkldnn, "_linear_pointwise", None)
    if op is None or not torch.backends.mkldnn.is_available():
        return False
    try:
        x = torch.linspace(-1.0, 1.0, 24).reshape(3, 8)
        w = torch.linspace(-0.5, 0.7, 40).reshape(5, 8)
        return bool(torch.allclose(onednn_mm(x, w.t().t(), None), F.linear(x, w), atol=1e-5))
    except RuntimeError:
        return False


def onednn_mm(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """x [..., K] @ weight[N, K]^T (+ bias) -> [..., N]; strided (transposed) views of x and weight are accepted."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


class _OneDnnLinearFunction(torch.autograd.Function):
    """Forward and both backward products (input and weight gradients) in oneDNN."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return onednn_mm(x, weight, bias)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        x, weight = ctx.saved_tensors
        grad2d = grad.reshape(-1, grad.shape[-1])  # [M, N]
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = onednn_mm(grad2d, weight.t(), None).view(x.shape)  # [M, N] @ [N, K]
        if ctx.needs_input_grad[1]:
            grad_w = onednn_mm(grad2d.t(), x.reshape(-1, x.shape[-1]).t(), None)  # [N, M] @ [M, K]
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad2d.sum(0)
        return grad_x, grad_w, grad_b


def takes_onednn_path(x: Tensor, weight: Tensor) -> bool:
    """Whether OneDnnLinear runs these operands in oneDNN (float32 on CPU, no autocast, not compiling)."""
    return (x.device.type == "cpu" and x.dtype == torch.float32 and weight.dtype == torch.float32
            and x.dim() >= 2 and x.numel() > 0 and not torch.is_autocast_enabled("cpu")
            and not torch.compiler.is_compiling())


class OneDnnLinear(nn.Linear):
    """nn.Linear with the same parameters; float32 CPU inputs [..., in] run in oneDNN, anything else in F.linear."""

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> OneDnnLinear:
        """A OneDnnLinear holding `linear`'s own Parameter objects (built on the meta device: no random draw)."""
        swapped = cls(linear.in_features, linear.out_features, bias=linear.bias is not None, device="meta")
        swapped.weight = linear.weight
        swapped.bias = linear.bias
        swapped.train(linear.training)
        return swapped

    def forward(self, x: Tensor) -> Tensor:
        if takes_onednn_path(x, self.weight):
            return _OneDnnLinearFunction.apply(x, self.weight, self.bias)
        return super().forward(x)


def swap_linear_modules(model: nn.Module) -> int:
    """Replace every plain nn.Linear inside `model` by a OneDnnLinear sharing its parameters; returns the count.

    Subclasses of nn.Linear (a LoRA or quantised wrapper, say) are left alone. Module order, parameter order and
    state-dict keys are unchanged, so optimizer states and checkpoints are interchangeable with the plain model.
    """
    if not onednn_linear_available():
        log.info("oneDNN linear is not available in this torch build: nn.Linear stays as it is")
        return 0
    count = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Linear:
                setattr(parent, name, OneDnnLinear.from_linear(child))  # same slot in parent._modules: same order
                count += 1
    return count
