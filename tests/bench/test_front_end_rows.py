"""bench/front_end_rows.py: each front-end row builds its module from the released VQA config, its packed length is the
one the module really runs (the MFU numerator depends on it), and the table reads the results."""
from __future__ import annotations

import pytest
import torch

from bench.front_end_rows import ROWS, FrontEndSetting, format_front_end_table, front_end_setting
from bench.models import make_batch

TINY = dict(hidden=64, layers=2, heads=4, ffn=128, resnet_layers=18, regions=4, image_size=64)


@pytest.mark.parametrize("name", sorted(ROWS))
def test_row_length_is_what_the_module_runs(name):
    setting = front_end_setting(name, TINY, batch=2, regions=3)
    assert isinstance(setting, FrontEndSetting) and setting.end2end
    torch.manual_seed(0)
    module = setting.build("ours", setting)
    tokens, backbone, pool = ROWS[name]
    assert (module.cfg.NETWORK.VISUAL_TOKENS, module.cfg.NETWORK.BACKBONE, module.cfg.NETWORK.GRID_POOL) == ROWS[name]
    batch = make_batch(setting, torch.device("cpu"))
    with torch.no_grad():
        regions = module.encode_regions(batch)
    assert setting.seq_len == setting.text_len + regions.box_mask.shape[1] + 1
    expected = 3 + 1 if tokens == "regions" else (64 // (16 * pool)) ** 2 + 1
    assert setting.boxes == expected == int(regions.box_mask.sum(1).max())
    with pytest.raises(SystemExit, match="--models ours"):
        setting.build("peer", setting)


def test_table_row_by_hand():
    result = dict(setting="grid2-resnet", seq_len=24 + 50 + 1, samples_per_s=4.0, flops=2e12, step_s=2.0,
                  peak_bytes=3 * 2**30)
    table = format_front_end_table([result], peak_rate=1e12, device_type="cpu").splitlines()
    assert table[2] == "| grid2-resnet | grid (GRID_POOL 2) | resnet | 50 | 75 | 4.00 | 1.000 | 2000.0 | 3072 |"
