"""Manage MNIST in the datamaestro store.

Its commands, check, import DIR and place: their --help and docs/runs.md, "Data". The store is $DATAMAESTRO_DIR
(default ~/datamaestro); MNIST lives in data/image/com/lecun/mnist.
"""

import sys
from pathlib import Path

from reg_runner import signals
from reg_runner.data import mnist, store as data_store
from reg_runner.errors import EXIT_USER_ERROR, Parser, UserError, one_line


def check() -> int:
    store = mnist.store_dir()
    print(f"datamaestro store for {mnist.DATASET_ID}: {store}")
    bad = 0
    for f in mnist.FILES:
        path = store / f"{f.key}.idx"
        state = "missing" if not path.exists() else "ok" if data_store.md5(path) == f.md5 else "WRONG CHECKSUM"
        bad += state != "ok"
        print(f"  {f.key + '.idx':18} {state}")
    if bad:
        print("fill it with: python -m reg_runner.data place   (or: import DIR)")
    return 1 if bad else 0


def store_state(store: Path):
    """What a signal's line says during place and import: whether the store is complete by then."""
    def what() -> str:
        if all(mnist._has_size(store / f"{f.key}.idx", f.size) for f in mnist.FILES):
            return f"with the store complete: {store}"
        return signals.NOTHING
    return what


def main(argv=None) -> int:
    parser = Parser(prog="python -m reg_runner.data", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("check", help="verify the store")
    imp = sub.add_parser("import", help="copy MNIST from a folder into the store, verified")
    imp.add_argument("folder", type=Path)
    sub.add_parser("place", help="fill the store from the copy shipped with reg_runner")
    args = parser.parse_args(argv)
    try:
        if args.command == "check":
            return check()
        store = mnist.store_dir()
        # a signal held while the files are written ends the command after them: its line says so
        with signals.command(what=store_state(store)):
            if args.command == "import":
                mnist.fill(store, args.folder, mnist.FILES, key=None,
                           said=lambda f, source: print(f"imported {source} -> {store / (f.key + '.idx')} (md5 ok)"))
                return 0
            print(f"store ready: {mnist.ensure_store()}")
            return 0
    except UserError as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as e:
        print(f"error: cannot write the datamaestro store: {one_line(e)}; set DATAMAESTRO_DIR to a writable folder",
              file=sys.stderr)
        return EXIT_USER_ERROR


if __name__ == "__main__":
    signals.finish(main())
