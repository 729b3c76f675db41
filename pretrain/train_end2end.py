"""Pretrain VL-BERT on image captions (+ a text corpus): `python pretrain/train_end2end.py --cfg X --model-dir Y`."""
from common.engine.entry import train_main
from pretrain.task import TASK

if __name__ == "__main__":
    train_main(TASK)
