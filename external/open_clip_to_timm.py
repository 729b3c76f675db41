"""Convert an open_clip (or OpenAI CLIP) checkpoint's image tower into the timm key layout that NETWORK.BACKBONE /
NETWORK.IMAGE_PRETRAINED read, through timm's own converter (`vision_transformer.checkpoint_filter_fn`).

    python external/open_clip_to_timm.py --checkpoint open_clip_pytorch_model.bin \\
        --model vit_base_patch16_clip_224 --out model/pretrained_model/vit-b16-clip.pth

Both open_clip layouts are read: the OpenAI-style tower (`visual.conv1.weight`, `visual.transformer.resblocks.*`,
`visual.proj`) and the timm tower (`visual.trunk.*`). The text tower is dropped. The output is checked key by key
against the timm model before it is written (atomically); the config lines to use are printed.
"""
import argparse
import logging
from collections.abc import Mapping, Sequence

from torch import Tensor

from common.engine.checkpoint import save_atomic
from common.model.state_dict_io import CheckpointError, read_checkpoint_file, summarize_keys
from common.model.timm_backbone import TimmBackbone, parse_backbone_args, pixel_statistics

log = logging.getLogger("open_clip_to_timm")


def convert(state: Mapping[str, Tensor], model: str, model_args: Sequence[str] = (), source: str = "checkpoint"
            ) -> dict[str, Tensor]:
    """open_clip state dict -> the state dict of `timm.create_model(model)` (classifier `head.*` included)."""
    import timm
    from timm.models.vision_transformer import checkpoint_filter_fn

    reference = timm.create_model(model, pretrained=False, **parse_backbone_args(model_args))
    if not any(k.startswith(("visual.", "module.visual.")) for k in state):
        raise CheckpointError(f"{source}: no image tower keys (visual.*); found e.g. {summarize_keys(state, 6)}")
    out = checkpoint_filter_fn(dict(state), reference)
    own = reference.state_dict()
    missing = [k for k in own if k not in out]
    unexpected = [k for k in out if k not in own]
    wrong = [k for k in own if k in out and tuple(out[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        raise CheckpointError(f"{source}: the converted tower does not fit timm {model!r}; missing: "
                              f"[{summarize_keys(missing)}]; unexpected: [{summarize_keys(unexpected)}]; other "
                              f"shapes: [{summarize_keys(wrong)}] (is --model the tower's architecture?)")
    return out


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="open_clip / OpenAI CLIP weights (.bin, .pt, .safetensors)")
    parser.add_argument("--model", required=True, help="timm name of the tower, e.g. vit_base_patch16_clip_224")
    parser.add_argument("--model-args", nargs="*", default=[], help="timm.create_model arguments as name=value "
                        "(NETWORK.BACKBONE_ARGS)")
    parser.add_argument("--out", required=True, help="timm-layout weights file to write")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    state = read_checkpoint_file(args.checkpoint)
    save_atomic(convert(state, args.model, args.model_args, source=args.checkpoint), args.out)
    means, stds = pixel_statistics(TimmBackbone(args.model, parse_backbone_args(args.model_args)))
    log.info("wrote %s; config: NETWORK.BACKBONE %s, NETWORK.BACKBONE_ARGS %s, NETWORK.IMAGE_PRETRAINED %s, "
             "NETWORK.PIXEL_MEANS %s, NETWORK.PIXEL_STDS %s", args.out, args.model, list(args.model_args), args.out,
             means, stds)
    return args.out


if __name__ == "__main__":
    main()
