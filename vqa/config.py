"""VQA v2's config keys (answer vocabulary, box set, classifier initialisation)."""
from common.config import ConfigNode


def add_vqa_defaults(cfg: ConfigNode) -> None:
    """Add the VQA keys to the shared defaults and set VQA's own defaults."""
    # Answer vocabulary file, one answer per line; must contain "<unk>".
    cfg.DATASET.ANSWER_VOCAB_FILE = ""
    # Number of answers in the vocabulary (classifier outputs).
    cfg.DATASET.ANSWER_VOCAB_SIZE = 3129
    # Precomputed box set: "36" (fixed 36 per image) or "10-100ada" (adaptive 10 to 100).
    cfg.DATASET.BOXES = "36"
    # Read questions from pythia imdb_{split}.npy files instead of the official VQA json files.
    cfg.DATASET.USE_IMDB = True
    # Largest share of annotated questions with no human answer in the vocabulary (they train on an all-zero
    # target); above it the dataset refuses to load. The share is logged at start either way.
    cfg.DATASET.MAX_NO_TARGET_FRACTION = 0.25

    # Masked visual-linguistic modelling mode of the original VCR module; must stay False.
    cfg.NETWORK.FOR_MASK_VL_MODELING_PRETRAIN = False
    # Answer loss type; no effect (always BCE over answers); accepted for compatibility.
    cfg.NETWORK.ANS_LOSS_TYPE = "bce"
    # Replace-object option of the original; no effect; accepted for compatibility.
    cfg.NETWORK.REPLACE_OBJECT_CHANGE_LABEL = True
    # Initialise each answer's classifier row with the mean word embedding of its wordpieces.
    cfg.NETWORK.CLASSIFIER_PRETRAINED = False
    cfg.NETWORK.VLBERT.with_pooler = False

    # LR multiplier of the text visual scale; no effect; accepted for compatibility.
    cfg.TRAIN.VISUAL_SCALE_TEXT_LR_MULT = 1.0
    # LR multiplier of the object visual scale; no effect; accepted for compatibility.
    cfg.TRAIN.VISUAL_SCALE_OBJECT_LR_MULT = 1.0
    # Separate clipping norm of the visual scales; no effect; accepted for compatibility.
    cfg.TRAIN.VISUAL_SCALE_CLIP_GRAD_NORM = -1.0
    cfg.TRAIN.LOSS_LOGGERS = [("ans_loss", "AnsLoss")]
