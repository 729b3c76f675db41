"""Image-text matching's config keys (sequence budget, negative sampling)."""
from common.config import ConfigNode


def add_itm_defaults(cfg: ConfigNode) -> None:
    """Add the image-text matching keys to the shared defaults and set the task's own defaults."""
    # Max tokens per sample, text + boxes together (the longer list is cut first, as in pretraining).
    cfg.DATASET.SEQ_LEN = 64
    # Probability that a training item pairs the image with another image's caption (label 0).
    cfg.DATASET.NEGATIVE_PROB = 0.5

    # The head reads the pooled [CLS] state.
    cfg.NETWORK.VLBERT.with_pooler = True
    cfg.TRAIN.LOSS_LOGGERS = [("itm_loss", "ITMLoss")]
