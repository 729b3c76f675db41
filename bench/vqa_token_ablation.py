"""Which visual tokens a trained VQA model reads: val SoftAcc per answer type with all tokens, with only the
whole-image token (box 0; every other box dropped from the input), and with the whole-image token's feature zeroed.

    python bench/vqa_token_ablation.py --cfg cfgs/vqa/toy_cpu_grid.yaml --ckpt <model-dir>/...-0003.model \\
        DATASET.DATASET_PATH <world>/coco DATASET.ANSWER_VOCAB_FILE <world>/coco/vqa/answers_vqa.txt ...

The checkpoint's module is built from the config (the front-end included) and run in evaluation mode on the
`VAL_IMAGE_SET` split; answer types are the annotations' `answer_type` (yes/no, number, other). docs/VISUAL_FRONTENDS.md
quotes its figures. Needs DATASET.ADD_IMAGE_AS_A_BOX (box 0 is then the whole image).
"""
from __future__ import annotations

import argparse
import dataclasses
from collections import defaultdict

import torch

from common.model.visual_frontend import VisualFeatures

MODES = ("all", "whole_image_only", "whole_image_zeroed")


def ablate(regions: VisualFeatures, mode: str) -> VisualFeatures:
    """`regions` with only box 0 left (`whole_image_only`), or box 0's feature zeroed (`whole_image_zeroed`)."""
    if mode == "all":
        return regions
    if mode == "whole_image_only":
        keep = torch.zeros_like(regions.box_mask)
        keep[:, 0] = regions.box_mask[:, 0]
        return dataclasses.replace(regions, box_mask=keep, obj_reps=regions.obj_reps * keep.unsqueeze(-1))
    if mode == "whole_image_zeroed":
        obj_reps = regions.obj_reps.clone()
        obj_reps[:, 0] = 0
        return dataclasses.replace(regions, obj_reps=obj_reps)
    raise ValueError(f"unknown mode {mode!r}; choose one of {MODES}")


def soft_accuracy_by_type(module, loader, answer_types: dict[int, str], question_id, mode: str) -> dict[str, float]:
    """Mean VQA soft score of the argmax answer, overall and per answer type, with the tokens ablated by `mode`."""
    encode = module.encode_regions
    module.encode_regions = lambda batch, mask_embedding=None: ablate(encode(batch, mask_embedding), mode)
    scores = defaultdict(list)
    try:
        with torch.no_grad():
            for batch in loader:
                logits = module(batch)["label_logits"]
                got = batch["answer_scores"][torch.arange(len(logits)), logits.argmax(1)]
                for index, score in zip(batch["index"].tolist(), got.tolist(), strict=True):
                    scores["all"].append(score)
                    scores[answer_types[question_id(index)]].append(score)
    finally:
        module.encode_regions = encode
    return {key: sum(v) / len(v) for key, v in sorted(scores.items())}


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cfg", required=True)
    parser.add_argument("--ckpt", required=True, help="a checkpoint written by vqa/train_end2end.py")
    parser.add_argument("opts", nargs="*", help="KEY VALUE config overrides")
    args = parser.parse_args(argv)

    from common.config import load_config
    from common.data.loader import make_loader
    from common.engine.evaluate import load_module_for_inference
    from vqa.details import annotation_types
    from vqa.task import TASK, build_vqa_dataset

    cfg = load_config(args.cfg, list(args.opts), add_task_defaults=TASK.add_defaults)
    if not cfg.DATASET.ADD_IMAGE_AS_A_BOX:
        raise ValueError(f"{args.cfg}: DATASET.ADD_IMAGE_AS_A_BOX is false, so box 0 is not the whole image")
    module = load_module_for_inference(TASK, cfg, args.ckpt)
    dataset = build_vqa_dataset(cfg, "val")
    answer_types = {qid: types["answer_type"] for qid, types in annotation_types(dataset).items()}
    loader = make_loader(dataset, cfg, "val", None)
    results = {mode: soft_accuracy_by_type(module, loader, answer_types, dataset.question_id, mode) for mode in MODES}
    keys = list(results["all"])
    print("| tokens | " + " | ".join(keys) + " |")
    print("|---" * (len(keys) + 1) + "|")
    for mode, row in results.items():
        print(f"| {mode} | " + " | ".join(f"{row[k]:.3f}" for k in keys) + " |")
    return results


if __name__ == "__main__":
    main()
