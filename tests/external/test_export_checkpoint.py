"""external/export_checkpoint.py and external/original_keys.py on a tiny end-to-end pretraining module (ResNet-18,
hidden 32): export -> reload gives the same outputs, the original layout exports the same file, PARTIAL_PRETRAIN
reads the export, the key converter round trips both ways, and bad files fail naming themselves."""
from __future__ import annotations

import os

import pytest
import torch
from safetensors.torch import load_file

from common.config import dump_config, load_config
from common.model.pretrained import load_partial_pretrain
from common.model.state_dict_io import CheckpointError
from external.export_checkpoint import export_checkpoint, load_exported, main
from external.original_keys import from_original, to_original
from pretrain.config import add_pretrain_defaults
from pretrain.module import ResNetVLBERTForPretraining

TINY = ["MODULE", "ResNetVLBERTForPretraining", "NETWORK.IMAGE_FEAT_PRECOMPUTED", "false",
        "NETWORK.BERT_MODEL_NAME", "/nonexistent", "NETWORK.IMAGE_FINAL_DIM", "32", "NETWORK.WITH_REL_LOSS", "true",
        "NETWORK.VLBERT.hidden_size", "32", "NETWORK.VLBERT.visual_size", "32", "NETWORK.VLBERT.num_hidden_layers", "2",
        "NETWORK.VLBERT.num_attention_heads", "2", "NETWORK.VLBERT.intermediate_size", "64",
        "NETWORK.VLBERT.vocab_size", "50", "NETWORK.VLBERT.visual_region_classes", "7",
        "NETWORK.VLBERT.visual_scale_text_init", "1.0", "NETWORK.VLBERT.visual_scale_object_init", "1.0",
        "NETWORK.VLBERT.with_pooler", "true"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny module with every tensor randomised (BN statistics included), saved as a training checkpoint in our
    layout and in the original's (module. prefix, head.0 aliases)."""
    root = tmp_path_factory.mktemp("export")
    cfg = load_config("cfgs/pretrain/toy_cpu.yaml", TINY, add_task_defaults=add_pretrain_defaults)
    cfg_path = str(root / "tiny.yaml")
    dump_config(cfg, cfg_path)
    torch.manual_seed(0)
    module = ResNetVLBERTForPretraining.from_config(cfg, load_pretrained=False)  # built as a run builds it
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            if tensor.is_floating_point():
                tensor.copy_(torch.rand_like(tensor) * 0.1 + (0.5 if "running_var" in name else 0.0))
    module.eval()
    state = module.state_dict()
    torch.save({"state_dict": state, "optimizer": {}, "validation_monitor": {"best_val": 0.5}}, root / "ours.model")
    torch.save({"state_dict": to_original(state, "pretrain")}, root / "original.model")
    return root, cfg_path, module


def make_batch() -> dict:
    gen = torch.Generator().manual_seed(1)
    boxes = torch.tensor([[[0.0, 0.0, 63.0, 47.0], [4.0, 2.0, 30.0, 40.0], [20.0, 10.0, 60.0, 30.0]],
                          [[0.0, 0.0, 63.0, 47.0], [8.0, 8.0, 40.0, 44.0], [-2.0, -2.0, -2.0, -2.0]]])
    labels = torch.zeros(2, 3, 7)
    labels[:, 1] = torch.softmax(torch.randn(2, 7, generator=gen), -1)
    text = torch.randint(5, 50, (2, 6), generator=gen)
    mlm = torch.full((2, 6), -1)
    mlm[:, 2] = text[:, 2]
    return {"image": torch.randn(2, 3, 48, 64, generator=gen), "boxes": boxes,
            "im_info": torch.tensor([[64.0, 48.0, 1.0, 1.0]] * 2), "text": text, "mlm_labels": mlm,
            "mvrc_ops": torch.tensor([[0, 1, 0], [0, 1, 0]]), "mvrc_labels": labels,
            "relationship_label": torch.tensor([1, 0])}


def outputs(module) -> dict:
    with torch.no_grad():
        return module.eval()(make_batch())


def test_export_reload_identical_outputs(trained, tmp_path):
    root, cfg_path, module = trained
    reference = outputs(module)
    weights = export_checkpoint(str(root / "ours.model"), cfg_path, "pretrain", str(tmp_path / "x"), {"acc": 0.7})
    stored = load_file(weights)
    assert not any(k.startswith("module.") for k in stored)
    assert "vlbert.mlm_head.predictions.decoder.weight" not in stored  # the tied copy is stored once
    torch.testing.assert_close(stored["vlbert.word_embeddings.weight"], module.vlbert.word_embeddings.weight)

    reloaded, cfg = load_exported(str(tmp_path / "x"), "pretrain")
    assert cfg.NETWORK.VLBERT.hidden_size == 32 and cfg.MODULE == "ResNetVLBERTForPretraining"
    assert reloaded.vlbert.mlm_head.predictions.decoder.weight is reloaded.vlbert.word_embeddings.weight
    again = outputs(reloaded)
    assert set(again) == set(reference) and {"mlm_logits", "mvrc_logits", "relationship_logits"} <= set(again)
    for key, value in reference.items():
        assert torch.equal(again[key], value), key
    for key, value in module.state_dict().items():
        assert torch.equal(reloaded.state_dict()[key], value), key

    card = (tmp_path / "x" / "MODEL_CARD.md").read_text()
    params = sum(p.numel() for p in module.parameters())
    assert f"{params:,}" in card and "acc = 0.7" in card and "ours.model" in card
    assert "conceptual-captions" in card and "pretrain" in card


def test_original_layout_exports_the_same_weights(trained, tmp_path):
    root, cfg_path, _ = trained
    ours = load_file(export_checkpoint(str(root / "ours.model"), cfg_path, "pretrain", str(tmp_path / "a")))
    original = load_file(export_checkpoint(str(root / "original.model"), cfg_path, "pretrain", str(tmp_path / "b")))
    assert ours.keys() == original.keys()
    assert all(torch.equal(ours[k], original[k]) for k in ours)


def test_an_interrupted_export_keeps_the_previous_one(trained, tmp_path, monkeypatch):
    """The weights are written to a temporary file and renamed once on disk: an export stopped while writing them
    (here: the flush to disk fails) leaves the previous export's files byte for byte, and no temporary file."""
    root, cfg_path = trained[0], trained[1]
    out = tmp_path / "e"
    export_checkpoint(str(root / "ours.model"), cfg_path, "pretrain", str(out))
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        export_checkpoint(str(root / "original.model"), cfg_path, "pretrain", str(out))
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_partial_pretrain_reads_the_export(trained, tmp_path):
    root, cfg_path, module = trained
    weights = export_checkpoint(str(root / "ours.model"), cfg_path, "pretrain", str(tmp_path / "p"))
    cfg = load_config(cfg_path, add_task_defaults=add_pretrain_defaults)
    torch.manual_seed(5)
    fresh = ResNetVLBERTForPretraining.from_config(cfg, load_pretrained=False)
    load_partial_pretrain(fresh, weights)
    assert fresh.vlbert.mlm_head.predictions.decoder.weight is fresh.vlbert.word_embeddings.weight
    reference, again = outputs(module), outputs(fresh)
    for key, value in reference.items():
        assert torch.equal(again[key], value), key


def test_bad_inputs_name_the_file(trained, tmp_path):
    root, cfg_path, _ = trained
    not_ckpt = tmp_path / "notes.model"
    not_ckpt.write_text("this is not a checkpoint")
    with pytest.raises(CheckpointError, match="notes.model"):
        export_checkpoint(str(not_ckpt), cfg_path, "pretrain", str(tmp_path / "o"))
    torch.save({"state_dict": {"epoch": 3}}, tmp_path / "dict.model")  # a dict, but no tensors
    with pytest.raises(CheckpointError, match="dict.model"):
        export_checkpoint(str(tmp_path / "dict.model"), cfg_path, "pretrain", str(tmp_path / "o"))
    partial = {k: v for k, v in torch.load(root / "ours.model", weights_only=True)["state_dict"].items()
               if not k.startswith("vlbert.encoder.layer.1.")}
    torch.save(partial, tmp_path / "partial.model")
    with pytest.raises(CheckpointError, match=r"partial\.model.*missing.*encoder\.layer\.1"):
        export_checkpoint(str(tmp_path / "partial.model"), cfg_path, "pretrain", str(tmp_path / "o"))
    with pytest.raises(SystemExit):
        main(["--ckpt", str(not_ckpt), "--cfg", cfg_path, "--task", "pretrain", "--out", str(tmp_path / "o")])
    with pytest.raises(SystemExit):
        main(["--ckpt", str(root / "ours.model"), "--cfg", cfg_path, "--task", "pretrain", "--out",
              str(tmp_path / "o"), "--metrics", "[0.7]"])
    assert not os.path.exists(tmp_path / "o" / "model.safetensors")


def original_style(task: str) -> dict:
    """Keys as the original's checkpoints spell them; the alias shares the tensor of its twin as torch.load gives."""
    gen = torch.Generator().manual_seed(0)
    head = {f"0.conv{i}.weight": torch.randn(4, 4, generator=gen) for i in (1, 2)}
    vl = "vlbert._module." if task == "vcr" else "vlbert."
    state = {f"module.{vl}word_embeddings.weight": torch.randn(50, 8, generator=gen),
             f"module.{vl}encoder.layer.0.output.dense.bias": torch.randn(8, generator=gen),
             "module.image_feature_extractor.backbone.conv1.weight": torch.randn(8, 3, 1, 1, generator=gen),
             "module.final_mlp.1.weight": torch.randn(3, 8, generator=gen)}
    for key, value in head.items():
        state["module.image_feature_extractor.roi_head_feature_extractor." + key] = value
        state["module.image_feature_extractor.head.0." + key] = value
    return state


@pytest.mark.parametrize("task", ["vcr", "vqa", "pretrain", "refcoco"])
def test_original_keys_round_trip(task):
    original = original_style(task)
    ours = from_original(original, task)
    assert not any(k.startswith("module.") or "head.0." in k or "_module." in k for k in ours)
    assert "vlbert.word_embeddings.weight" in ours and len(ours) == len(original) - 2
    back = to_original(ours, task)
    assert set(back) == set(original)
    assert all(torch.equal(back[k], original[k]) and back[k].dtype == original[k].dtype for k in original)
    assert back["module.image_feature_extractor.head.0.0.conv1.weight"] is \
        back["module.image_feature_extractor.roi_head_feature_extractor.0.conv1.weight"]

    again = from_original(to_original(ours, task), task)
    assert list(again) == list(ours) and all(again[k] is ours[k] for k in ours)


def test_original_keys_on_a_real_module(trained):
    """Every key of a real task module survives ours -> original -> ours; the original gets one head.0 alias per
    C5 head tensor and VCR's TimeDistributed prefix."""
    _, _, module = trained
    ours = module.state_dict()
    for task in ("pretrain", "vcr"):
        original = to_original(ours, task)
        heads = [k for k in ours if k.startswith("image_feature_extractor.roi_head_feature_extractor.")]
        assert len(original) == len(ours) + len(heads) and heads
        assert all(k.startswith("module.") for k in original)
        assert ("module.vlbert._module.word_embeddings.weight" in original) == (task == "vcr")
        back = from_original(original, task)
        assert list(back) == list(ours) and all(torch.equal(back[k], ours[k]) for k in ours)
    unprefixed = to_original(ours, "vcr", module_prefix=False)
    assert not any(k.startswith("module.") for k in unprefixed) and list(from_original(unprefixed, "vcr")) == list(ours)


def test_vcr_original_checkpoint_exports_and_reloads(tmp_path, vocab_only_bert_dir):
    """An original-layout VCR checkpoint (module., vlbert._module., head.0 aliases) loads strictly into our VCR
    module through the exporter, and the export reloads to the same tensors."""

    from vcr.config import add_vcr_defaults
    from vcr.task import TASK

    overrides = ["NETWORK.BERT_MODEL_NAME", vocab_only_bert_dir, "NETWORK.IMAGE_PRETRAINED", "", "SCALES", "[48, 64]",
                 "NETWORK.VLBERT.hidden_size", "32", "NETWORK.VLBERT.visual_size", "32",
                 "NETWORK.IMAGE_FINAL_DIM", "32",
                 "NETWORK.VLBERT.num_hidden_layers", "1", "NETWORK.VLBERT.num_attention_heads", "2",
                 "NETWORK.VLBERT.intermediate_size", "64", "NETWORK.VLBERT.vocab_size", "200"]
    cfg = load_config("cfgs/vcr/toy_q2a_cpu.yaml", overrides, add_task_defaults=add_vcr_defaults)
    cfg_path = str(tmp_path / "vcr.yaml")
    dump_config(cfg, cfg_path)
    torch.manual_seed(3)
    module = TASK.build_module(cfg)
    state = module.state_dict()
    original = to_original(state, "vcr")
    assert "module.vlbert._module.word_embeddings.weight" in original
    assert "module.image_feature_extractor.head.0.0.conv1.weight" in original
    torch.save({"state_dict": original}, tmp_path / "vcr_original.model")

    export_checkpoint(str(tmp_path / "vcr_original.model"), cfg_path, "vcr", str(tmp_path / "out"))
    reloaded, _ = load_exported(str(tmp_path / "out"), "vcr")
    assert reloaded.state_dict().keys() == state.keys()
    assert all(torch.equal(reloaded.state_dict()[k], v) for k, v in state.items())
