"""VCR leaderboard file: Q->A probabilities and QA->R probabilities conditioned on each answer, one row per question.

Writes `{name}_test_result_Q2A.csv`, `{name}_test_result_QA2R.csv` and their join `{name}_test_result_Q2AR.csv`
(columns annot_id, answer_0..3, rationale_conditioned_on_a{i}_{j}) under --result-path.
"""
import logging
import os

from vcr.predictions import merge_result_csvs, write_q2a_csv, write_qa2r_csv
from vcr.val import cached_logits, parse_args

log = logging.getLogger("vcr.test")


def main(argv=None) -> str:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    args = parse_args(argv, test=True)
    a_logits, a_ids = cached_logits(args, "a", "test", args.test_file)
    r_logits, r_ids = cached_logits(args, "r", "test", args.test_file)
    grouped = len(r_ids) % 4 == 0 and all(len(set(r_ids[k:k + 4])) == 1 for k in range(0, len(r_ids), 4))
    if not grouped or len(set(r_ids)) != len(r_ids) // 4:
        raise ValueError("QA->R test predictions must hold 4 consecutive rows (one per conditioning answer) per "
                         "question; rerun without --use-cache")
    if set(a_ids) != set(r_ids):
        raise ValueError("the Q->A and QA->R predictions cover different questions; rerun without --use-cache")
    stem = os.path.join(args.result_path, f"{args.result_name}_test_result")
    q2a = write_q2a_csv(f"{stem}_Q2A.csv", a_ids, a_logits)
    qa2r = write_qa2r_csv(f"{stem}_QA2R.csv", r_ids[::4], r_logits.reshape(-1, 4, 4))
    merged = merge_result_csvs(q2a, qa2r, f"{stem}_Q2AR.csv")
    print(f"leaderboard file: {merged}")
    return merged


if __name__ == "__main__":
    main()
