"""The GPU path's switches on a built module: packed sequences padded to a multiple of 8 (TRAIN.PAD_TO_MULTIPLE_OF)
and torch.compile per transformer layer (TRAIN.COMPILE_LAYERS). Neither changes a parameter name or a random draw.

Why pad the packed sequence and not in the collate: VL-BERT packs text, objects and [END] into one sequence whose
length is computed inside the model from the masks (`pack_layout`), so padding the collated text or boxes would not
change it. With an attention mask, SDPA's memory-efficient GPU kernel wants the key length aligned (8 halves = 16
bytes) and tensor-core tiles are multiples of 8; the padding slots are masked keys, so real slots' outputs are the
same up to float summation order (tests/common/engine/test_gpu_path.py). On CPU nothing is gained: the default (0)
pads only on a GPU, so CPU runs stay bit for bit what they were.
"""
from __future__ import annotations

import logging

import torch
from torch import nn

from common.config_node import ConfigNode
from common.model.bert_encoder import BertEncoder
from common.model.vlbert import VisualLinguisticBert

log = logging.getLogger(__name__)


def pad_multiple(cfg: ConfigNode, device: torch.device) -> int:
    """TRAIN.PAD_TO_MULTIPLE_OF, with 0 meaning 8 on a GPU and 1 (no padding) elsewhere."""
    value = int(cfg.TRAIN.PAD_TO_MULTIPLE_OF)
    if value < 0:
        raise ValueError(f"TRAIN.PAD_TO_MULTIPLE_OF must be >= 0 (0 = 8 on a GPU, 1 on CPU), got {value}")
    return value or (8 if device.type == "cuda" else 1)


def set_pad_multiple(module: nn.Module, multiple: int) -> int:
    """Every VL-BERT inside `module` pads its packed sequence to `multiple`; returns how many were set."""
    found = [m for m in module.modules() if isinstance(m, VisualLinguisticBert)]
    for vlbert in found:
        vlbert.pad_to_multiple_of = int(multiple)
    return len(found)


def compile_layers(module: nn.Module) -> int:
    """`nn.Module.compile()` on every BertLayer in place: the layer stays where it is, so parameter and checkpoint
    keys do not change (torch.compile(layer) would add `_orig_mod.`). Returns the number of layers compiled."""
    count = 0
    for encoder in module.modules():
        if isinstance(encoder, BertEncoder):
            for layer in encoder.layer:
                layer.compile()
                count += 1
    return count


def apply_gpu_path(module: nn.Module, cfg: ConfigNode, device: torch.device) -> None:
    """Apply TRAIN.PAD_TO_MULTIPLE_OF and TRAIN.COMPILE_LAYERS to the plain module, before DDP / whole compile."""
    multiple = pad_multiple(cfg, device)
    if set_pad_multiple(module, multiple) and multiple > 1:
        log.info("packed VL-BERT sequences padded to a multiple of %d (TRAIN.PAD_TO_MULTIPLE_OF)", multiple)
    if bool(cfg.TRAIN.COMPILE_LAYERS):
        if bool(cfg.TRAIN.COMPILE):
            raise ValueError("TRAIN.COMPILE_LAYERS and TRAIN.COMPILE are exclusive: compile the layers or the whole "
                             "module, not both")
        log.info("TRAIN.COMPILE_LAYERS: %d transformer layers compiled separately", compile_layers(module))
