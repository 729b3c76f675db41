"""Default values of the keys every task shares, one comment per key (the original's names and meanings).

A key is here when shared code reads it or several tasks do; a key one task reads is added by that task's
`<task>/config.py::add_<task>_defaults`, and the original's keys that nothing reads are in
`common/config_no_effect.py`. docs/CONFIG.md lists all three.
"""
from common.config_node import ConfigNode

_C = ConfigNode()

# ----- top level ------------------------------------------------------------------------------------------
# Seed for python, numpy and torch on every rank; -1 leaves the generators unseeded.
_C.RNG_SEED = -1
# Root output folder; checkpoints go to {OUTPUT_PATH}/{cfg_name}/{TRAIN_IMAGE_SET}_train/.
_C.OUTPUT_PATH = ""
# Name of the module class in the task's `modules` table (e.g. "ResNetVLBERT").
_C.MODULE = ""
# Log training speed and metrics every this many batches.
_C.LOG_FREQUENT = 50
# Validate every this many epochs (the original ignored it and validated every epoch).
_C.VAL_FREQUENT = 1
# Save a checkpoint every this many epochs.
_C.CHECKPOINT_FREQUENT = 1
# Number of newest epoch checkpoints to keep (the best one is always kept); 0 keeps all.
_C.CHECKPOINT_KEEP = 0
# File-name prefix of checkpoints: {MODEL_PREFIX}-{epoch:04d}.model.
_C.MODEL_PREFIX = ""
# DataLoader worker processes per GPU (per process).
_C.NUM_WORKERS_PER_GPU = 4
# Image resize (short side, max long side) in pixels, e.g. (600, 1000).
_C.SCALES = ()

# ----- DATASET --------------------------------------------------------------------------------------------
_C.DATASET = ConfigNode()
# Dataset name (e.g. "vcr", "vqa", "refcoco+", "conceptual_captions", "general_corpus", "coco_captions").
_C.DATASET.DATASET = ""
# Folder holding the dataset files (annotations, images, features).
_C.DATASET.DATASET_PATH = ""
# Image set / split name used for training (several may be joined with "+", e.g. "train2014+val2014").
_C.DATASET.TRAIN_IMAGE_SET = ""
# Image set / split name used for validation.
_C.DATASET.VAL_IMAGE_SET = ""
# Image set / split name used for testing.
_C.DATASET.TEST_IMAGE_SET = ""
# Training annotation file (relative to DATASET_PATH for VCR; "+"-joined list for the text corpus).
_C.DATASET.TRAIN_ANNOTATION_FILE = ""
# Validation annotation file.
_C.DATASET.VAL_ANNOTATION_FILE = ""
# Test annotation file.
_C.DATASET.TEST_ANNOTATION_FILE = ""
# Prepend the whole-image box [0, 0, w-1, h-1] as object 0.
_C.DATASET.ADD_IMAGE_AS_A_BOX = True
# Read images and features from zip archives ("file.zip@/member").
_C.DATASET.ZIP_MODE = False
# Replace an image that fails to load by a black image of the annotated size and log the file, instead of stopping
# (every task that reads images; docs/GUARANTEES.md).
_C.DATASET.SKIP_UNREADABLE_IMAGES = False

