"""``atomgfm``: one command, verbs as thin layers over the library.

    atomgfm data demo --out demo_data          # generate the demo corpus (real calculators)
    atomgfm train configs/demo.yaml            # train (resumes from out_dir/last.pt)
    atomgfm evaluate runs/demo/best.pt         # per-dataset table + parity plots
    atomgfm info runs/demo/best.pt             # what a checkpoint holds
    atomgfm info                               # registered backbones, heads, readers, ...
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys


def _verb_modules() -> list:
    """Every module in :mod:`atomgfm.cli.verbs`, in their ``ORDER``."""
    import importlib
    import pkgutil

    from atomgfm.cli import verbs

    mods = [importlib.import_module(f"{verbs.__name__}.{m.name}")
            for m in pkgutil.iter_modules(verbs.__path__) if not m.name.startswith("_")]
    return sorted(mods, key=lambda m: (m.ORDER, m.__name__))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="atomgfm", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="verb", required=True)
    for mod in _verb_modules():
        name = mod.__name__.rsplit(".", 1)[1]
        v = sub.add_parser(name, help=mod.HELP, description=mod.__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        mod.add_arguments(v)
        v.set_defaults(func=mod.run)
    return p


# ---- logging and errors: library modules log to ``logging.getLogger(__name__)``; the CLI
# decides what is shown (stderr, "[atomgfm] message"). Command output (tables, JSON) is print.

log = logging.getLogger("atomgfm.cli")


class _StderrHandler(logging.StreamHandler):
    """Writes to ``sys.stderr`` as it is at each record (tests and callers may swap it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        if record.levelno != logging.INFO:
            msg = f"{record.levelname.lower()}: {msg}"
        if record.exc_info:
            msg += "\n" + self.formatException(record.exc_info)
        return f"[atomgfm] {msg}"


@contextlib.contextmanager
def cli_logging(level: int = logging.INFO):
    """Show the ``atomgfm`` loggers' records at ``level`` and above on stderr while inside;
    leaves the logging configuration as it found it."""
    logger = logging.getLogger("atomgfm")
    handler = _StderrHandler()
    handler.setFormatter(_Formatter())
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


def _add_verbosity(parser: argparse.ArgumentParser) -> None:
    """-v/--verbose (DEBUG) and -q/--quiet (warnings only), before or after any verb."""
    subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    for p in [parser, *(sp for a in subparsers for sp in a.choices.values())]:
        if "-v" in p._option_string_actions or "-q" in p._option_string_actions:
            continue  # a verb with its own -v/-q keeps them
        g = p.add_mutually_exclusive_group()
        g.add_argument("-v", "--verbose", dest="log_level", action="store_const",
                       const=logging.DEBUG, default=argparse.SUPPRESS,
                       help="show debug messages (and tracebacks of errors)")
        g.add_argument("-q", "--quiet", dest="log_level", action="store_const",
                       const=logging.WARNING, default=argparse.SUPPRESS,
                       help="show warnings and errors only")


def _message(exc: BaseException) -> str:
    if isinstance(exc, KeyError) and exc.args:
        return str(exc.args[0])  # str(KeyError) would quote the message
    if isinstance(exc, OSError) and exc.strerror and exc.filename:
        return f"{exc.filename}: {exc.strerror}"
    return str(exc)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    _add_verbosity(parser)
    args = parser.parse_args(argv)
    with cli_logging(getattr(args, "log_level", logging.INFO)):
        try:
            return args.func(args)
        except KeyboardInterrupt:
            print(f"atomgfm {args.verb}: interrupted", file=sys.stderr)
            return 130
        except (OSError, ValueError, KeyError) as exc:
            log.debug("traceback of the error below", exc_info=True)
            print(f"atomgfm {args.verb}: error: {_message(exc)}", file=sys.stderr)
            return 2


if __name__ == "__main__":
    sys.exit(main())
