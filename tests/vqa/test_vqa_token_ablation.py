"""bench/vqa_token_ablation.py (docs/VISUAL_FRONTENDS.md quotes its figures): `whole_image_only` equals feeding the
module batches whose other boxes were removed, `whole_image_zeroed` zeroes box 0's feature only, and the script's
`all` row is the module's plain val SoftAcc."""
from __future__ import annotations

from collections import defaultdict

import torch
from vqa_fixtures import TOY_CFG, tiny_overrides

from bench.vqa_token_ablation import ablate, main, soft_accuracy_by_type
from common.data.loader import make_loader
from common.model.visual_frontend import VisualFeatures
from vqa.task import TASK, build_vqa_dataset


def test_ablate_by_hand():
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]]).bool()
    regions = VisualFeatures(obj_reps=torch.arange(24.0).view(2, 3, 4), box_mask=mask, boxes=torch.zeros(2, 3, 4))
    only = ablate(regions, "whole_image_only")
    assert only.box_mask.tolist() == [[True, False, False], [True, False, False]]
    assert only.obj_reps[:, 1:].abs().sum() == 0 and torch.equal(only.obj_reps[:, 0], regions.obj_reps[:, 0])
    zeroed = ablate(regions, "whole_image_zeroed")
    assert zeroed.obj_reps[:, 0].abs().sum() == 0 and torch.equal(zeroed.obj_reps[:, 1:], regions.obj_reps[:, 1:])
    assert torch.equal(regions.obj_reps, torch.arange(24.0).view(2, 3, 4))  # the input is left as it was
    assert ablate(regions, "all") is regions


def test_the_script_against_the_module_on_edited_batches(vqa_tiny_cfg, vqa_toy_root, vqa_vocab_only_dir, tmp_path):
    cfg = vqa_tiny_cfg()
    torch.manual_seed(0)
    module = TASK.build_module(cfg).eval()
    ckpt = tmp_path / "tiny.model"
    torch.save({"state_dict": {f"module.{k}": v for k, v in module.state_dict().items()}}, ckpt)
    results = main(["--cfg", TOY_CFG, "--ckpt", str(ckpt), *tiny_overrides(vqa_vocab_only_dir, vqa_toy_root)])

    dataset = build_vqa_dataset(cfg, "val")
    scores, changed = [], 0
    encode = module.encode_regions
    with torch.no_grad():
        for batch in make_loader(dataset, cfg, "val", None):
            plain = module(batch)["label_logits"]
            rows = torch.arange(len(plain))
            scores += batch["answer_scores"][rows, plain.argmax(1)].tolist()
            boxes = batch["boxes"].clone()
            boxes[:, 1:] = -2.0  # every box but the whole image removed, as padding
            edited = module(dict(batch, boxes=boxes))["label_logits"]
            module.encode_regions = lambda b, m=None: ablate(encode(b, m), "whole_image_only")
            try:
                ablated = module(batch)["label_logits"]
            finally:
                module.encode_regions = encode
            torch.testing.assert_close(ablated, edited)
            changed += int((ablated - plain).abs().amax(1).gt(1e-4).sum())
    assert changed > 0  # the other boxes do change this model's outputs
    assert abs(results["all"]["all"] - sum(scores) / len(scores)) < 1e-9
    assert set(results) == {"all", "whole_image_only", "whole_image_zeroed"}
    assert set(results["all"]) >= {"all", "yes/no"}
    types = defaultdict(lambda: "any")
    again = soft_accuracy_by_type(module, make_loader(dataset, cfg, "val", None), types, dataset.question_id, "all")
    assert again["all"] == again["any"] == results["all"]["all"]
    assert module.encode_regions == encode  # the ablation hook is removed afterwards
