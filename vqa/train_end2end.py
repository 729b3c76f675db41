"""Fine-tune VL-BERT on VQA v2: `python vqa/train_end2end.py --cfg cfgs/vqa/base_4x16G_fp32.yaml [KEY VALUE ...]`."""

from common.engine.entry import train_main
from vqa.task import VQA

if __name__ == "__main__":
    train_main(VQA)
