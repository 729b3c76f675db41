"""IoU with the +1-pixel convention, the accuracy of result files and the training metrics, on hand-worked cases."""
from __future__ import annotations

import pytest
import torch

from common.data.boxes import box_iou_plus_one, paired_iou_plus_one, xywh_to_xyxy
from refcoco.predictions import accuracy_against_refer, grounding_hits, prediction_records
from refcoco.task import BoxClassification, RefAccuracy


def test_xywh_to_xyxy_keeps_the_original_x_plus_w():
    assert xywh_to_xyxy([[10, 20, 5, 8]]).tolist() == [[10, 20, 15, 28]]
    assert xywh_to_xyxy([[10, 20, 5, 8]], plus_one=True).tolist() == [[10, 20, 14, 27]]


def test_iou_counts_inclusive_pixels():
    # 10x10-pixel boxes sharing 5 columns: 50 / (100 + 100 - 50); without +1 it would be 36 / 126
    assert box_iou_plus_one([[0, 0, 9, 9]], [[5, 0, 14, 9]])[0, 0].item() == pytest.approx(1 / 3)
    # touching at one pixel column: 1 x 10 overlap
    assert box_iou_plus_one([[0, 0, 9, 9]], [[9, 0, 18, 9]])[0, 0].item() == pytest.approx(10 / 190)
    # disjoint: 0, not negative
    assert box_iou_plus_one([[0, 0, 9, 9]], [[20, 20, 29, 29]])[0, 0].item() == 0.0
    pairwise = box_iou_plus_one([[0, 0, 9, 9], [5, 0, 14, 9]], [[0, 0, 9, 9], [9, 0, 18, 9], [0, 0, 9, 19]])
    assert pairwise.shape == (2, 3)
    assert paired_iou_plus_one([[0, 0, 9, 9], [5, 0, 14, 9]], [[0, 0, 9, 19], [9, 0, 18, 9]]).tolist() == \
        pytest.approx([pairwise[0, 2].item(), pairwise[1, 1].item()])


def test_half_overlap_is_correct_at_test_but_negative_as_a_label():
    # [0,0,9,9] inside [0,0,9,19]: +1 areas 100 and 200 -> IoU exactly 0.5 (without +1: 81 / 171 = 0.47)
    iou = box_iou_plus_one([[0, 0, 9, 9]], [[0, 0, 9, 19]])[0, 0].item()
    assert iou == pytest.approx(0.5)
    assert grounding_hits([[0, 0, 9, 9]], [[0, 0, 9, 19]]).tolist() == [True]  # test: IoU >= 0.5
    assert not iou > 0.5  # the dataset's label rule is strict


class FakeRefer:
    def __init__(self, boxes):
        self.boxes = boxes

    def get_ref_box(self, ref_id):
        return self.boxes[ref_id]


def test_accuracy_against_refer_by_hand():
    refer = FakeRefer({1: [0, 0, 9, 9], 2: [0, 0, 9, 20], 3: [100, 100, 10, 10]})  # xywh -> [0,0,9,9], ...
    records = prediction_records([1, 2, 3, 1], [[0, 0, 9, 9], [0, 0, 9, 9], [0, 0, 9, 9], [5, 0, 14, 9]])
    # ref 1 exact hit; ref 2 gt [0,0,9,20] vs [0,0,9,9] = 100/210 miss; ref 3 miss; ref 1 again IoU 1/3 miss
    assert accuracy_against_refer(records, refer) == pytest.approx(0.25)
    assert records[0] == {"ref_id": 1, "box": [0.0, 0.0, 9.0, 9.0]}


def test_training_metrics_by_hand():
    logits = torch.tensor([[0.5, 2.0, -1.0, -10000.0], [3.0, -2.0, 1.0, 0.2]])
    labels = torch.tensor([[0.0, 1.0, 0.0, -1.0], [0.0, 1.0, 1.0, 0.0]])
    outputs, batch = {"logits": logits}, {"labels": labels}
    ref = RefAccuracy("RefAcc")
    ref.update(outputs, batch)
    assert ref.compute() == pytest.approx(0.5)  # sample 0 picks box 1 (label 1), sample 1 picks box 0 (label 0)
    acc, pos, frac = (BoxClassification("a", "all"), BoxClassification("p", "positive"),
                      BoxClassification("f", "positive_fraction"))
    for metric in (acc, pos, frac):
        metric.update(outputs, batch)
    # predictions logit > 0: [1,1,0,(pad)] [1,0,1,1]; correct: box0 no, box1 yes, box2 yes | no, no, yes, no
    assert acc.compute() == pytest.approx(3 / 7)
    assert pos.compute() == pytest.approx(2 / 3)  # positives: (0,1) hit, (1,1) missed, (1,2) hit
    assert frac.compute() == pytest.approx(3 / 7)
