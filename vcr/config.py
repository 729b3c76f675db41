"""VCR's config keys (Q->A and QA->R multiple choice)."""
from common.config import ConfigNode, accept_no_effect_keys


def add_vcr_defaults(cfg: ConfigNode) -> None:
    """Add the VCR keys to the shared defaults and set VCR's own defaults."""
    # VCR sub-task: "Q2A" or "QA2R" ("Q2AR" is the original's default; train and test one of the two).
    cfg.DATASET.TASK = "Q2AR"
    # Keep only the detections mentioned in the question/answers.
    cfg.DATASET.ONLY_USE_RELEVANT_DETS = True
    # Side of the rasterised object masks, in pixels.
    cfg.DATASET.MASK_SIZE = 14
    # Wordpiece budget of (first + second segment) per choice, before [CLS]/[SEP]; the original hard-coded 64.
    cfg.DATASET.SEQ_LEN = 64

    # Ablation: the text sees no objects (object mask zeroed) and the visual scales are frozen.
    cfg.NETWORK.BLIND = False
    # Text tokens do not attend to objects (object mask zeroed).
    cfg.NETWORK.NO_OBJ_ATTENTION = False
    # Copy token-type row 0 of the pretrained table into row 1 (pretraining only used type 0 for text).
    cfg.NETWORK.PARTIAL_PRETRAIN_SEGMB_INIT = False
    cfg.NETWORK.IMAGE_SEMANTIC = True
    # Encode "[CLS] q a [SEP]" as one segment instead of "[CLS] q [SEP] a [SEP]".
    cfg.NETWORK.QA_ONE_SENT = False
    # Dropout before the classifier of the CNN regularisation head (on top of VL-BERT).
    cfg.NETWORK.CNN_REG_DROPOUT = 0.0
    # Apply the CNN regularisation loss on VL-BERT's object outputs instead of the RoI features.
    cfg.NETWORK.CNN_LOSS_TOP = False
    # Weight of the CNN regularisation loss.
    cfg.NETWORK.CNN_LOSS_WEIGHT = 1.0
    # Weight of the answer loss.
    cfg.NETWORK.ANS_LOSS_WEIGHT = 1.0
    # Encode "[CLS] a [SEP] q [SEP]" (answer first).
    cfg.NETWORK.ANSWER_FIRST = False
    # Initialise the 1fc classifier from the pretrained relationship head (W[1] - W[0]).
    cfg.NETWORK.LOAD_REL_HEAD = True
    # Score each choice with a sigmoid (BCE loss) instead of a softmax over choices.
    cfg.NETWORK.CLASSIFIER_SIGMOID = False
    # Positive-class weight of the sigmoid loss.
    cfg.NETWORK.CLASSIFIER_SIGMOID_LOSS_POSITIVE_WEIGHT = 1.0
    cfg.NETWORK.VLBERT.object_word_embed_mode = 1

    cfg.TRAIN.LOSS_LOGGERS = [("ans_loss", "AnsLoss"), ("cnn_regularization_loss", "CNNRegLoss")]
    # Keys of the original VCR config that nothing reads (common/config_no_effect.py says why).
    accept_no_effect_keys(cfg, "NETWORK.FOR_MASK_VL_MODELING_PRETRAIN", "TRAIN.VISUAL_SCALE_TEXT_LR_MULT",
                          "TRAIN.VISUAL_SCALE_OBJECT_LR_MULT", "TRAIN.VISUAL_SCALE_CLIP_GRAD_NORM",
                          values={"DATASET.LABEL_INDEX_IN_BATCH": 7})
