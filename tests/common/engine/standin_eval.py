"""Test script of the stand-in task, run by the launcher tests exactly as a task's test.py."""

from common.engine.evaluate import TestCommand, TestResult, test_main
from tests.common.engine.standin_task import STANDIN

COMMAND = TestCommand("stand-in test", name_from_model_prefix=True)


def main(argv=None) -> TestResult | None:
    return test_main(STANDIN, COMMAND, argv)


if __name__ == "__main__":
    main()