# ----- NETWORK --------------------------------------------------------------------------------------------
_C.NETWORK = ConfigNode()
# Ablation: text tokens get no object grounding (tags / visual features zeroed).
_C.NETWORK.NO_GROUNDING = False
# Checkpoint to initialise from (a VL-BERT checkpoint for fine-tuning); "" for none.
_C.NETWORK.PARTIAL_PRETRAIN = ""
# Rules "old->new" renaming checkpoint key prefixes; the first matching rule applies.
_C.NETWORK.PARTIAL_PRETRAIN_PREFIX_CHANGES = []
# Use precomputed bottom-up box features instead of running the ResNet.
_C.NETWORK.IMAGE_FEAT_PRECOMPUTED = False
# ResNet depth (50, 101 or 152).
_C.NETWORK.IMAGE_NUM_LAYERS = 50
# Dilate the C5 stage (stride 16 instead of 32).
_C.NETWORK.IMAGE_C5_DILATED = False
# Put the stride of each bottleneck in its first 1x1 conv (Caffe/Detectron style).
_C.NETWORK.IMAGE_STRIDE_IN_1x1 = False
# Per-channel means (BGR, 0-255 scale) subtracted from the image.
_C.NETWORK.PIXEL_MEANS = ()
# Per-channel standard deviations the image is divided by.
_C.NETWORK.PIXEL_STDS = ()
# ResNet weights prefix (loads {prefix}-{epoch:04d}.model); "" for none.
_C.NETWORK.IMAGE_PRETRAINED = ""
# Epoch number in the ResNet weights file name.
_C.NETWORK.IMAGE_PRETRAINED_EPOCH = 0
# ResNet stages whose parameters are frozen (1 = stem + conv2 ... ).
_C.NETWORK.IMAGE_FROZEN_BACKBONE_STAGES = [1, 2]
# Keep BatchNorm layers in eval mode with frozen affine parameters.
_C.NETWORK.IMAGE_FROZEN_BN = True
# Run the ResNet in channels-last memory format (often faster with AMP on GPU); weights are unchanged.
_C.NETWORK.IMAGE_CHANNELS_LAST = False
# Size of the projected object representation (matches the VL-BERT hidden size).
_C.NETWORK.IMAGE_FINAL_DIM = 512
# Add a class-label embedding to the object representation (VCR's 81 COCO classes).
_C.NETWORK.IMAGE_SEMANTIC = False
# Also output the C5 feature map; only false is supported (the original option never worked).
_C.NETWORK.OUTPUT_CONV5 = False
# BERT model folder (config + weights + vocab), e.g. ./model/pretrained_model/bert-base-uncased.
_C.NETWORK.BERT_MODEL_NAME = "bert-base-uncased"
# BERT weights prefix that overrides the weights in BERT_MODEL_NAME; "" for none.
_C.NETWORK.BERT_PRETRAINED = ""
# Epoch number in the BERT_PRETRAINED file name.
_C.NETWORK.BERT_PRETRAINED_EPOCH = 0
# Add the object-classification regularisation loss on the visual features.
_C.NETWORK.ENABLE_CNN_REG_LOSS = True
# Trade compute for memory: recompute transformer layer activations in the backward pass.
_C.NETWORK.GRADIENT_CHECKPOINTING = False
# On CPU in float32, run every nn.Linear's matmuls in oneDNN (a module swap at build time; bench/RESULTS.md).
_C.NETWORK.CPU_ONEDNN_LINEAR = True
# Visual front-ends on images (docs/VISUAL_FRONTENDS.md). Backbone: "resnet" = the original's ResNet
# (IMAGE_NUM_LAYERS deep), else a timm model name with a stride-16 feature map (resnet50, convnext_tiny,
# vit_base_patch16_224, swin_tiny_patch4_window7_224, ...), weights from the local file IMAGE_PRETRAINED.
_C.NETWORK.BACKBONE = "resnet"
# Keyword arguments of timm.create_model as "name=value" strings (values read as YAML), e.g. ["depth=4"].
_C.NETWORK.BACKBONE_ARGS = []
# Visual tokens: "regions" (RoIAlign over the boxes), "grid" (the map's cells), "patches" (a ViT's patch tokens).
_C.NETWORK.VISUAL_TOKENS = "regions"
# Grid mode: average-pool this many x this many stride-16 cells into one token (2 = stride 32, 4x fewer tokens).
_C.NETWORK.GRID_POOL = 1
# Standardise every visual token's projected feature per dimension (batch statistics in training, running ones at
# evaluation), the whole-image token with its own statistics (docs/VISUAL_FRONTENDS.md). Off in the original configs.
_C.NETWORK.STANDARDISE_VISUAL_TOKENS = False

_C.NETWORK.VLBERT = ConfigNode()
# Freeze the word embedding table.
_C.NETWORK.VLBERT.word_embedding_frozen = False
# Objects share one position id (relative) instead of counting on after the text.
_C.NETWORK.VLBERT.obj_pos_id_relative = True
# Transformer hidden size (768 base, 1024 large).
_C.NETWORK.VLBERT.hidden_size = 512
# Size of the visual feature added to each token (IMAGE_FINAL_DIM).
_C.NETWORK.VLBERT.visual_size = 512
# Number of transformer layers.
_C.NETWORK.VLBERT.num_hidden_layers = 4
# Number of attention heads.
_C.NETWORK.VLBERT.num_attention_heads = 8
# Feed-forward inner size.
_C.NETWORK.VLBERT.intermediate_size = 2048
# Feed-forward activation ("gelu" = exact erf GELU).
_C.NETWORK.VLBERT.hidden_act = "gelu"
# Dropout on embeddings and layer outputs.
_C.NETWORK.VLBERT.hidden_dropout_prob = 0.1
# Dropout on attention probabilities.
_C.NETWORK.VLBERT.attention_probs_dropout_prob = 0.1
# Size of the position embedding table.
_C.NETWORK.VLBERT.max_position_embeddings = 512
# Number of segment (token type) ids: text A, text B, objects.
_C.NETWORK.VLBERT.type_vocab_size = 3
# Wordpiece vocabulary size.
_C.NETWORK.VLBERT.vocab_size = 30522
# Std of the normal initialisation of new weights.
_C.NETWORK.VLBERT.initializer_range = 0.02
# Initial value of the learned scale on the visual feature of text tokens.
_C.NETWORK.VLBERT.visual_scale_text_init = 0.0
# Initial value of the learned scale on the visual feature of object tokens.
_C.NETWORK.VLBERT.visual_scale_object_init = 0.0
# LayerNorm the visual features before scaling them.
_C.NETWORK.VLBERT.visual_ln = False
# Linguistic half of object tokens: 1 class embedding, 2 one shared vector, 3 mean text embedding.
_C.NETWORK.VLBERT.object_word_embed_mode = 2
# Build the [CLS] pooler (dense + tanh).
_C.NETWORK.VLBERT.with_pooler = True
# Position id used for padding; -1 means none.
_C.NETWORK.VLBERT.position_padding_idx = -1

