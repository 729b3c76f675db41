"""The GPU path's switches (common/engine/gpu_path.py) and the length-bucketing batch sampler: padding the packed
sequence changes no output of a real slot; per-layer compile keeps every checkpoint key; buckets are deterministic,
complete, equal across ranks and resumable."""
from __future__ import annotations

import random

import pytest
import torch

from common.config import load_config
from common.data.length_buckets import LengthBucketBatchSampler
from common.engine.gpu_path import apply_gpu_path, compile_layers, pad_multiple, set_pad_multiple
from common.model.vlbert import VisualLinguisticBert, pack_layout
from tests.common.engine.test_observability import YAML

# Three samples of different packed lengths (3+2+1 = 6, 2+1+1 = 4, 4+3+1 = 8 slots): L = 8 before padding.
TEXT_MASK = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)
OBJECT_MASK = torch.tensor([[1, 0, 1], [1, 0, 0], [1, 1, 1]], dtype=torch.bool)


def inputs(cfg, seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    return dict(text_input_ids=torch.randint(1, cfg.vocab_size, (3, 4), generator=gen) * TEXT_MASK,
                text_token_type_ids=torch.zeros(3, 4, dtype=torch.long),
                text_visual_embeddings=torch.randn(3, 4, cfg.visual_size, generator=gen), text_mask=TEXT_MASK,
                object_vl_embeddings=torch.randn(3, 3, cfg.visual_size + cfg.hidden_size, generator=gen),
                object_mask=OBJECT_MASK)


def test_pack_layout_rounds_the_length_up_with_masked_slots():
    plain, padded = pack_layout(TEXT_MASK, OBJECT_MASK), pack_layout(TEXT_MASK, OBJECT_MASK, 5)
    assert plain.attention_mask.shape[1] == 8 and padded.attention_mask.shape[1] == 10
    for field in ("attention_mask", "is_text", "is_object", "is_end"):
        assert torch.equal(getattr(padded, field)[:, :8], getattr(plain, field))
        assert not getattr(padded, field)[:, 8:].any()
    assert torch.equal(padded.object_slot, plain.object_slot)


@pytest.mark.parametrize("multiple", [8, 16])
def test_padding_changes_no_output_and_no_gradient(tiny_vlbert_config, multiple):
    """Outputs read back per text token, per object and pooled, and the parameter gradients, with and without
    padding (dropout off: its masks would be drawn over a different shape)."""
    cfg = tiny_vlbert_config(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    results = []
    for pad in (1, multiple):
        torch.manual_seed(0)
        model = VisualLinguisticBert(cfg).train()
        assert set_pad_multiple(model, pad) == 1
        out = model(**inputs(cfg), output_text_and_object_separately=True, output_all_encoded_layers=False)
        (out.text.square().sum() + out.objects.sum() + out.pooled.sum()).backward()
        results.append((out, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (plain, plain_grads), (padded, padded_grads) = results
    for a, b in zip(plain, padded, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
    assert plain_grads.keys() == padded_grads.keys()
    for name in plain_grads:
        torch.testing.assert_close(padded_grads[name], plain_grads[name], rtol=1e-5, atol=1e-6, msg=name)


def test_pad_multiple_default_pads_on_a_gpu_only():
    cfg = load_config(YAML)
    assert pad_multiple(cfg, torch.device("cpu")) == 1 and pad_multiple(cfg, torch.device("cuda")) == 8
    assert pad_multiple(load_config(YAML, ["TRAIN.PAD_TO_MULTIPLE_OF", "16"]), torch.device("cpu")) == 16
    with pytest.raises(ValueError, match="TRAIN.PAD_TO_MULTIPLE_OF must be >= 0"):
        pad_multiple(load_config(YAML, ["TRAIN.PAD_TO_MULTIPLE_OF", "-8"]), torch.device("cpu"))


def test_compile_layers_keeps_the_checkpoint_keys(tiny_vlbert_config):
    model = VisualLinguisticBert(tiny_vlbert_config())
    keys = list(model.state_dict())
    assert compile_layers(model) == 2
    assert list(model.state_dict()) == keys
    assert all(layer._compiled_call_impl is not None for layer in model.encoder.layer)
    both = load_config(YAML, ["TRAIN.COMPILE_LAYERS", "true", "TRAIN.COMPILE", "true"])
    with pytest.raises(ValueError, match="TRAIN.COMPILE_LAYERS and TRAIN.COMPILE are exclusive"):
        apply_gpu_path(model, both, torch.device("cpu"))


@pytest.mark.slow
def test_compiled_layers_give_the_eager_outputs(tiny_vlbert_config):
    """inductor on CPU compiles C++ for each layer (tens of seconds on 2 cores): slow."""
    cfg = tiny_vlbert_config(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    model = VisualLinguisticBert(cfg).eval()
    eager = model(**inputs(cfg)).encoded
    compile_layers(model)
    torch.testing.assert_close(model(**inputs(cfg)).encoded, eager, rtol=1e-5, atol=1e-5)


# ----- length buckets ----------------------------------------------------------------------------------------
_RNG = random.Random(0)
LENGTHS = [_RNG.randint(10, 120) for _ in range(203)]


def sampler(rank: int = 0, world: int = 2, **kwargs) -> LengthBucketBatchSampler:
    return LengthBucketBatchSampler(LENGTHS, batch_size=4, world_size=world, rank=rank, seed=3, pool_batches=5,
                                    **kwargs)


def test_buckets_cover_every_sample_with_equal_batch_counts_per_rank():
    per_rank = [list(sampler(rank)) for rank in range(2)]
    assert len(per_rank[0]) == len(per_rank[1]) == len(sampler()) == 26  # ceil(203 / 8)
    seen = [i for batches in per_rank for batch in batches for i in batch]
    assert set(seen) == set(range(len(LENGTHS))) and len(seen) == 26 * 8  # 5 wrapped-around repeats
    assert all(len(batch) == 4 for batches in per_rank for batch in batches)


def test_buckets_pad_less_than_random_batches():
    def padding(batches):
        return sum(max(LENGTHS[i] for i in b) * len(b) - sum(LENGTHS[i] for i in b) for b in batches)

    random_batches = [list(range(203))[k:k + 4] for k in range(0, 203, 4)]
    assert padding(sampler(world=1)) < 0.25 * padding(random_batches)


def test_buckets_are_deterministic_per_epoch_and_resumable():
    first, again = sampler(), sampler()
    assert list(first) == list(again)
    first.set_epoch(1)
    epoch1 = list(first)
    assert epoch1 != list(again)
    resumed = sampler()
    resumed.set_epoch(1)
    resumed.skip(7)
    assert list(resumed) == epoch1[7:] and list(resumed) == epoch1  # skip applies to one pass only


def test_buckets_stay_within_groups():
    groups = [i % 2 for i in range(len(LENGTHS))]
    for batch in sampler(world=1, group_ids=groups):
        assert len({groups[i] for i in batch}) == 1
