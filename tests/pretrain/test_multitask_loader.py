"""The multi-task loader: epoch length, key prefixes, auxiliary reshuffling per epoch and per restart, and
disjoint distributed shards (two ranks simulated with DistributedSampler(num_replicas=2))."""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from common.data.multitask_loader import MultiTaskDataLoader


class _Items(Dataset):
    def __init__(self, size: int, offset: int = 0):
        self.size, self.offset, self.epochs = size, offset, []

    def __len__(self):
        return self.size

    def set_epoch(self, epoch):
        self.epochs.append(epoch)

    def __getitem__(self, index):
        return {"value": torch.tensor(self.offset + index), "index": index}


def _loader(dataset, batch, rank=0, world=1, shuffle=True):
    sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=shuffle, seed=3)
    return DataLoader(dataset, batch_size=batch, sampler=sampler)


def _epoch(loader: MultiTaskDataLoader, epoch: int) -> tuple[list[int], list[int]]:
    loader.set_epoch(epoch)
    main, aux = [], []
    for batch in loader:
        main += batch["value"].tolist()
        aux += batch["aux_value"].tolist()
    return main, aux


def test_master_defines_the_epoch_and_aux_keys_are_prefixed():
    loader = MultiTaskDataLoader([_loader(_Items(12), 4, shuffle=False), _loader(_Items(40, 100), 3)])
    assert len(loader) == 3
    batch = next(iter(loader))
    assert set(batch) == {"value", "index", "aux_value", "aux_index"}
    assert batch["value"].tolist() == [0, 1, 2, 3] and batch["aux_value"].shape == (3,)


def test_aux_order_changes_between_epochs_and_reaches_the_dataset():
    aux_data = _Items(40, 100)
    loader = MultiTaskDataLoader([_loader(_Items(12), 4), _loader(aux_data, 3)])
    main0, aux0 = _epoch(loader, 0)
    main1, aux1 = _epoch(loader, 1)
    again0 = _epoch(loader, 0)
    assert (main0, aux0) == again0  # deterministic per epoch
    assert aux0 != aux1 and main0 != main1
    assert sorted(main0) == list(range(12))
    assert aux_data.epochs[0] != aux_data.epochs[1]  # the dataset's mask seed follows too


def test_aux_restarts_with_a_new_shuffle_inside_an_epoch():
    loader = MultiTaskDataLoader([_loader(_Items(12), 2), _loader(_Items(6, 100), 3)])
    _, aux = _epoch(loader, 0)  # 6 master batches need 18 aux samples: three passes over 6
    passes = [aux[k:k + 6] for k in (0, 6, 12)]
    assert all(sorted(p) == list(range(100, 106)) for p in passes)
    assert len({tuple(p) for p in passes}) == 3


def test_two_ranks_get_disjoint_shards_of_every_loader():
    seen_main, seen_aux = [], []
    for rank in (0, 1):
        loader = MultiTaskDataLoader([_loader(_Items(12), 2, rank, 2), _loader(_Items(8, 100), 2, rank, 2)])
        main, aux = _epoch(loader, 5)
        seen_main.append(set(main))
        seen_aux.append(set(aux[:4]))  # one pass over this rank's aux shard (the next pass reshuffles)
    assert not seen_main[0] & seen_main[1] and seen_main[0] | seen_main[1] == set(range(12))
    assert not seen_aux[0] & seen_aux[1] and seen_aux[0] | seen_aux[1] == set(range(100, 108))


def test_iterators_are_created_lazily():
    class _Counting(DataLoader):
        created = 0

        def __iter__(self):
            type(self).created += 1
            return super().__iter__()

    aux = _Counting(_Items(4), batch_size=2)
    loader = MultiTaskDataLoader([DataLoader(_Items(4), batch_size=2), aux])
    assert _Counting.created == 0
    list(loader)
    assert _Counting.created == 1
