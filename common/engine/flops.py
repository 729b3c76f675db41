"""Model FLOPs of a training step, counted from the shapes each step really runs, and the device's peak matmul rate:
the two figures behind MFU (model FLOPs utilisation) in the training log and in bench/.

How FLOPs are counted (bench/RESULTS.md, "FLOP count"): forward hooks, no extra forward pass and no random draw.
- A transformer stack (`BertEncoder`, or any module class named in `encoder_types`) is counted once per call from its
  input [B, L, h] and its layers' shapes: every Linear 2·B·L·in·out forward, attention 4·B·L²·h forward (QKᵀ and PV).
- Every other nn.Linear / nn.Conv2d (visual front-end, object projection, heads) from its output shape.
- Backward: +1x forward for the input gradient when the input needs one, +1x when the weight trains (so a trainable
  layer inside the net costs 6 FLOPs per multiply-add, a frozen ResNet stage only its forward).
Embedding look-ups, norms, softmax, activations, dropout and RoIAlign are not counted. Recomputation under
NETWORK.GRADIENT_CHECKPOINTING is not counted either (model FLOPs, not hardware FLOPs): the stack is counted at its
call, not per layer. Validation (no gradient) is not counted. torch.utils.flop_counter.FlopCounterMode gives the same
totals (tests/common/engine/test_flops.py) but dispatches every op through Python, so it is the tests' reference, not
the loop's counter.
"""
from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn

from common.model.bert_encoder import BertEncoder


def _unwrapped(module: nn.Module) -> nn.Module:
    """The module inside a torch.compile wrapper (TRAIN.COMPILE_LAYERS puts one around each layer)."""
    return getattr(module, "_orig_mod", module)


def _trains(module: nn.Module) -> bool:
    return any(p.requires_grad for p in module.parameters())


def stack_flops(layers: Iterable[nn.Module], hidden: Tensor) -> float:
    """Training FLOPs of one call of a layer stack on hidden [B, L, h] (grad mode), from the layers' Linear shapes."""
    batch, length, width = hidden.shape
    tokens = batch * length
    total, needs_grad = 0.0, bool(hidden.requires_grad)
    for layer in layers:
        layer = _unwrapped(layer)
        weight_trains = _trains(layer)
        needs_grad = needs_grad or weight_trains
        backward = 1 + weight_trains  # input gradient (the stack trains or its input does) + weight gradient
        for linear in layer.modules():
            if isinstance(linear, nn.Linear):
                total += 2.0 * tokens * linear.in_features * linear.out_features * (1 + backward * needs_grad)
        total += 4.0 * batch * length * length * width * (1 + 2 * needs_grad)  # QKᵀ and PV, both operands' grads
    return total


def transformer_flops(sequences: int, length: int, hidden: int, ffn: int, layers: int) -> float:
    """Training FLOPs of a trainable BERT stack on `sequences` x `length` tokens (input needing a gradient): per layer
    6·B·L·(4h² + 2hf) + 12·B·L²·h, what `stack_flops` counts for a BertEncoder (biases not counted)."""
    return layers * (6.0 * sequences * length * (4 * hidden * hidden + 2 * hidden * ffn)
                     + 12.0 * sequences * length * length * hidden)


