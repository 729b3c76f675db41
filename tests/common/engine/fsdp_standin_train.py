"""Entry script of the FSDP stand-in task, run by the launcher tests as a task's train_end2end.py."""

from common.engine.entry import train_main
from tests.common.engine.fsdp_standin import FSDP_STANDIN

if __name__ == "__main__":
    train_main(FSDP_STANDIN)
