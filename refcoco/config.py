"""RefCOCO+'s config keys (candidate box sources)."""
from common.config import ConfigNode, accept_no_effect_keys


def add_refcoco_defaults(cfg: ConfigNode) -> None:
    """Add the RefCOCO+ keys to the shared defaults and set RefCOCO+'s own defaults."""
    # Candidate boxes for training: "gt", "proposal" or "proposal+gt".
    cfg.DATASET.TRAIN_BOXES = "gt"
    # Candidate boxes for validation: "gt", "proposal" or "proposal+gt".
    cfg.DATASET.VAL_BOXES = "gt"
    # Candidate boxes for testing: "gt", "proposal" or "proposal+gt".
    cfg.DATASET.TEST_BOXES = "gt"
    # Source of "proposal" boxes: "official" (MAttNet detections) or "vg" (bottom-up features).
    cfg.DATASET.PROPOSAL_SOURCE = "official"

    cfg.NETWORK.ENABLE_CNN_REG_LOSS = False
    cfg.NETWORK.VLBERT.with_pooler = False

    cfg.TRAIN.LOSS_LOGGERS = [("cls_loss", "ClsLoss")]
    # Keys of the original RefCOCO+ config that nothing reads (common/config_no_effect.py says why).
    accept_no_effect_keys(cfg, "DATASET.ANSWER_VOCAB_FILE", "DATASET.ANSWER_VOCAB_SIZE", "DATASET.USE_IMDB",
                          "NETWORK.ANS_LOSS_TYPE", "NETWORK.REPLACE_OBJECT_CHANGE_LABEL",
                          "NETWORK.CLASSIFIER_PRETRAINED", "TRAIN.VISUAL_SCALE_TEXT_LR_MULT",
                          "TRAIN.VISUAL_SCALE_OBJECT_LR_MULT", "TRAIN.VISUAL_SCALE_CLIP_GRAD_NORM")
