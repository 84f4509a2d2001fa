"""`--version` for the console scripts (`reservation-actor`, `reservation-ctl`,
`reservation-ocpp`): the installed distribution's version, so what an operator
reads is what pip installed, never a second copy of the number to forget."""

from __future__ import annotations

import argparse
import sys
from importlib.metadata import PackageNotFoundError, version

DISTRIBUTION = "reservation-actor"


def installed_version() -> str:
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:   # run from a source tree that was never installed
        return f"unknown ({DISTRIBUTION} is not installed: pip install -e .)"


class _VersionAction(argparse.Action):
    # argparse's own "version" action would read the metadata on every start-up.
    def __init__(self, option_strings: list[str], dest: str, **kwargs) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS,
                         help="print the program's name and version, then exit")

    def __call__(self, parser: argparse.ArgumentParser, *_) -> None:
        print(f"{parser.prog} {installed_version()}", file=sys.stdout)
        parser.exit()


def add_version_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--version", action=_VersionAction)
