"""Linear probe of the retrieval dual encoder's [CLS] states: how well do frozen states retrieve, raw and centred?

Loads a checkpoint into the retrieval module (a pre-training checkpoint as `NETWORK.PARTIAL_PRETRAIN` does, or a
retrieval one), reads the last layer's [CLS] state of every caption's text-only pass and every image's image-only pass
(the inputs of `itc_text_norm` / `itc_image_norm`, taken by hooks on the real module in evaluation), then trains two
linear maps with the in-batch contrastive loss on the train split and reports R@1 / R@5 both ways on the val split,
once on the raw states and once with the train mean subtracted (docs/EVALUATION.md):

    python bench/retrieval_cls_probe.py --cfg cfgs/retrieval/toy_cpu.yaml \\
        --ckpt output/toy/pretrain/toy_cpu/train_train/vl-bert_toy_pretrain_multitask-0007.model
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from common.config import load_config
from common.data.collate import collate_dicts
from common.data.transforms import build_transform
from common.model.pretrained import load_partial_pretrain
from retrieval.config import add_retrieval_defaults
from retrieval.dataset import PAD_RULES, ImageItems, TextItems
from retrieval.module import contrastive_loss
from retrieval.ranking import retrieval_metrics
from retrieval.task import RETRIEVAL, karpathy_split


def cls_states(module, cfg, split: str, batch_size: int = 32) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(text states [T, h], image states [I, h], text_image [T]) of one split, read at the dual encoder's norms."""
    seen: dict[str, torch.Tensor] = {}
    hooks = [norm.register_forward_pre_hook(lambda _m, args, key=key: seen.__setitem__(key, args[0].detach()))
             for key, norm in (("text", module.itc_text_norm), ("image", module.itc_image_norm))]
    data = karpathy_split(cfg, split)
    texts, images = TextItems(data), ImageItems(data, build_transform(cfg, "test"))
    out: dict[str, list[torch.Tensor]] = {"text": [], "image": []}
    with torch.no_grad():
        for key, items in (("text", texts), ("image", images)):
            for start in range(0, len(items), batch_size):
                batch = collate_dicts([items[i] for i in range(start, min(start + batch_size, len(items)))], PAD_RULES)
                batch.pop("index")
                module(batch)
                out[key].append(seen[key])
    for hook in hooks:
        hook.remove()
    return torch.cat(out["text"]), torch.cat(out["image"]), torch.tensor(data.text_image)


def probe_recall(train: tuple, val: tuple, centre: bool, steps: int = 1500, dim: int = 128, seed: int = 0) -> dict:
    """R@1/5 both ways (retrieval_metrics' names) on `val` of two linear maps trained contrastively on `train`;
    with `centre` the train means are subtracted from both sides first."""
    (text, image, owner), (val_text, val_image, val_owner) = train, val
    text_mean = text.mean(0) if centre else torch.zeros(text.shape[1])
    image_mean = image.mean(0) if centre else torch.zeros(image.shape[1])
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    text_map, image_map = torch.nn.Linear(text.shape[1], dim), torch.nn.Linear(image.shape[1], dim)
    optimizer = torch.optim.Adam([*text_map.parameters(), *image_map.parameters()], lr=1e-3)
    for _ in range(steps):
        rows = torch.randperm(len(text), generator=generator)[:64]
        t = F.normalize(text_map(text[rows] - text_mean), dim=-1)
        i = F.normalize(image_map(image[owner[rows]] - image_mean), dim=-1)
        loss = contrastive_loss(t @ i.T / 0.07, owner[rows][:, None] == owner[rows][None, :])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        similarity = (F.normalize(text_map(val_text - text_mean), dim=-1)
                      @ F.normalize(image_map(val_image - image_mean), dim=-1).T)
    metrics = retrieval_metrics(similarity.T.double(), similarity.double(), val_owner.tolist())
    return {k: metrics[k] for k in ("img_r1", "img_r5", "txt_r1", "txt_r5")}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cfg", required=True)
    parser.add_argument("--ckpt", required=True, help="pre-training or retrieval checkpoint")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("opts", nargs="*", help="config overrides, KEY VALUE ...")
    args = parser.parse_args(argv)
    cfg = load_config(args.cfg, args.opts, add_task_defaults=add_retrieval_defaults)
    torch.manual_seed(0)
    module = RETRIEVAL.build_module(cfg)
    load_partial_pretrain(module, args.ckpt)
    module.eval()
    train, val = cls_states(module, cfg, "train"), cls_states(module, cfg, "val")
    cos = F.normalize(val[1], dim=-1) @ F.normalize(val[1], dim=-1).T
    off_diagonal = cos[~torch.eye(len(cos), dtype=torch.bool)]
    print(f"image-only [CLS] states of val: off-diagonal cosine min {off_diagonal.min():.6f}, "
          f"mean {off_diagonal.mean():.6f}")
    results = {}
    for name, centre in (("raw", False), ("centred", True)):
        results[name] = probe_recall(train, val, centre, steps=args.steps)
        print(name, " ".join(f"{k} {v:.1f}" for k, v in results[name].items()))
    return results


if __name__ == "__main__":
    main()
