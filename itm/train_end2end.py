"""Train VL-BERT for image-text matching: `python itm/train_end2end.py --cfg cfgs/itm/toy_cpu.yaml [KEY VALUE ...]`."""

from common.engine.entry import train_main
from itm.task import ITM

if __name__ == "__main__":
    train_main(ITM)
