"""The command line: argv -> one verb. The only place that reads argv."""

from __future__ import annotations

import argparse
import importlib
import sys

from harness import __version__
from harness.commands import VERBS
from harness.errors import UsageError


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit 2 (argparse prints the usage block too)."""

    def error(self, message: str) -> None:  # noqa: D401
        # self.prog is "harness" or "harness VERB": the prefix is written once
        sys.stderr.write(f"{self.prog}: error: {one_line(message)} (see --help)\n")
        raise SystemExit(2)


MAX_ERROR_CHARS = 600


def one_line(message: str) -> str:
    """An error message as one bounded line (the values inside are already abbreviated; paths may be
    long)."""
    text = " ".join(message.split())
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 3] + "..."


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="harness", description="Verify a parallel LLM serving strategy on real hardware."
    )
    parser.add_argument("--version", action="version", version=f"harness {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB", parser_class=_Parser)
    for verb, (module, help_text) in VERBS.items():
        p = sub.add_parser(verb, help=help_text, description=help_text)
        _load(module).add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def _load(module: str):
    return importlib.import_module(f"harness.commands.{module}")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.verb:
        parser.print_help()
        return 2
    try:
        return int(_load(args._module).main(args) or 0)
    except UsageError as e:
        sys.stderr.write(f"harness {args.verb}: error: {one_line(str(e))}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write(f"harness {args.verb}: interrupted\n")
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
