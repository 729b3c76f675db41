"""Fine-tune VL-BERT for image-text retrieval: `python retrieval/train_end2end.py --cfg cfgs/retrieval/toy_cpu.yaml`."""

from common.engine.entry import train_main
from retrieval.task import RETRIEVAL

if __name__ == "__main__":
    train_main(RETRIEVAL)
