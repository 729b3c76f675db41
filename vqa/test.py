"""VQA v2 EvalAI result file: the argmax answer of every question of a split, with the real question ids.

    python vqa/test.py --cfg CFG --ckpt CKPT [--gpus 0] [--bs 64] [--result-path DIR] [--result-name NAME]
                       [--split test2015] [KEY VALUE ...]
    ./scripts/dist_run_single.sh N vqa/test.py CFG OUT --ckpt CKPT [...]     (N processes, the same file)

Writes `<result-path>/<result-name>_vqa2_<split>.json`, a JSON list of {"question_id": int, "answer": str}.
"""
from common.engine.evaluate import TestCommand, test_main
from vqa.task import VQA

COMMAND = TestCommand("VQA v2 result file (EvalAI format)", result_path="./test_result")


def main(argv=None) -> str | None:
    """Score the split; returns the path written (None on ranks other than 0)."""
    result = test_main(VQA, COMMAND, argv)
    if result is None:
        return None
    print(f"result file: {result.path}")
    return result.path


if __name__ == "__main__":
    main()
