"""Image-text retrieval of a Karpathy image set with a trained checkpoint: R@1/5/10 both ways and their mean
(`txt_r*`: image->text, `img_r*`: text->image, percent, as ALBEF) and `{result_name}_retrieval_{split}.json`.

    python retrieval/test.py --cfg CFG --ckpt CKPT [--split test] [--k 128] [--chunk 1024] [--rescore itm+itc|itm|itc]
                             [--bs 32] [--result-path DIR] [--result-name NAME] [KEY VALUE ...]
    ./scripts/dist_run_single.sh N retrieval/test.py CFG OUT --ckpt CKPT [...]     (N processes, the same file)

Two stages: the dual encoder ranks every image for every caption and every caption for every image (in chunks of
--chunk rows, shared out over the processes); the matching head re-scores the best --k of each query.
"""
from __future__ import annotations

from collections.abc import Sequence

from common.config import load_config
from common.engine.entry import config_overrides
from common.engine.evaluate import TestCommand, evaluation_session, inference_device, test_parser, test_split_config
from retrieval.evaluate import DEFAULT_CHUNK, DEFAULT_K, RetrievalResult, run_retrieval
from retrieval.task import RETRIEVAL
from retrieval.two_stage import RESCORE_RULES

COMMAND = TestCommand("Image-text retrieval: R@1/5/10 of one Karpathy image set", result_path="./retrieval_result",
                      name_from_model_prefix=True)


def main(argv: Sequence[str] | None = None) -> RetrievalResult | None:
    """Run the retrieval; the result (file, metrics, score matrices) on rank 0, None on the other ranks."""
    parser = test_parser(COMMAND)
    parser.add_argument("--k", type=int, default=DEFAULT_K, help="candidates per query the matching head re-scores")
    parser.add_argument("--chunk", type=int, default=DEFAULT_CHUNK, help="rows of the similarity matrix at a time")
    parser.add_argument("--rescore", default="itm+itc", choices=RESCORE_RULES,
                        help="score of a candidate: the matching logit plus the first-stage similarity, the logit "
                        "alone, or the first-stage similarity alone (itc: the dual encoder, no re-scoring)")
    args = parser.parse_args(argv)
    with evaluation_session(args) as env:
        cfg = load_config(args.cfg, config_overrides(args.opts), add_task_defaults=RETRIEVAL.add_defaults)
        name = args.result_name or cfg.MODEL_PREFIX
        cfg = test_split_config(cfg, args.split, args.bs)
        result = run_retrieval(cfg, args.ckpt, env, args.result_path, name, args.k, args.chunk, args.rescore,
                               inference_device(env, args.gpus))
    if result is not None:
        print(" ".join(f"{key} {value:.2f}" for key, value in result.metrics.items()) + f"  ({result.path})")
    return result


if __name__ == "__main__":
    main()
