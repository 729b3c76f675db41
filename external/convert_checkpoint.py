"""Convert a DCP checkpoint folder (TRAIN.CHECKPOINT_FORMAT dcp, written by any number of processes) into today's
single-file `.model` (keys `state_dict`, `optimizer`, `scheduler`, ..., as a ddp run writes), and optionally into the
safetensors export of `external/export_checkpoint.py`. Runs in one process, no GPU or process group needed.

Usage: python external/convert_checkpoint.py --dcp RUN/vl-bert_x-0004.dcp --out X.model
                                             [--export DIR --task vqa --cfg CFG.yaml [KEY VALUE ...]]
"""
import argparse
import logging
import os
from collections.abc import Sequence

from common.engine.checkpoint import save_atomic
from common.model.dcp_files import is_dcp_folder, to_model_file
from common.model.state_dict_io import CheckpointError
from external.export_checkpoint import export_checkpoint
from external.original_keys import TASKS

log = logging.getLogger("convert_checkpoint")


def convert(dcp_dir: str, out: str) -> str:
    """Write the `.model` file of `dcp_dir` to `out` (atomically); returns `out`."""
    if not is_dcp_folder(dcp_dir):
        raise CheckpointError(f"--dcp {dcp_dir}: not a DCP checkpoint folder (no .metadata inside)")
    payload = to_model_file(dcp_dir)
    save_atomic(payload, out)
    log.info("converted %s (%d model tensors, optimizer state of %d parameters) to %s", dcp_dir,
             len(payload["state_dict"]), len(payload["optimizer"]["state"]), out)
    return out


def main(argv: Sequence[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dcp", required=True, help="a {prefix}-{epoch:04d}.dcp (or -best.dcp) folder")
    parser.add_argument("--out", required=True, help="the .model file to write")
    parser.add_argument("--export", default=None, help="also write the safetensors export folder here")
    parser.add_argument("--task", choices=TASKS, help="with --export: the task of the checkpoint")
    parser.add_argument("--cfg", help="with --export: the config it was trained with")
    parser.add_argument("opts", nargs="*", help="with --export: KEY VALUE config overrides")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.export and not (args.task and args.cfg):
        parser.error("--export needs --task and --cfg")
    try:
        out = convert(args.dcp, args.out)
        if args.export:
            export_checkpoint(out, args.cfg, args.task, args.export, overrides=args.opts)
    except (CheckpointError, ValueError, FileNotFoundError) as err:
        log.error("%s", err)
        raise SystemExit(2) from err
    return os.path.abspath(out)


if __name__ == "__main__":
    main()
