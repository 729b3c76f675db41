"""RefCOCO+'s config keys (candidate box sources)."""
from common.config import ConfigNode


def add_refcoco_defaults(cfg: ConfigNode) -> None:
    """Add the RefCOCO+ keys to the shared defaults and set RefCOCO+'s own defaults."""
    # Answer vocabulary file; no effect in RefCOCO+; accepted for compatibility.
    cfg.DATASET.ANSWER_VOCAB_FILE = ""
    # Answer vocabulary size; no effect in RefCOCO+; accepted for compatibility.
    cfg.DATASET.ANSWER_VOCAB_SIZE = 3129
    # Candidate boxes for training: "gt", "proposal" or "proposal+gt".
    cfg.DATASET.TRAIN_BOXES = "gt"
    # Candidate boxes for validation: "gt", "proposal" or "proposal+gt".
    cfg.DATASET.VAL_BOXES = "gt"
    # Candidate boxes for testing: "gt", "proposal" or "proposal+gt".
    cfg.DATASET.TEST_BOXES = "gt"
    # Source of "proposal" boxes: "official" (MAttNet detections) or "vg" (bottom-up features).
    cfg.DATASET.PROPOSAL_SOURCE = "official"
    # Imdb-format annotations; no effect in RefCOCO+; accepted for compatibility.
    cfg.DATASET.USE_IMDB = True

    cfg.NETWORK.ENABLE_CNN_REG_LOSS = False
    # Answer loss type; no effect (always BCE over boxes); accepted for compatibility.
    cfg.NETWORK.ANS_LOSS_TYPE = "bce"
    # Replace-object option of the original; no effect; accepted for compatibility.
    cfg.NETWORK.REPLACE_OBJECT_CHANGE_LABEL = True
    # Classifier initialisation from word embeddings; no effect in RefCOCO+; accepted for compatibility.
    cfg.NETWORK.CLASSIFIER_PRETRAINED = False
    cfg.NETWORK.VLBERT.with_pooler = False

    # LR multiplier of the text visual scale; no effect; accepted for compatibility.
    cfg.TRAIN.VISUAL_SCALE_TEXT_LR_MULT = 1.0
    # LR multiplier of the object visual scale; no effect; accepted for compatibility.
    cfg.TRAIN.VISUAL_SCALE_OBJECT_LR_MULT = 1.0
    # Separate clipping norm of the visual scales; no effect; accepted for compatibility.
    cfg.TRAIN.VISUAL_SCALE_CLIP_GRAD_NORM = -1.0
    cfg.TRAIN.LOSS_LOGGERS = [("cls_loss", "ClsLoss")]
