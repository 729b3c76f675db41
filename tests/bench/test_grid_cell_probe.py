"""The grid-cell probe's regression (docs/VISUAL_FRONTENDS.md quotes its figures): it reads labels that are a linear
function of the features and stays near chance on labels that are not."""
from __future__ import annotations

import torch

from bench.grid_cell_probe import probe_accuracy


def test_probe_reads_linear_labels_and_not_random_ones():
    torch.manual_seed(0)
    x = torch.randn(600, 16) * torch.linspace(0.1, 10.0, 16)  # scales differ: the probe standardises
    y = (x[:, :3] / torch.linspace(0.1, 0.3, 3)).argmax(1)  # 3 classes, linear in the features
    assert probe_accuracy(x[:400], y[:400], x[400:], y[400:], 3) > 0.9
    noise = torch.randint(0, 3, (600,))
    assert probe_accuracy(x[:400], noise[:400], x[400:], noise[400:], 3) < 0.5
