"""Data check: `python data/check.py --cfg <yaml> [--task <task folder>] [--all] [--workers N] [--samples N]
[KEY VALUE ...]`.

Prints one list of every missing or broken file the config would read (with the config key behind it); exit 1 if any.
The network weights are checked here; the data files by the task's own check (`Task.check_data`, e.g. vqa/check.py).
By default a spread sample of `--samples` images and box files per split is read; `--all` reads every one, in
`--workers` processes, with a progress bar. Every annotation file is read whole in both modes.
"""
import argparse
import importlib
import logging
import os
import sys
from pathlib import Path

from common.config import ConfigError, load_config
from common.data.preflight import check_data
from common.engine.task import Task

log = logging.getLogger("data.check")
TASKS = ("vqa", "vcr", "refcoco", "pretrain", "itm", "retrieval")  # folders whose task.py defines TASK


def load_task(name: str) -> Task:
    """The `TASK` value of `<name>/task.py`."""
    return importlib.import_module(f"{name}.task").TASK


def infer_task(cfg_path: str) -> str:
    """The task from the config's folder name (`cfgs/vqa/...` -> vqa)."""
    folder = Path(cfg_path).resolve().parent.name
    if folder not in TASKS:
        raise SystemExit(f"--task not given and the folder of {cfg_path} ({folder!r}) is not one of {TASKS}")
    return folder


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--cfg", required=True, help="experiment YAML")
    p.add_argument("--task", choices=TASKS, help="default: the name of the config's folder")
    p.add_argument("--samples", type=int, default=20, help="images and box files checked per split")
    p.add_argument("--all", action="store_true", help="check every image and box file, not a sample")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="processes that read the files (default: one per CPU, %(default)s here)")
    p.add_argument("overrides", nargs="*", help="KEY VALUE pairs, as for training")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    name = args.task or infer_task(args.cfg)
    task = load_task(name)
    try:
        cfg = load_config(args.cfg, args.overrides, task.add_defaults)
    except (ConfigError, OSError) as err:
        log.error("config does not load: %s", err)
        return 2
    problems = check_data(cfg, task, samples=None if args.all else args.samples, workers=args.workers,
                          progress=True)
    if problems:
        log.error("%d problem(s) found for %s (%s):\n%s", len(problems), args.cfg, name,
                  "\n".join(f"  - {p}" for p in problems))
        return 1
    log.info("data check passed for %s (%s%s)", args.cfg, name, ", every file" if args.all else
             f", {args.samples} samples per split")
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    sys.exit(main())
