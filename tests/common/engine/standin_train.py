"""Entry script of the stand-in task, run by the launcher tests exactly as a task's train_end2end.py."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))
from common.engine.entry import train_main  # noqa: E402
from tests.common.engine.standin_task import STANDIN  # noqa: E402

if __name__ == "__main__":
    train_main(STANDIN)