# Classifier head: "1fc", "2fc" (VQA also "mlm").
_C.NETWORK.CLASSIFIER_TYPE = "2fc"
# Hidden size of the "2fc" classifier.
_C.NETWORK.CLASSIFIER_HIDDEN_SIZE = 1024
# Dropout in the classifier head.
_C.NETWORK.CLASSIFIER_DROPOUT = 0.1

# ----- TRAIN ----------------------------------------------------------------------------------------------
_C.TRAIN = ConfigNode()
# Learning-rate multipliers: list of [name_substring, multiplier]; other parameters use 1.
_C.TRAIN.LR_MULT = []
# Shuffle the training set each epoch.
_C.TRAIN.SHUFFLE = True
# Probability of a horizontal flip (left/right words swapped too).
_C.TRAIN.FLIP_PROB = 0.5
# Samples per GPU per micro-batch; a list with one entry per dataset when DATASET is a list.
_C.TRAIN.BATCH_IMAGES = 1
# Batch landscape and portrait images separately.
_C.TRAIN.ASPECT_GROUPING = True
# Resume from {MODEL_PREFIX}-{BEGIN_EPOCH-1:04d}.model.
_C.TRAIN.RESUME = False
# Resume from the newest checkpoint in the output folder, if any.
_C.TRAIN.AUTO_RESUME = True
# First epoch (counted from 0).
_C.TRAIN.BEGIN_EPOCH = 0
# Epoch to stop before (number of epochs when BEGIN_EPOCH is 0).
_C.TRAIN.END_EPOCH = 0
# Optimizer: "SGD", "Adam" or "AdamW".
_C.TRAIN.OPTIMIZER = "SGD"
# Max global gradient norm; a negative value disables clipping.
_C.TRAIN.CLIP_GRAD_NORM = -1.0
# Number of micro-batches whose gradients are summed before one optimizer step.
_C.TRAIN.GRAD_ACCUMULATE_STEPS = 1
# Total samples per optimizer step; when > 0 the accumulation is derived from it (0 = off, use GRAD_ACCUMULATE_STEPS).
_C.TRAIN.GLOBAL_BATCH = 0
# Learning rate per sample, as in the original: the optimizer gets LR x total batch size.
_C.TRAIN.LR = 0.1
# Schedule: "step" (warmup + multi-step), "triangle" (warmup + linear decay to 0) or "plateau".
_C.TRAIN.LR_SCHEDULE = "step"
# Factor applied at each LR_STEP (and on plateau).
_C.TRAIN.LR_FACTOR = 0.1
# Epochs at which the "step" schedule multiplies the LR by LR_FACTOR; "14,18" in YAML becomes (14.0, 18.0).
_C.TRAIN.LR_STEP = ()
# Warm the learning rate up over WARMUP_STEPS optimizer steps.
_C.TRAIN.WARMUP = False
# Warmup shape for the "step" schedule: "linear" or "constant".
_C.TRAIN.WARMUP_METHOD = "linear"
# Starting LR fraction of the "step" warmup.
_C.TRAIN.WARMUP_FACTOR = 1.0 / 3
# Warmup length in optimizer steps.
_C.TRAIN.WARMUP_STEPS = 1000
# Weight decay.
_C.TRAIN.WD = 0.0001
# SGD momentum.
_C.TRAIN.MOMENTUM = 0.9
# AdamW as the original (eps 1e-6, bias correction, decay applied after the update); False: torch.optim.AdamW.
_C.TRAIN.ADAMW_ORIGINAL = True
# Exclude LayerNorm weights and all biases from weight decay (the original decays everything).
_C.TRAIN.NO_DECAY_NORM_BIAS = False
# Layer-wise LR decay d of the visual backbone: layer i of L (stem 0) trains at LR x d^(L-i); 1.0 = off.
_C.TRAIN.VISUAL_LR_DECAY = 1.0
# Mixed precision with float16 autocast and a gradient scaler.
_C.TRAIN.FP16 = False
# Mixed precision with bfloat16 autocast (no scaler); not together with FP16.
_C.TRAIN.BF16 = False
# fp16 loss scale: a number (a fixed scale in the original) or "dynamic".
_C.TRAIN.FP16_LOSS_SCALE = 128.0
# Stop after this many consecutive optimizer steps with a non-finite loss or gradient (skipped steps).
_C.TRAIN.MAX_NONFINITE_STEPS = 3
# Compile the module with torch.compile.
_C.TRAIN.COMPILE = False
# DDP find_unused_parameters: "auto" (one dry step finds the parameters that get no gradient), true or false.
_C.TRAIN.FIND_UNUSED_PARAMETERS = "auto"
# ----- distributed data parallelism and sharded checkpoints (docs/DISTRIBUTED.md) -----
# "ddp" (full replicas), "zero1" (DDP + optimizer state sharded) or "fsdp" (parameters, gradients and state sharded).
_C.TRAIN.DATA_PARALLEL = "ddp"
# "file" (one {prefix}-{epoch:04d}.model, written by rank 0) or "dcp" (a {prefix}-{epoch:04d}.dcp folder of shards).
_C.TRAIN.CHECKPOINT_FORMAT = "file"
# Write "dcp" checkpoints in the background (torch.distributed.checkpoint.async_save) while training goes on.
_C.TRAIN.CHECKPOINT_ASYNC = False
# DataLoader pin_memory.
_C.TRAIN.PIN_MEMORY = True
# DataLoader persistent_workers (when NUM_WORKERS_PER_GPU > 0).
_C.TRAIN.PERSISTENT_WORKERS = True
# Module outputs logged as losses: "output_name,DisplayName" in YAML, (name, display) tuples in code.
_C.TRAIN.LOSS_LOGGERS = []
# --- resumable state (docs/GUARANTEES.md, "Resume" and "Interrupted writes") ---
# Write a step checkpoint (steps/{MODEL_PREFIX}-e{epoch:04d}-s{step:08d}.model, with the data position) every this
# many optimizer updates; 0 = off (epoch files only).
_C.TRAIN.CHECKPOINT_EVERY_STEPS = 0
# Number of newest step checkpoints to keep, older ones removed once a new one is on disk; 0 keeps all. Epoch files
# follow CHECKPOINT_KEEP instead, and neither key removes the other kind.
_C.TRAIN.KEEP_LAST = 2
# Also validate every this many optimizer updates (logged by global step), besides every VAL_FREQUENT epochs; 0 = off.
_C.TRAIN.VAL_EVERY_STEPS = 0
# Seconds a collective may wait for another rank before the run fails (a dead or hung rank ends the job).
_C.TRAIN.DIST_TIMEOUT_S = 300
# Seconds the other ranks may wait while rank 0 writes or reads a checkpoint (not bounded by DIST_TIMEOUT_S).
_C.TRAIN.CHECKPOINT_TIMEOUT_S = 3600
# ... observability and the GPU path (docs/CONFIG.md, "Logs, MFU and reference runs") ...
# Peak TFLOP/s of one device for the MFU of the speed line; 0 measures it at start with a short matmul probe.
_C.TRAIN.PEAK_TFLOPS = 0.0
# Where the log's figures go besides metrics.jsonl (always): any of "tensorboard", "wandb", "trackio".
_C.TRAIN.REPORT_TO = ["tensorboard"]
# Pad the packed VL-BERT sequence to a multiple of this (tensor-core friendly); 0 = 8 on a GPU, 1 (none) on CPU.
_C.TRAIN.PAD_TO_MULTIPLE_OF = 0
# Group training samples of similar length into batches (datasets with `sample_lengths()`, e.g. VCR).
_C.TRAIN.LENGTH_BUCKETING = False
# torch.compile each transformer layer (BertLayer) separately instead of the whole module (TRAIN.COMPILE).
_C.TRAIN.COMPILE_LAYERS = False

# ----- VAL ------------------------------------------------------------------------------------------------
_C.VAL = ConfigNode()
# Shuffle the validation set.
_C.VAL.SHUFFLE = False
# Flip probability at validation.
_C.VAL.FLIP_PROB = 0.0
# Samples per GPU at validation (a list per dataset when DATASET is a list).
_C.VAL.BATCH_IMAGES = 1

# ----- TEST -----------------------------------------------------------------------------------------------
_C.TEST = ConfigNode()
# Shuffle the test set.
_C.TEST.SHUFFLE = False
# Flip probability at test.
_C.TEST.FLIP_PROB = 0.0
# Samples per GPU at test (a list per dataset when DATASET is a list).
_C.TEST.BATCH_IMAGES = 1


def common_defaults() -> ConfigNode:
    """A fresh mutable copy of the shared defaults."""
    return _C.clone()
