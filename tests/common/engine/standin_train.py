"""Entry script of the stand-in task, run by the launcher tests exactly as a task's train_end2end.py."""

from common.engine.entry import train_main
from tests.common.engine.standin_task import STANDIN

if __name__ == "__main__":
    train_main(STANDIN)
