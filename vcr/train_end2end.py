"""Fine-tune VL-BERT on VCR (Q->A or QA->R, by DATASET.TASK): `python vcr/train_end2end.py --cfg X --model-dir Y`."""
from common.engine.entry import train_main
from vcr.task import TASK

if __name__ == "__main__":
    train_main(TASK)
