"""Local VQA v2 evaluation of an EvalAI result file with the official accuracy (`vqa/vqa_eval.py`).

    python vqa/eval.py --result RESULT.json --questions v2_OpenEnded_mscoco_val2014_questions.json
                       --annotations v2_mscoco_val2014_annotations.json [--json OUT.json]

Prints the overall accuracy and the accuracy per answer type (percent, two decimals, as the official tool).
"""
import argparse
import json

from common.atomic_write import write_json_atomic
from vqa.files import VQADataError, read_questions
from vqa.vqa_eval import evaluate, load_results


def read_annotation_entries(path: str) -> list[dict]:
    """The `annotations` list of a v2 annotations file; errors name the file."""
    with open(path) as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as err:
            raise VQADataError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        raise VQADataError(f"{path}: expected a JSON object with an 'annotations' list")
    return data["annotations"]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description="Official VQA v2 accuracy of a result file")
    parser.add_argument("--result", required=True, help="JSON list of {question_id, answer}")
    parser.add_argument("--questions", required=True, help="the split's questions file")
    parser.add_argument("--annotations", required=True, help="the split's annotations file")
    parser.add_argument("--json", default=None, help="also write the full report (per question type, per question)")
    args = parser.parse_args(argv)

    question_ids = {qid for qid, _, _ in read_questions(args.questions)}
    annotations = read_annotation_entries(args.annotations)
    annotated = {int(a["question_id"]) for a in annotations}
    if annotated != question_ids:
        raise VQADataError(f"{args.annotations} and {args.questions} list different question ids "
                           f"({len(annotated ^ question_ids)} differ)")
    report = evaluate(load_results(args.result), annotations)
    print(f"Overall accuracy: {report['overall']:.2f}  ({len(annotations)} questions)")
    for answer_type, value in sorted(report["perAnswerType"].items()):
        print(f"  {answer_type:<8s} {value:.2f}")
    if args.json:
        write_json_atomic(args.json, {k: v for k, v in report.items() if k != "perQuestion"}, indent=1)
    return report


if __name__ == "__main__":
    main()