def _module_flops(module: nn.Module, inputs: tuple, output: Tensor) -> float:
    """Training FLOPs of one nn.Linear / nn.Conv2d call, from its output shape."""
    if isinstance(module, nn.Linear):
        macs = output.numel() * module.in_features
    else:
        kh, kw = module.kernel_size
        macs = output.numel() * (module.in_channels // module.groups) * kh * kw
    input_grad = bool(inputs and isinstance(inputs[0], Tensor) and inputs[0].requires_grad)
    return 2.0 * macs * (1 + input_grad + bool(module.weight.requires_grad))


class FlopCounter:
    """Sums the training FLOPs of `model`'s forward passes while grad mode is on; `take()` reads and resets.

    Attach once, after the model is built and before it is wrapped (DDP, compile per layer). Hooks only read shapes:
    no host-device sync, no random draw.
    """

    def __init__(self, model: nn.Module, encoder_types: tuple[type, ...] = (BertEncoder,)):
        self.total = 0.0
        self._handles = []
        inside: set[int] = set()
        for module in model.modules():
            if isinstance(module, encoder_types):
                inside.update(id(m) for m in module.modules())
                self._handles.append(module.register_forward_pre_hook(self._count_stack))
        for module in model.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)) and id(module) not in inside:
                self._handles.append(module.register_forward_hook(self._count_module))

    def _count_stack(self, module: nn.Module, args: tuple) -> None:
        if torch.is_grad_enabled() and args and isinstance(args[0], Tensor) and args[0].dim() == 3:
            self.total += stack_flops(module.layer, args[0])

    def _count_module(self, module: nn.Module, inputs: tuple, output: Tensor) -> None:
        if torch.is_grad_enabled() and isinstance(output, Tensor):
            self.total += _module_flops(module, inputs, output)

    def take(self) -> float:
        """FLOPs counted since the last call."""
        total, self.total = self.total, 0.0
        return total

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


def count_step_flops(model: nn.Module, run_step: Callable[[], object],
                     encoder_types: tuple[type, ...] = (BertEncoder,)) -> float:
    """Training FLOPs of whatever `run_step()` runs through `model` (bench/: one forward of a fixed batch)."""
    counter = FlopCounter(model, encoder_types)
    try:
        with torch.enable_grad():
            run_step()
    finally:
        counter.remove()
    return counter.take()


# ----- the device's peak -------------------------------------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _kernels(device: torch.device, dtype: torch.dtype, onednn: bool) -> dict[str, Callable[[Tensor, Tensor], Tensor]]:
    kernels = {"torch.mm": lambda a, b: torch.mm(a, b.t())}
    if onednn and device.type == "cpu" and dtype == torch.float32:
        from common.model.onednn_linear import onednn_linear_available, onednn_mm

        if onednn_linear_available():
            kernels["oneDNN"] = lambda a, b: onednn_mm(a, b, None)
    return kernels


def matmul_rate(device: torch.device, dtype: torch.dtype, sizes: Iterable[int] | None = None, repeats: int = 5,
                clock: str = "wall", onednn: bool = True) -> dict[str, float]:
    """Best FLOP/s (2n³ per product) of square matmuls over `sizes` x `repeats`, per kernel: `torch.mm` (MKL /
    cuBLAS) and, for float32 on CPU with `onednn`, oneDNN (the kernel of NETWORK.CPU_ONEDNN_LINEAR).

    The operands come from a private generator: the probe never draws from torch's global one (a resumed run must
    draw the same dropout masks as an uninterrupted one). clock "cpu": process CPU time / torch threads.
    """
    threads = torch.get_num_threads()
    timer = time.perf_counter if clock == "wall" else (lambda: time.process_time() / threads)
    sizes = tuple(sizes or ((2048, 4096, 8192) if device.type == "cuda" else (2048, 4096)))
    generator = torch.Generator().manual_seed(0)
    rates = {}
    for name, kernel in _kernels(device, dtype, onednn).items():
        best = 0.0
        for n in sizes:
            a = torch.randn(n, n, generator=generator).to(device=device, dtype=dtype)
            b = torch.randn(n, n, generator=generator).to(device=device, dtype=dtype)
            kernel(a, b)
            for _ in range(repeats):
                _sync(device)
                start = timer()
                kernel(a, b)
                _sync(device)
                best = max(best, 2 * n**3 / max(timer() - start, 1e-12))
        rates[name] = best
    return rates


@functools.cache
def peak_flops_per_s(device: torch.device, dtype: torch.dtype, onednn: bool = True) -> float:
    """A short probe at the start of a run (tens of ms on a quiet CPU, a few ms on a GPU): the best kernel's FLOP/s.
    Measured once per process and device (tests run many short runs in one process)."""
    sizes = (4096, 8192) if device.type == "cuda" else (1024,)
    return max(matmul_rate(device, dtype, sizes=sizes, repeats=3, onednn=onednn).values())
