"""VQA v2's config keys (answer vocabulary, box set, classifier initialisation)."""
from common.config import ConfigNode, accept_no_effect_keys


def add_vqa_defaults(cfg: ConfigNode) -> None:
    """Add the VQA keys to the shared defaults and set VQA's own defaults."""
    # Answer vocabulary file, one answer per line; must contain "<unk>".
    cfg.DATASET.ANSWER_VOCAB_FILE = ""
    # Number of answers in the vocabulary (classifier outputs).
    cfg.DATASET.ANSWER_VOCAB_SIZE = 3129
    # Precomputed box set: "36" (fixed 36 per image) or "10-100ada" (adaptive 10 to 100).
    cfg.DATASET.BOXES = "36"
    # Read questions from pythia imdb_{split}.npy files instead of the official json files; only false is supported.
    cfg.DATASET.USE_IMDB = True
    # Largest share of annotated questions with no human answer in the vocabulary (they train on an all-zero
    # target); above it the dataset refuses to load. The share is logged at start either way.
    cfg.DATASET.MAX_NO_TARGET_FRACTION = 0.25

    # Initialise each answer's classifier row with the mean word embedding of its wordpieces.
    cfg.NETWORK.CLASSIFIER_PRETRAINED = False
    cfg.NETWORK.VLBERT.with_pooler = False

    cfg.TRAIN.LOSS_LOGGERS = [("ans_loss", "AnsLoss")]
    # Keys of the original VQA config that nothing reads (common/config_no_effect.py says why).
    accept_no_effect_keys(cfg, "NETWORK.FOR_MASK_VL_MODELING_PRETRAIN", "NETWORK.ANS_LOSS_TYPE",
                          "NETWORK.REPLACE_OBJECT_CHANGE_LABEL", "TRAIN.VISUAL_SCALE_TEXT_LR_MULT",
                          "TRAIN.VISUAL_SCALE_OBJECT_LR_MULT", "TRAIN.VISUAL_SCALE_CLIP_GRAD_NORM")
