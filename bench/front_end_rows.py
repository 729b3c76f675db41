"""The visual front-ends side by side in the training-step benchmark (`bench/train_step.py --front-ends ...`): the
same batch (224 x 224 images, 10 detected boxes, a 24-token question) and the same VL-BERT and VQA head, with the
object tokens from each NETWORK.VISUAL_TOKENS mode and backbone. Random weights; docs/VISUAL_FRONTENDS.md has the
figures.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from bench.models import OursVQA, Setting, vqa_config

FEATURE_STRIDE = 16
# row name -> (NETWORK.VISUAL_TOKENS, NETWORK.BACKBONE, GRID_POOL); "resnet" = the original ResNet of IMAGE_NUM_LAYERS
ROWS = {
    "regions-resnet": ("regions", "resnet", 1),
    "regions-vit": ("regions", "vit_small_patch16_224", 1),
    "grid-resnet": ("grid", "resnet", 1),
    "grid2-resnet": ("grid", "resnet", 2),
    "grid-vit": ("grid", "vit_small_patch16_224", 1),
    "patches-vit": ("patches", "vit_small_patch16_224", 1),
}


@dataclass
class FrontEndSetting(Setting):
    """A benchmark setting on images whose object tokens come from one front-end (`ROWS`)."""

    tokens: str = "regions"
    backbone: str = "resnet"
    grid_pool: int = 1
    vit_args: tuple[str, ...] = ()

    @property
    def end2end(self) -> bool:
        return True

    @property
    def boxes(self) -> int:
        """Object tokens, the whole-image one included: the boxes, or one per (pooled) cell or patch."""
        if self.tokens == "regions":
            return self.regions + 1
        side = -(-self.image_size // (FEATURE_STRIDE * self.grid_pool))
        return side * side + 1

    def build(self, which: str, setting: Setting, channels_last: bool = False, onednn_linear: bool = True) -> nn.Module:
        """VL-BERT for VQA as a training run builds it, with this row's front-end (`which` must be "ours")."""
        if which != "ours":
            raise SystemExit("--front-ends compares our front-ends: use --models ours")
        cfg = vqa_config(self, channels_last, onednn_linear).clone()
        net = cfg.NETWORK
        net.VISUAL_TOKENS, net.BACKBONE, net.GRID_POOL = self.tokens, self.backbone, self.grid_pool
        if self.backbone != "resnet":
            net.BACKBONE_ARGS = list(self.vit_args)
            net.IMAGE_FROZEN_BACKBONE_STAGES = [1, 2]  # stem + first block, as the yamls freeze stem + conv2
        return OursVQA.from_config(cfg, load_pretrained=False)


def front_end_setting(name: str, base: dict, batch: int, regions: int) -> FrontEndSetting:
    """The row `name` of `ROWS` on the sizes of `base` (an entry of train_step.SIZES; "tiny" gets a tiny ViT)."""
    tokens, backbone, pool = ROWS[name]
    vit_args = ("embed_dim=32", "depth=2", "num_heads=2") if base.get("hidden", 768) < 256 else ()
    return FrontEndSetting(name=name, batch=batch, tokens=tokens, backbone=backbone, grid_pool=pool,
                           vit_args=vit_args, **{**base, "regions": regions})


def format_front_end_table(results: list[dict], peak_rate: float, device_type: str) -> str:
    """One row per front-end: object tokens, packed length, samples/s, MFU, GFLOP/step, peak memory."""
    mem = "max_memory_allocated" if device_type == "cuda" else "peak RSS over loaded model"
    rows = [f"| front-end | VISUAL_TOKENS | BACKBONE | object tokens | L | samples/s | MFU | GFLOP/step | {mem} MiB |",
            "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        tokens, backbone, pool = ROWS[r["setting"]]
        rows.append(f"| {r['setting']} | {tokens}{f' (GRID_POOL {pool})' if pool > 1 else ''} | {backbone} | "
                    f"{r['seq_len'] - Setting.text_len - 1} | {r['seq_len']} | {r['samples_per_s']:.2f} | "
                    f"{r['flops'] / r['step_s'] / peak_rate:.3f} | {r['flops'] / 1e9:.1f} | "
                    f"{r['peak_bytes'] / 2**20:.0f} |")
    return "\n".join(rows)
