"""Pretraining's config keys (Conceptual Captions + text corpus, MLM / MVRC / relationship losses)."""
from common.config import ConfigNode, accept_no_effect_keys, allow_dataset_list


def add_pretrain_defaults(cfg: ConfigNode) -> None:
    """Add the pretraining keys to the shared defaults; DATASET may then be a list of sections."""
    # Max tokens per sample: text + boxes for captions, wordpieces for the text corpus.
    cfg.DATASET.SEQ_LEN = 64
    # Text corpus: append following lines until a sample has at least this many words.
    cfg.DATASET.MIN_SEQ_LEN = 0

    # ---- streaming shards (PREPARE_DATA.md, "Conceptual Captions as shards") ----
    # Where the samples come from: "files" (folders or zips + jsonl, the original layout) or "wds" (webdataset tar
    # shards written by data/make_shards.py, streamed; conceptual_captions and general_corpus).
    cfg.DATASET.FORMAT = "files"
    # FORMAT wds: the shards of each split; brace patterns ('train-{000000..000331}.tar'), several joined by '::';
    # relative to DATASET_PATH. Local files only.
    cfg.DATASET.TRAIN_SHARDS = ""
    cfg.DATASET.VAL_SHARDS = ""
    cfg.DATASET.TEST_SHARDS = ""
    # FORMAT wds: samples in one training epoch over all GPUs (defines len(loader) and so the LR schedule);
    # 0 = the number of samples in TRAIN_SHARDS. Every rank yields ceil(this / (GPUs x BATCH_IMAGES)) batches.
    cfg.DATASET.SAMPLES_PER_EPOCH = 0
    # FORMAT wds: raw samples each loader worker holds to shuffle the training stream (<= 1 = no shuffle); about
    # 0.4 MB each for end-to-end Conceptual Captions shards.
    cfg.DATASET.SHUFFLE_BUFFER = 1000
    # FORMAT wds: training draws shards with replacement (true) or reads them in a fresh permutation each epoch.
    cfg.DATASET.RESAMPLE_SHARDS = True
    # FORMAT wds: bad samples (undecodable, missing members, cut shards) are skipped with a warning; more than
    # this share of the samples read stops the run with an error.
    cfg.DATASET.MAX_BAD_SAMPLE_FRACTION = 0.01

    # Relationship (caption matches image) loss on the pooled output.
    cfg.NETWORK.WITH_REL_LOSS = True
    # Masked language modelling loss.
    cfg.NETWORK.WITH_MLM_LOSS = True
    # Masked RoI classification (with linguistic clues) loss.
    cfg.NETWORK.WITH_MVRC_LOSS = True
    # MLM loss: mean per sample first, then over samples (instead of over all masked tokens).
    cfg.NETWORK.MLM_LOSS_NORM_IN_BATCH_FIRST = False
    # MVRC loss: mean per sample first, then over samples (instead of over all masked RoIs).
    cfg.NETWORK.MVRC_LOSS_NORM_IN_BATCH_FIRST = False
    # End-to-end mode: zero the pixels inside masked RoIs (else replace their features by a learned vector).
    cfg.NETWORK.MASK_RAW_PIXELS = True

    # Do not load BERT weights: train VL-BERT from random initialisation.
    cfg.NETWORK.VLBERT.from_scratch = False
    # Freeze the position embedding table.
    cfg.NETWORK.VLBERT.pos_embedding_frozen = False
    # Number of detector classes predicted by the MVRC head (Visual Genome 1600 + background).
    cfg.NETWORK.VLBERT.visual_region_classes = 1601

    cfg.TRAIN.LOSS_LOGGERS = [("relationship_loss", "RelLoss"), ("mlm_loss", "MLMLoss"), ("mvrc_loss", "MVRCLoss")]
    # Keys of the original pretraining config that nothing reads (common/config_no_effect.py says why).
    accept_no_effect_keys(cfg, "DATASET.ANSWER_VOCAB_FILE", "DATASET.ANSWER_VOCAB_SIZE",
                          "NETWORK.FOR_MASK_VL_MODELING_PRETRAIN")
    allow_dataset_list(cfg)
