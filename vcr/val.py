"""Local VCR evaluation: run the Q->A and the QA->R model over val and report Q->A, QA->R and Q->AR accuracy.

    python vcr/val.py --a-cfg CFG --r-cfg CFG --a-ckpt CKPT --r-ckpt CKPT [--gpus 0] [--use-cache] [KEY VALUE ...]
    ./scripts/dist_run_single.sh N vcr/val.py CFG OUT --a-ckpt CKPT --r-ckpt CKPT [...]  (CFG serves both models)

Logits are cached as `{result_name}_a_pred.npy` / `{result_name}_r_pred.npy` ([N, 4]) under --result-path, with
the annot_id of each row in `..._pred_ids.txt` and what made them (checkpoint, config, annotation file) in
`..._pred_meta.json`. `--use-cache` reuses a cache only when that record matches the command; otherwise the model
runs again and the cache is rewritten, with a warning saying what differed (vcr/logit_cache.py).
"""
from vcr.combine import val_main


def main(argv=None) -> dict[str, float] | None:
    """Print and return the three accuracies (None on ranks other than 0)."""
    scores = val_main(argv)
    for name, value in (scores or {}).items():
        print(f"{name}: {value * 100:.2f}%")
    return scores


if __name__ == "__main__":
    main()
