"""Image-text retrieval's config keys: where the Karpathy file, the images and the box files are, the caption
budget and the dual encoder's projection."""
from common.config import ConfigNode


def add_retrieval_defaults(cfg: ConfigNode) -> None:
    """Add the retrieval keys to the shared defaults and set the task's own defaults."""
    # Karpathy caption file under DATASET_PATH (`dataset_flickr30k.json` or `dataset_coco.json`).
    cfg.DATASET.ANNOTATION_FILE = "dataset_flickr30k.json"
    # Image folder under DATASET_PATH; an image is IMAGE_FOLDER/filepath/filename (COCO's filepath: train2014, ...).
    cfg.DATASET.IMAGE_FOLDER = "flickr30k-images"
    # Box-file folder under DATASET_PATH: `<cocoid>.json` (COCO) or `<file name stem>.json` (Flickr30K).
    cfg.DATASET.BOX_FOLDER = "flickr30k_frcnn"
    # Max wordpieces of a caption, [CLS] and [SEP] included (longer captions are cut at the end).
    cfg.DATASET.SEQ_LEN = 40

    # Size of the dual encoder's embeddings (first-stage ranking).
    cfg.NETWORK.ITC_DIM = 256
    # Temperature of the in-batch contrastive loss (similarities of unit vectors are divided by it).
    cfg.NETWORK.ITC_TEMPERATURE = 0.07

    # The matching head and the dual encoder read the pooled [CLS] state.
    cfg.NETWORK.VLBERT.with_pooler = True
    cfg.DATASET.TRAIN_IMAGE_SET = "train"
    cfg.DATASET.VAL_IMAGE_SET = "val"
    cfg.DATASET.TEST_IMAGE_SET = "test"
    cfg.TRAIN.LOSS_LOGGERS = [("itc_loss", "ITCLoss"), ("itm_loss", "ITMLoss")]
