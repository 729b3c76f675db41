"""Shared collate and samplers: padding on a hand-made batch, shards, epochs, grouping."""
import pytest
import torch

from common.data.collate import collate_dicts
from common.data.samplers import GroupedBatchSampler, ShardSampler


def test_collate_pads_by_rule_and_stacks_or_lists_the_rest():
    items = [
        {"boxes": torch.ones(2, 4), "text": torch.tensor([5, 6, 7]), "label": torch.tensor(1.0), "qid": 10,
         "image": torch.ones(3, 2, 3), "name": "a", "index": 0},
        {"boxes": torch.ones(3, 4), "text": torch.tensor([8]), "label": torch.tensor(0.0), "qid": 11,
         "image": torch.ones(3, 4, 2), "name": "b", "index": 1},
    ]
    batch = collate_dicts(items, {"boxes": -2, "text": 0, "label": None})
    assert batch["boxes"].shape == (2, 3, 4) and batch["boxes"][0, 2].tolist() == [-2, -2, -2, -2]
    assert batch["text"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["label"].tolist() == [1.0, 0.0]
    assert batch["qid"].tolist() == [10, 11] and batch["qid"].dtype == torch.long
    assert batch["image"].shape == (2, 3, 4, 3)
    assert batch["image"][0, :, 2:, :].abs().sum() == 0 and batch["image"][1, :, :, 2].abs().sum() == 0
    assert batch["image"][0, :, :2, :].min() == 1 and batch["image"][1, :, :, :2].min() == 1
    assert batch["name"] == ["a", "b"]


def test_shards_are_disjoint_cover_and_reshuffle_each_epoch():
    shards = [ShardSampler(10, 2, r, shuffle=True, seed=1, pad=True) for r in range(2)]
    first = [list(s) for s in shards]
    assert len(first[0]) == len(first[1]) == 5
    assert sorted(first[0] + first[1]) == list(range(10))
    for s in shards:
        s.set_epoch(1)
    assert [list(s) for s in shards] != first


def test_validation_shards_have_no_duplicates():
    shards = [list(ShardSampler(7, 2, r, pad=False)) for r in range(2)]
    assert sorted(shards[0] + shards[1]) == list(range(7))


def test_grouped_batches_share_a_group_and_ranks_get_equal_counts():
    groups = [0, 1, 0, 0, 1, 0, 1, 0, 0]
    samplers = [GroupedBatchSampler(groups, 2, world_size=2, rank=r, seed=3) for r in range(2)]
    batches = [list(s) for s in samplers]
    assert len(batches[0]) == len(batches[1]) == len(samplers[0])
    for rank_batches in batches:
        for batch in rank_batches:
            assert len({groups[i] for i in batch}) == 1
    assert set(i for rb in batches for b in rb for i in b) == set(range(9))


def test_collate_pads_trailing_variable_dims_and_rejects_unequal_stacks():
    items = [{"mask": torch.ones(4, 2), "index": 3}, {"mask": torch.ones(4, 5), "index": 9}]
    batch = collate_dicts(items, {"mask": 0})
    assert batch["mask"].shape == (2, 4, 5)
    assert batch["mask"][0].sum() == 8 and batch["mask"][1].sum() == 20  # only the real entries are ones
    assert batch["index"].dtype == torch.long and batch["index"].tolist() == [3, 9]
    with pytest.raises(ValueError, match="'mask'"):
        collate_dicts(items, {"mask": None})
