"""Fine-tune VL-BERT on RefCOCO+: `python refcoco/train_end2end.py --cfg X --model-dir Y [KEY VALUE ...]`."""
from common.engine.entry import train_main
from refcoco.task import TASK

if __name__ == "__main__":
    train_main(TASK)
