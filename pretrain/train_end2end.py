"""Pretrain VL-BERT on image captions (+ a text corpus): `python pretrain/train_end2end.py --cfg X --model-dir Y`."""
import os, sys; sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # noqa: E401,E702,I001
from common.engine.entry import train_main
from pretrain.task import TASK

if __name__ == "__main__":
    train_main(TASK)
