"""The results browser: details files written by the real test scripts (vqa/test.py, refcoco/test.py, vcr/val.py)
on tiny checkpoints, their summaries against the official VQA evaluation and the scripts' own accuracies, and the
pages in a real headless Chromium (no console errors, every image loads, the counts, a filter, an attention map
on a click, 10 k items paged)."""
from __future__ import annotations

import json
import os
import random

import pytest
import torch

from tests.test_eval_suite import E2E_TINY, TINY, VQA_CFG, save_random, tiny_vqa
from viz.browse import PAGE_SIZE, browse, summarize
from viz.browse_attention import AttentionCapture, AttentionMaps

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REFCOCO_CFG = os.path.join(REPO, "cfgs", "refcoco", "toy_cpu.yaml")
VCR_CFGS = {w: os.path.join(REPO, "cfgs", "vcr", f"toy_{t}_cpu.yaml") for w, t in (("a", "q2a"), ("r", "qa2r"))}


def read_page_data(page: str) -> dict:
    text = open(page.replace(".html", "_data.js"), encoding="utf-8").read()
    assert text.startswith("window.BROWSE_DATA = ") and text.endswith(";\n")
    return json.loads(text[len("window.BROWSE_DATA = "):-2])


@pytest.fixture(scope="module")
def results(small_world_root, vocab_only_bert_dir, tmp_path_factory):
    """Details of a VQA val, a RefCOCO+ val and a VCR val run of random tiny models, written by the scripts."""
    from refcoco import test as refcoco_test
    from refcoco.task import TASK as REFCOCO
    from vcr import val as vcr_val
    from vcr.task import TASK as VCR
    from vqa import test as vqa_test
    from vqa.task import VQA

    out = tmp_path_factory.mktemp("browse_results")
    opts = {"vqa": tiny_vqa(small_world_root, vocab_only_bert_dir),
            "refcoco": ["NETWORK.BERT_MODEL_NAME", vocab_only_bert_dir, "DATASET.DATASET_PATH",
                        os.path.join(small_world_root, "coco"), *TINY, *E2E_TINY],
            "vcr": ["NETWORK.BERT_MODEL_NAME", vocab_only_bert_dir, "DATASET.DATASET_PATH",
                    os.path.join(small_world_root, "vcr"), *TINY, *E2E_TINY]}
    ckpt = {"vqa": save_random(VQA, VQA_CFG, opts["vqa"], str(out / "vqa.model")),
            "refcoco": save_random(REFCOCO, REFCOCO_CFG, opts["refcoco"], str(out / "refcoco.model")),
            "a": save_random(VCR, VCR_CFGS["a"], opts["vcr"], str(out / "a.model")),
            "r": save_random(VCR, VCR_CFGS["r"], opts["vcr"], str(out / "r.model"))}
    vqa_file = vqa_test.main(["--cfg", VQA_CFG, "--ckpt", ckpt["vqa"], "--split", "val2014", "--result-path",
                              str(out / "vqa"), "--result-name", "tiny", *opts["vqa"]])
    _, refcoco_accuracy = refcoco_test.main(["--cfg", REFCOCO_CFG, "--ckpt", ckpt["refcoco"], "--split", "val",
                                             "--result-path", str(out / "refcoco"), "--result-name", "tiny",
                                             *opts["refcoco"]])
    vcr_scores = vcr_val.main(["--a-cfg", VCR_CFGS["a"], "--r-cfg", VCR_CFGS["r"], "--a-ckpt", ckpt["a"],
                               "--r-ckpt", ckpt["r"], "--result-path", str(out / "vcr"), "--result-name", "tiny",
                               *opts["vcr"]])
    return {"root": out, "opts": opts, "ckpt": ckpt, "vqa_file": vqa_file, "refcoco_accuracy": refcoco_accuracy,
            "vcr_scores": vcr_scores, "world": small_world_root}


