"""vqa/test.py (EvalAI file), vqa/eval.py (official accuracy) and vqa/predict.py (one image) on a tiny model saved in
the original checkpoint layout."""
from __future__ import annotations

import json
import os

import pytest
import torch
from vqa_fixtures import TOY_CFG, tiny_overrides

from common.data.collate import DictCollate, collate_dicts
from common.engine.evaluate import predict
from tests.script_runs import one_and_two_processes
from vqa import eval as vqa_eval_script
from vqa import predict as predict_script
from vqa import test as test_script
from vqa.task import VQA, SoftAccuracy


@pytest.fixture
def tiny_checkpoint(vqa_tiny_cfg, tmp_path):
    """(config, overrides, path) of a random tiny model saved as the original: {"state_dict": {"module.*": ...}}."""

    def make(*extra: str):
        cfg = vqa_tiny_cfg(*extra)
        torch.manual_seed(0)
        module = VQA.build_module(cfg)
        path = str(tmp_path / f"tiny{len(extra)}.model")
        torch.save({"state_dict": {"module." + k: v for k, v in module.state_dict().items()}, "optimizer": {}}, path)
        return cfg, path

    return make


def read(path: str):
    with open(path) as f:
        return json.load(f)


def test_result_file_has_every_test_question(tiny_checkpoint, vqa_toy_root, vqa_vocab_only_dir, tmp_path):
    cfg, ckpt = tiny_checkpoint()
    out = tmp_path / "results"
    path = test_script.main(["--cfg", TOY_CFG, "--ckpt", ckpt, "--result-path", str(out), "--result-name", "tiny",
                             "--bs", "7", *tiny_overrides(vqa_vocab_only_dir, vqa_toy_root)])
    assert path == str(out / "tiny_vqa2_test2015.json")
    results = read(path)
    questions = read(os.path.join(vqa_toy_root, "coco", "vqa", "v2_OpenEnded_mscoco_test2015_questions.json"))
    assert isinstance(results, list) and all(set(r) == {"question_id", "answer"} for r in results)
    assert [r["question_id"] for r in results] == [q["question_id"] for q in questions["questions"]]
    vocab = set(VQA.build_dataset(cfg, "test").answer_vocab)
    assert all(isinstance(r["question_id"], int) and r["answer"] in vocab for r in results)


def test_eval_of_val_results_equals_the_validation_metric(tiny_checkpoint, vqa_toy_root, vqa_vocab_only_dir,
                                                          tmp_path, capsys):
    cfg, ckpt = tiny_checkpoint()
    path = test_script.main(["--cfg", TOY_CFG, "--ckpt", ckpt, "--result-path", str(tmp_path), "--result-name", "v",
                             "--split", "val2014", *tiny_overrides(vqa_vocab_only_dir, vqa_toy_root)])
    vqa_dir = os.path.join(vqa_toy_root, "coco", "vqa")
    report = vqa_eval_script.main(["--result", path, "--questions",
                                   os.path.join(vqa_dir, "v2_OpenEnded_mscoco_val2014_questions.json"),
                                   "--annotations", os.path.join(vqa_dir, "v2_mscoco_val2014_annotations.json")])
    assert "Overall accuracy" in capsys.readouterr().out
    # the same model through the validation metric (soft targets) gives the same number
    dataset = VQA.build_dataset(cfg, "val")
    module = VQA.build_module(cfg)
    module.load_state_dict({k[len("module."):]: v for k, v in torch.load(ckpt)["state_dict"].items()})
    loader = torch.utils.data.DataLoader(dataset, batch_size=16, collate_fn=DictCollate(dataset.PAD_RULES))
    metric = SoftAccuracy("SoftAcc")
    for sample in predict(module, loader, show_progress=False):
        metric.update({"label_logits": sample["label_logits"][None]},
                      {"answer_scores": dataset[sample["index"]]["answer_scores"][None]})
    assert report["overall"] == pytest.approx(round(100 * metric.compute(), 2), abs=1e-9)
    assert set(report["perAnswerType"]) == {"yes/no", "number", "other"}


def test_eval_rejects_incomplete_results(tmp_path, vqa_toy_root):
    vqa_dir = os.path.join(vqa_toy_root, "coco", "vqa")
    result = tmp_path / "partial.json"
    result.write_text(json.dumps([{"question_id": 200001000, "answer": "yes"}]))
    with pytest.raises(ValueError, match="missing"):
        vqa_eval_script.main(["--result", str(result), "--questions",
                              os.path.join(vqa_dir, "v2_OpenEnded_mscoco_val2014_questions.json"),
                              "--annotations", os.path.join(vqa_dir, "v2_mscoco_val2014_annotations.json")])


def test_predict_with_a_box_file_matches_the_dataset_path(tiny_checkpoint, vqa_toy_root, capsys):
    cfg, ckpt = tiny_checkpoint()
    dataset = VQA.build_dataset(cfg, "val")
    sample = dataset.samples[0]
    answers = predict_script.predict(cfg, ckpt, dataset.image_path(sample), sample.question,
                                     box_file=dataset.box_file_path(sample))
    module = VQA.build_module(cfg)
    module.load_state_dict({k[len("module."):]: v for k, v in torch.load(ckpt)["state_dict"].items()})
    with torch.no_grad():
        scores = torch.sigmoid(module.eval()(collate_dicts([dataset[0]], dataset.PAD_RULES))["label_logits"][0])
    top = scores.topk(5)
    assert [a for a, _ in answers] == [dataset.answer_vocab[i] for i in top.indices.tolist()]
    assert [s for _, s in answers] == pytest.approx(top.values.tolist(), abs=1e-5)
    with pytest.raises(SystemExit, match="pass --boxes"):
        predict_script.predict(cfg, ckpt, dataset.image_path(sample), sample.question)


def test_predict_grid_fallback_for_end_to_end_configs(tiny_checkpoint, vqa_toy_root, capsys):
    cfg, ckpt = tiny_checkpoint("NETWORK.IMAGE_FEAT_PRECOMPUTED", "false", "NETWORK.IMAGE_NUM_LAYERS", "18",
                                "SCALES", "[64, 96]")
    image = os.path.join(vqa_toy_root, "coco", "val2014", "COCO_val2014_000000200001.jpg")
    answers = predict_script.predict(cfg, ckpt, image, "what color is the ball?")
    assert "3x3 grid" in capsys.readouterr().out
    assert len(answers) == 5 and [s for _, s in answers] == sorted((s for _, s in answers), reverse=True)
    boxes = predict_script.grid_boxes(90, 60, 3)
    assert boxes[0].tolist() == [0, 0, 29, 19] and boxes[-1].tolist() == [60, 40, 89, 59]


@pytest.mark.slow  # 25-50 s: four Python processes on a 2-core machine
def test_two_processes_write_the_same_file_as_one(tiny_checkpoint, vqa_toy_root, vqa_vocab_only_dir, tmp_path):
    """vqa/test.py under dist_run_single.sh 2 (each rank a shard, gathered on rank 0) = under nondist_run.sh."""
    _, ckpt = tiny_checkpoint()
    one, two, output = one_and_two_processes(
        tmp_path, "vqa/test.py", TOY_CFG, ["--ckpt", ckpt, "--result-name", "tiny", "--bs", "7"],
        tiny_overrides(vqa_vocab_only_dir, vqa_toy_root))
    assert "in 2 process(es)" in output
    assert list(one) == ["tiny_vqa2_test2015.json", "tiny_vqa2_test2015_details.jsonl"] and one == two
    assert len(json.loads(one["tiny_vqa2_test2015.json"])) == 100  # the toy world's test questions
