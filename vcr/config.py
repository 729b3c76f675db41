"""VCR's config keys (Q->A and QA->R multiple choice)."""
from common.config import ConfigNode


def add_vcr_defaults(cfg: ConfigNode) -> None:
    """Add the VCR keys to the shared defaults and set VCR's own defaults."""
    cfg.DATASET.LABEL_INDEX_IN_BATCH = 7
    # Wordpiece budget of (first + second segment) per choice, before [CLS]/[SEP]; the original hard-coded 64.
    cfg.DATASET.SEQ_LEN = 64

    # Copy token-type row 0 of the pretrained table into row 1 (pretraining only used type 0 for text).
    cfg.NETWORK.PARTIAL_PRETRAIN_SEGMB_INIT = False
    # Masked visual-linguistic modelling mode of the original VCR module; must stay False.
    cfg.NETWORK.FOR_MASK_VL_MODELING_PRETRAIN = False
    cfg.NETWORK.IMAGE_SEMANTIC = True
    # Encode "[CLS] q a [SEP]" as one segment instead of "[CLS] q [SEP] a [SEP]".
    cfg.NETWORK.QA_ONE_SENT = False
    # Dropout before the classifier of the CNN regularisation head (on top of VL-BERT).
    cfg.NETWORK.CNN_REG_DROPOUT = 0.0
    # Apply the CNN regularisation loss on VL-BERT's object outputs instead of the RoI features.
    cfg.NETWORK.CNN_LOSS_TOP = False
    # Encode "[CLS] a [SEP] q [SEP]" (answer first).
    cfg.NETWORK.ANSWER_FIRST = False
    # Initialise the 1fc classifier from the pretrained relationship head (W[1] - W[0]).
    cfg.NETWORK.LOAD_REL_HEAD = True
    cfg.NETWORK.VLBERT.object_word_embed_mode = 1

    # LR multiplier of the text visual scale; no effect; accepted for compatibility.
    cfg.TRAIN.VISUAL_SCALE_TEXT_LR_MULT = 1.0
    # LR multiplier of the object visual scale; no effect; accepted for compatibility.
    cfg.TRAIN.VISUAL_SCALE_OBJECT_LR_MULT = 1.0
    # Separate clipping norm of the visual scales; no effect; accepted for compatibility.
    cfg.TRAIN.VISUAL_SCALE_CLIP_GRAD_NORM = -1.0
    cfg.TRAIN.LOSS_LOGGERS = [("ans_loss", "AnsLoss"), ("cnn_regularization_loss", "CNNRegLoss")]