def read_jsonl(path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


# ---- the details files and the summaries ---------------------------------------------------------------------------
def test_details_agree_with_the_result_files_and_the_official_evaluation(results):
    from vqa.vqa_eval import evaluate, load_results

    root = results["root"]
    vqa = read_jsonl(root / "vqa" / "tiny_vqa2_val2014_details.jsonl")
    answers = {r["question_id"]: r["answer"] for r in json.load(open(results["vqa_file"]))}
    assert [d["id"] for d in vqa] == list(answers) and all(d["prediction"] == answers[d["id"]] for d in vqa)
    assert all(len(d["top"]) == 5 and d["top"] == sorted(d["top"], key=lambda e: -e[1]) for d in vqa)
    assert all(os.path.isfile(d["image"]) for d in vqa)
    with open(os.path.join(results["world"], "coco", "vqa", "v2_mscoco_val2014_annotations.json")) as f:
        report = evaluate(load_results(results["vqa_file"]), json.load(f)["annotations"])
    summary = summarize(vqa)
    assert summary["score"] == pytest.approx(report["overall"], abs=0.006)  # the report rounds to 2 decimals
    assert {g["name"]: round(g["score"], 2) for g in summary["groups"]} == pytest.approx(report["perAnswerType"],
                                                                                         abs=0.006)
    refcoco = read_jsonl(root / "refcoco" / "tiny_refcoco+_val_details.jsonl")
    assert summarize(refcoco)["accuracy"] == pytest.approx(100 * results["refcoco_accuracy"])
    assert all(d["pred_box"] == d["boxes"][d["top_boxes"][0]] for d in refcoco)
    vcr = read_jsonl(root / "vcr" / "tiny_val_details.jsonl")
    assert summarize(vcr)["accuracy"] == pytest.approx(100 * results["vcr_scores"]["Q->A"])
    assert sum(d["q2ar_correct"] for d in vcr) / len(vcr) == pytest.approx(results["vcr_scores"]["Q->AR"])


def test_captured_attention_equals_asking_vl_bert_for_it(results):
    from common.config import load_config
    from common.data.collate import collate_dicts
    from common.engine.evaluate import load_module_for_inference, test_split_config
    from vqa.task import VQA

    cfg = load_config(VQA_CFG, results["opts"]["vqa"], add_task_defaults=VQA.add_defaults)
    module = load_module_for_inference(VQA, cfg, results["ckpt"]["vqa"])
    dataset = VQA.build_dataset(test_split_config(cfg, "val2014"), "test")
    batch = collate_dicts([dataset[3]], dataset.PAD_RULES)
    calls = []
    hook = module.vlbert.register_forward_pre_hook(lambda m, args, kwargs: calls.append((args, kwargs)),
                                                   with_kwargs=True)
    capture = AttentionCapture(module)
    with torch.no_grad():
        plain = module(batch)["label_logits"]
    capture.remove()
    hook.remove()
    with torch.no_grad():
        again = module(batch)["label_logits"]
        args, kwargs = calls[0]
        asked = module.vlbert(*args, **{**kwargs, "output_attention_probs": True})
    torch.testing.assert_close(plain, again, rtol=1e-4, atol=1e-5)  # the hooks leave the answer alone
    for captured, direct in zip(capture.probs, asked.attention_probs, strict=True):
        torch.testing.assert_close(captured, direct)
    image, boxes = capture.region_weights(0)
    assert len(boxes) == int(batch["boxes"][0, :, 0].gt(-1.5).sum()) - 1 and 0 < image + boxes.sum() <= 1


def test_pages_link_every_image_and_thumbnails_copy_them(results, tmp_path):
    pages = browse(str(results["root"]), str(tmp_path / "linked"))
    assert [os.path.basename(p) for p in pages] == ["tiny_refcoco+_val.html", "tiny_val.html",
                                                    "tiny_vqa2_val2014.html"]
    assert os.path.isfile(tmp_path / "linked" / "index.html")
    for page in pages:
        data = read_page_data(page)
        assert all(os.path.isfile(os.path.join(os.path.dirname(page), i["src"])) for i in data["items"])
        assert not any(os.path.isabs(i["src"]) for i in data["items"])
    copied = browse(str(results["root"] / "vqa"), str(tmp_path / "copied"), thumbnails=True)
    items = read_page_data(copied[0])["items"]
    assert all(i["src"].startswith("browse_files/thumbs/") for i in items)
    assert len({i["src"] for i in items}) == len({i["image"] for i in items})


def test_command_line_with_attention_maps_and_overrides(results, tmp_path):
    from viz import browse as browse_script

    pages = browse_script.main([str(results["root"] / "vqa"), "--out", str(tmp_path / "cli"), "--cfg", VQA_CFG,
                                "--ckpt", results["ckpt"]["vqa"], "--attention-items", "2", *results["opts"]["vqa"]])
    assert pages == [str(tmp_path / "cli" / "tiny_vqa2_val2014.html")]
    items = read_page_data(pages[0])["items"]
    assert [i["index"] for i in items if "attention" in i] == [i["index"] for i in items[:2]]


# ---- in Chromium -------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def chromium(tmp_path_factory):
    from tests.viz.chromium import Chromium

    browser = Chromium(str(tmp_path_factory.mktemp("chromium_profile")))
    yield browser
    browser.close()


def click_outcome(chromium, value: str) -> None:
    chromium.evaluate(f"(() => {{ const s = document.getElementById('outcome'); s.value = '{value}'; "
                      f"s.dispatchEvent(new Event('change')); }})()")


def count(chromium, element: str) -> int:
    return int(chromium.evaluate(f"document.getElementById('{element}').textContent"))


@pytest.mark.browser
def test_pages_in_headless_chromium(chromium, results, tmp_path):
    maps = {"vqa": AttentionMaps(VQA_CFG, results["ckpt"]["vqa"], results["opts"]["vqa"], max_items=3),
            "refcoco": AttentionMaps(REFCOCO_CFG, results["ckpt"]["refcoco"], results["opts"]["refcoco"], 3),
            "vcr": AttentionMaps(VCR_CFGS["a"], results["ckpt"]["a"], results["opts"]["vcr"], 3)}
    pages = {os.path.basename(p): p for p in browse(str(results["root"]), str(tmp_path / "pages"),
                                                    attention=lambda items: maps[items[0]["task"]](items))}
    for name, page in pages.items():
        data = read_page_data(page)
        with_maps = [i for i in data["items"] if "attention" in i]
        assert [i["index"] for i in with_maps] == [i["index"] for i in data["items"][:3]], name
        assert all(len(i["attention"]) == len(i["boxes"]) and min(i["attention"]) >= 0 for i in with_maps)
        chromium.errors.clear()
        chromium.open("file://" + page)
        assert chromium.errors == [], (name, chromium.errors)
        assert count(chromium, "count-total") == count(chromium, "count-shown") == len(data["items"])
        assert chromium.evaluate("document.querySelectorAll('.item').length") == min(PAGE_SIZE, len(data["items"]))
        assert chromium.evaluate("document.getElementById('accuracy').textContent") == (
            f"{data['summary']['accuracy']:.2f}")
        loaded = chromium.evaluate("Promise.all([...document.querySelectorAll('image')].map(i => new Promise(r => "
                                   "{const img = new Image(); img.onload = () => r(img.naturalWidth > 0); "
                                   "img.onerror = () => r(false); img.src = i.href.baseVal;})))")
        assert loaded and all(loaded), name
        wrong = sum(i["correct"] is False and not (i.get("score") or 0) > 0 for i in data["items"])
        click_outcome(chromium, "wrong")
        assert count(chromium, "count-shown") == wrong
        assert chromium.evaluate("[...document.querySelectorAll('.item')].every(e => e.classList.contains('wrong'))")
        click_outcome(chromium, "all")
        first_type = data["types"][0]
        chromium.evaluate(f"(() => {{ const s = document.getElementById('type'); s.value = {json.dumps(first_type[0])};"
                          f" s.dispatchEvent(new Event('change')); }})()")
        assert count(chromium, "count-shown") == first_type[1]
        assert chromium.errors == [], (name, chromium.errors)
    # the VQA page: the first items carry attention maps; a click draws them
    chromium.open("file://" + pages["tiny_vqa2_val2014.html"] + "#outcome=all")
    assert chromium.evaluate("document.querySelectorAll('rect.attention').length") == 0
    chromium.evaluate("document.querySelector('.item figure').dispatchEvent(new MouseEvent('click'))")
    boxes = len(read_page_data(pages["tiny_vqa2_val2014.html"])["items"][0]["boxes"])
    assert chromium.evaluate("document.querySelectorAll('rect.attention').length") == boxes
    shot = chromium.screenshot(str(tmp_path / "browse_vqa.png"))
    assert os.path.getsize(shot) > 10_000
    print(f"screenshot: {shot}")
    assert chromium.errors == []


@pytest.mark.browser
def test_ten_thousand_items_are_paged(chromium, results, tmp_path):
    template = read_jsonl(results["root"] / "vqa" / "tiny_vqa2_val2014_details.jsonl")
    rng = random.Random(0)
    folder = tmp_path / "big"
    folder.mkdir()
    with open(folder / "big_vqa2_val2014_details.jsonl", "w") as f:
        for n in range(10_000):
            item = dict(rng.choice(template), index=n, correct=rng.random() < 0.3)
            f.write(json.dumps(item) + "\n")
    page = browse(str(folder))[0]
    chromium.errors.clear()
    chromium.open("file://" + page + "#page=7")
    assert count(chromium, "count-total") == 10_000
    assert chromium.evaluate("document.querySelectorAll('.item').length") == PAGE_SIZE
    assert chromium.evaluate("document.querySelector('.item').dataset.index") == str(6 * PAGE_SIZE)
    click_outcome(chromium, "correct")
    assert count(chromium, "count-shown") == sum(json.loads(line)["correct"] for line in open(
        folder / "big_vqa2_val2014_details.jsonl"))
    assert chromium.errors == []
