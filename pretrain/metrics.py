"""Pretraining metrics: masked-token accuracy (captions / text corpus), masked-region accuracy, relationship
accuracy (the engine adds the loss loggers named by TRAIN.LOSS_LOGGERS)."""
from __future__ import annotations

from common.data.masking import IGNORE_LABEL
from common.metrics import Metric
from pretrain.losses import valid_region_rows


class MLMAccuracy(Metric):
    """argmax of outputs[logits_key] against batch[label_key] over the labelled tokens (label != -1)."""

    def __init__(self, name: str = "MLMAcc", logits_key: str = "mlm_logits", label_key: str = "mlm_labels"):
        self.logits_key, self.label_key = logits_key, label_key
        super().__init__(name)

    def batch_stats(self, outputs: dict, batch: dict):
        if self.logits_key not in outputs:
            return 0.0, 0.0
        labels = batch[self.label_key]
        predictions = outputs[self.logits_key][:, : labels.shape[1]].argmax(-1)
        valid = labels != IGNORE_LABEL
        return ((predictions == labels) & valid).sum(), valid.sum()


class MVRCAccuracy(Metric):
    """argmax of the region logits against the argmax of the soft target, over rows whose target sums to 1."""

    def __init__(self, name: str = "MVRCAccuracy"):
        super().__init__(name)

    def batch_stats(self, outputs: dict, batch: dict):
        if "mvrc_logits" not in outputs:
            return 0.0, 0.0
        logits = outputs["mvrc_logits"]
        labels = batch["mvrc_labels"][:, : logits.shape[1]]
        valid = valid_region_rows(labels)
        return ((logits.argmax(-1) == labels.argmax(-1)) & valid).sum(), valid.sum()


class RelationshipAccuracy(Metric):
    def __init__(self, name: str = "RelAcc"):
        super().__init__(name)

    def batch_stats(self, outputs: dict, batch: dict):
        if "relationship_logits" not in outputs:
            return 0.0, 0.0
        labels = batch["relationship_label"].view(-1)
        return (outputs["relationship_logits"].argmax(-1) == labels).sum(), labels.numel()


def build_pretrain_metrics(cfg) -> list[Metric]:
    """Host metric first: MLMAccWVC for the multitask modules, else MLMAcc (MVRC / Rel when MLM is off)."""
    net = cfg.NETWORK
    multitask = cfg.MODULE in ("ResNetVLBERTForPretrainingMultitask", "ResNetVLBERTForAttentionVis")
    metrics: list[Metric] = []
    if net.WITH_MLM_LOSS:
        if multitask:
            metrics += [MLMAccuracy("MLMAccWVC", "mlm_logits_wvc", "mlm_labels"),
                        MLMAccuracy("MLMAccAUX", "mlm_logits_aux", "aux_mlm_labels")]
        else:
            metrics.append(MLMAccuracy("MLMAcc"))
    if net.WITH_MVRC_LOSS:
        metrics.append(MVRCAccuracy())
    if net.WITH_REL_LOSS:
        metrics.append(RelationshipAccuracy())
    return metrics
