"""The ``merc`` command. Each sub-command lives next to the code it drives and registers itself here.

Contract (DESIGN.md): data stats · train · evaluate · predict · qc · adapt · demo; plus encoder list/finetune.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

# sub-command -> module defining ``add_parser(subparsers)``; the module sets ``func`` on its parser.
COMMANDS = {
    "data": "merc.data.cli",
    "encoder": "merc.encoders.cli",
    "train": "merc.training.cli",
    "evaluate": "merc.training.cli",
    "predict": "merc.training.cli",
    "qc": "merc.qc.cli",
    "adapt": "merc.training.adapt_cli",
    "demo": "merc.demo",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="merc", description="Multimodal emotion recognition in conversation.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    done: set[str] = set()
    for name, module in COMMANDS.items():
        if module in done:
            continue
        done.add(module)
        importlib.import_module(module).add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, FileExistsError, KeyError, ImportError) as e:
        # bad input or a missing optional package: one clear line; MERC_DEBUG=1 shows the traceback
        if os.environ.get("MERC_DEBUG"):
            raise
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"merc {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
