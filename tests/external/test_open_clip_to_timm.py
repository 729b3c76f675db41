"""external/open_clip_to_timm.py: both open_clip image-tower layouts, written out by hand from a timm CLIP ViT, come
back as that ViT's own state dict, which the timm backbone then loads; a wrong architecture is refused by key."""
from __future__ import annotations

import pytest
import timm
import torch

from common.model.state_dict_io import CheckpointError
from common.model.timm_backbone import TimmBackbone
from external.open_clip_to_timm import convert, main

ARGS = ["embed_dim=32", "depth=2", "num_heads=2"]
TINY = {"embed_dim": 32, "depth": 2, "num_heads": 2}


def timm_clip() -> dict:
    torch.manual_seed(0)
    return timm.create_model("vit_base_patch16_clip_224", pretrained=False, **TINY).state_dict()


def openai_layout(state: dict) -> dict:
    """The OpenAI CLIP / open_clip `VisionTransformer` keys of the image tower, plus a text-tower key."""
    out = {"visual.conv1.weight": state["patch_embed.proj.weight"],
           "visual.class_embedding": state["cls_token"][0, 0],
           "visual.positional_embedding": state["pos_embed"][0],
           "visual.proj": state["head.weight"].t(), "token_embedding.weight": torch.zeros(10, 4)}
    for ours, theirs in (("norm_pre", "ln_pre"), ("norm", "ln_post")):
        for p in ("weight", "bias"):
            out[f"visual.{theirs}.{p}"] = state[f"{ours}.{p}"]
    names = {"norm1": "ln_1", "norm2": "ln_2", "attn.qkv": "attn.in_proj", "attn.proj": "attn.out_proj",
             "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj"}
    for i in range(2):
        for ours, theirs in names.items():
            for p in ("weight", "bias"):
                sep = "_" if theirs == "attn.in_proj" else "."
                out[f"visual.transformer.resblocks.{i}.{theirs}{sep}{p}"] = state[f"blocks.{i}.{ours}.{p}"]
    return out


def test_openai_layout_converts_to_the_timm_state_dict():
    state = timm_clip()
    converted = convert(openai_layout(state), "vit_base_patch16_clip_224", ARGS)
    assert set(converted) == set(state)
    for key, value in state.items():
        if key != "head.bias":  # CLIP's projection has no bias: timm's converter adds zeros
            assert torch.equal(converted[key], value), key


def test_timm_tower_layout_and_the_written_file_load_into_the_backbone(tmp_path):
    state = timm_clip()
    source = tmp_path / "open_clip_model.bin"
    torch.save({f"visual.trunk.{k}": v for k, v in state.items() if not k.startswith("head.")}
               | {"visual.head.proj.weight": state["head.weight"], "text.token_embedding.weight": torch.zeros(3, 2)},
               source)
    out = main(["--checkpoint", str(source), "--model", "vit_base_patch16_clip_224", "--model-args", *ARGS,
                "--out", str(tmp_path / "clip.pth")])
    backbone = TimmBackbone("vit_base_patch16_clip_224", TINY)
    backbone.load_weights(out)
    assert torch.equal(backbone.trunk.blocks[1].mlp.fc2.weight, state["blocks.1.mlp.fc2.weight"])


def test_a_different_architecture_is_refused_by_key():
    with pytest.raises(CheckpointError, match=r"does not fit timm 'vit_base_patch16_clip_224'.*blocks\.2\."):
        convert(openai_layout(timm_clip()), "vit_base_patch16_clip_224", ["embed_dim=32", "depth=3", "num_heads=2"])
    with pytest.raises(CheckpointError, match="no image tower keys"):
        convert({"token_embedding.weight": torch.zeros(2)}, "vit_base_patch16_clip_224", ARGS)
