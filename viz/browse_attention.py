"""Attention maps for the results browser: each item runs once through the task's own module with the encoder asked
for its attention probabilities (forward hooks, so the task code is untouched), and `viz/attention.py`'s
`text_to_region_weights` turns the last layer (mean over heads) into one weight per box: how much the text attends
to it. VQA and RefCOCO+ items read their row; VCR items the row of the answer the model picks.

Only the first `max_items` items of a page get a map (a forward pass each); the page says which have one.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from common.config import load_config
from common.data.collate import collate_dicts
from common.engine.evaluate import load_module_for_inference, test_split_config
from viz.attention import text_to_region_weights

log = logging.getLogger("viz.browse")


def task_of(name: str):
    """The Task value of a details file's task."""
    if name == "vqa":
        from vqa.task import TASK
    elif name == "vcr":
        from vcr.task import TASK
    elif name == "refcoco":
        from refcoco.task import TASK
    else:
        raise ValueError(f"no attention maps for task {name!r} (vqa, vcr, refcoco)")
    return TASK


class AttentionCapture:
    """Hooks on a module's VL-BERT: the masks it was called with and every layer's attention probabilities."""

    def __init__(self, module: nn.Module):
        vlbert = module.vlbert
        self.masks: tuple[torch.Tensor, torch.Tensor] | None = None
        self.probs: list[torch.Tensor] | None = None
        self.handles = [
            vlbert.register_forward_pre_hook(self._masks, with_kwargs=True),
            vlbert.encoder.register_forward_pre_hook(self._ask_for_probs, with_kwargs=True),
            vlbert.encoder.register_forward_hook(self._keep_probs),
        ]

    def _masks(self, _module, args, kwargs):
        self.masks = (args[3] if len(args) > 3 else kwargs["text_mask"],
                      args[5] if len(args) > 5 else kwargs["object_mask"])

    @staticmethod
    def _ask_for_probs(_module, args, kwargs):
        if len(args) > 3:
            return (*args[:3], True, *args[4:]), kwargs
        return args, {**kwargs, "output_attention_probs": True}

    def _keep_probs(self, _module, _args, output):
        self.probs = output[1]

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()

    def region_weights(self, row: int) -> tuple[float, np.ndarray]:
        """(whole-image weight, weights of the other boxes) of batch row `row`: last layer, mean over heads."""
        text_mask, object_mask = self.masks
        num_text, num_objects = int(text_mask[row].sum()), int(object_mask[row].sum())
        attention = self.probs[-1][row].float().mean(0).numpy()
        image, boxes = text_to_region_weights(attention, num_text, num_objects - 1)
        return image, np.asarray(boxes)


class AttentionMaps:
    """`attention(items)`: adds `attention` (one weight per details box) to the first `max_items` items."""

    def __init__(self, cfg_path: str, ckpt: str, opts: Sequence[str], max_items: int = 50):
        self.cfg_path, self.ckpt, self.max_items = cfg_path, ckpt, int(max_items)
        self.opts = list(opts[1:] if opts[:1] == ["--"] else opts)

    def __call__(self, items: list[dict]) -> None:
        task = task_of(items[0]["task"])
        cfg = load_config(self.cfg_path, self.opts, add_task_defaults=task.add_defaults)
        if task.name == "vcr":
            dataset = task.build_dataset(cfg, items[0]["split"])
        else:
            dataset = task.build_dataset(test_split_config(cfg, items[0]["split"]), "test")
        module = load_module_for_inference(task, cfg, self.ckpt)
        capture = AttentionCapture(module)
        try:
            for item in items[: self.max_items]:
                with torch.no_grad():
                    outputs = module(collate_dicts([dataset[item["index"]]], dataset.PAD_RULES))
                row = int(outputs["label_logits"][0].argmax()) if task.name == "vcr" else 0
                weights = self.box_weights(task.name, dataset, item, *capture.region_weights(row))
                if weights is None:
                    log.warning("item %s: the model saw other boxes than the details list; no attention map",
                                item["index"])
                else:
                    item["attention"] = [round(float(w), 5) for w in weights]
        finally:
            capture.remove()
        log.info("attention maps for %d of %d items", sum("attention" in i for i in items), len(items))

    @staticmethod
    def box_weights(task: str, dataset, item: dict, image: float, boxes: np.ndarray) -> list[float] | None:
        """One weight per box of the details record (box 0 the whole image where the record says so)."""
        count = len(item["boxes"])
        if task == "vcr":  # the model sees the mentioned objects, in order of first mention
            _, _, order = dataset.load_objects(dataset.records[item["index"]])
            if len(order) != len(boxes):
                return None
            weights = [0.0] * count
            for slot, index in enumerate(order):
                weights[index] = float(boxes[slot])
            return weights
        if item["whole_image_box"]:
            return [image, *boxes.tolist()] if len(boxes) == count - 1 else None
        return boxes.tolist() if len(boxes) == count else None
