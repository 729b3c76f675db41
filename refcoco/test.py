"""Score a RefCOCO+ checkpoint on one split and write `{result_name}_refcoco+_{split}.json` (one {"ref_id", "box"}
per expression, box = [x1, y1, x2, y2] in original pixels).

    python refcoco/test.py --cfg CFG --ckpt CKPT --split {val,testA,testB,test} [--gpus 0] [--bs 8]
                           [--result-path DIR] [--result-name NAME] [KEY VALUE ...]
    ./scripts/dist_run_single.sh N refcoco/test.py CFG OUT --ckpt CKPT [...]     (N processes, the same file)

The printed accuracy is the original evaluation's: a prediction is correct when its IoU with the referred box
(`getRefBox` as [x, y, x + w, y + h]) is >= 0.5, areas counted with the +1-pixel convention
((x2 - x1 + 1)(y2 - y1 + 1)), so the numbers compare with the original's and the paper's. The labels of all
RefCOCO+ splits are public, so testA/testB are scored here too. "test" is testA and testB together, as the
refer API's split rule gives.
"""
from common.engine.evaluate import TestCommand, test_main
from refcoco.predictions import report_accuracy
from refcoco.task import TASK

COMMAND = TestCommand("RefCOCO+ test: result JSON and accuracy of one split", result_path="./refcoco_test_result",
                      name_from_model_prefix=True, splits=("val", "testA", "testB", "test"), default_split="val")


def main(argv=None) -> tuple[str, float] | None:
    """Score the split; returns (JSON path, accuracy) on rank 0, None on the other ranks."""
    result = test_main(TASK, COMMAND, argv)
    if result is None:
        return None
    accuracy = report_accuracy(result.predictions, result.path)
    print(f"RefCOCO+ {result.predictions.image_set} accuracy: {accuracy * 100:.2f}% ({result.path})")
    return result.path, accuracy


if __name__ == "__main__":
    main()
