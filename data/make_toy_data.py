"""Generate the toy world (see PREPARE_DATA.md): `python data/make_toy_data.py --root data/toy --seed 0`."""
import argparse
import logging

from data.shape_world import WORLD_SIZES, generate


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", default="data/toy", help="output folder (created if missing)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the world; same seed -> same files")
    parser.add_argument("--size", default="small", choices=sorted(WORLD_SIZES),
                        help="small: seconds, for tests; demo: enough to learn the tasks in CPU minutes")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    generate(args.root, seed=args.seed, size=args.size)


if __name__ == "__main__":
    main()
