"""VCR leaderboard file: Q->A probabilities and QA->R probabilities conditioned on each answer, one row per question.

    python vcr/test.py --a-cfg CFG --r-cfg CFG --a-ckpt CKPT --r-ckpt CKPT [--test-file JSONL] [--gpus 0]
                       [KEY VALUE ...]
    ./scripts/dist_run_single.sh N vcr/test.py CFG OUT --a-ckpt CKPT --r-ckpt CKPT [...]  (CFG serves both models)

Writes `{name}_test_result_Q2A.csv`, `{name}_test_result_QA2R.csv` and their join `{name}_test_result_Q2AR.csv`
(columns annot_id, answer_0..3, rationale_conditioned_on_a{i}_{j}) under --result-path.
"""
from vcr.combine import test_main


def main(argv=None) -> str | None:
    """Write the leaderboard files; returns the merged file's path (None on ranks other than 0)."""
    merged = test_main(argv)
    if merged is not None:
        print(f"leaderboard file: {merged}")
    return merged


if __name__ == "__main__":
    main()
