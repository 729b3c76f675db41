"""Score image-text pairs with a trained matching model: `{result_name}_itm_{split}.json` (image, caption, label and
match probability per pair) and the matching accuracy.

    python itm/test.py --cfg CFG --ckpt CKPT [--split val] [--bs 16] [--result-path DIR] [KEY VALUE ...]
    ./scripts/dist_run_single.sh N itm/test.py CFG OUT --ckpt CKPT [...]     (N processes, the same file)
"""
from common.engine.evaluate import TestCommand, test_main
from itm.predictions import match_accuracy
from itm.task import ITM

COMMAND = TestCommand("Image-text matching: scores and accuracy of one split", name_from_model_prefix=True)


def main(argv=None) -> tuple[str, float] | None:
    """Score the split; returns (JSON path, accuracy) on rank 0, None on the other ranks."""
    result = test_main(ITM, COMMAND, argv)
    if result is None:
        return None
    accuracy = match_accuracy(result.predictions)
    print(f"image-text matching {result.predictions.image_set} accuracy: {accuracy * 100:.2f}% ({result.path})")
    return result.path, accuracy


if __name__ == "__main__":
    main()
