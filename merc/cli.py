"""The ``merc`` command. Each sub-command lives next to the code it drives and registers itself here.

Contract (DESIGN.md): data stats · train · evaluate · predict · qc · demo; plus encoder list/finetune.
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
    "demo": "merc.demo",
}


def build_parser() -> argparse.ArgumentParser:
    from merc import __version__
    parser = argparse.ArgumentParser(prog="merc", description="Multimodal emotion recognition in conversation.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    done: set[str] = set()
    for name, module in COMMANDS.items():
        if module in done:
            continue
        done.add(module)
        importlib.import_module(module).add_parser(sub)
    show_defaults(parser)
    return parser


def show_defaults(parser: argparse.ArgumentParser) -> None:
    """Every sub-command's help lists each flag's default (ArgumentDefaultsHelpFormatter, keeping a raw
    description where a command asked for one)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for p in set(action.choices.values()):
                if p.formatter_class is argparse.RawDescriptionHelpFormatter:
                    p.formatter_class = _RawDescriptionDefaults
                elif p.formatter_class is argparse.HelpFormatter:
                    p.formatter_class = argparse.ArgumentDefaultsHelpFormatter
                show_defaults(p)


class _RawDescriptionDefaults(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    pass


def _quiet_stdout() -> None:
    """After a closed pipe (``merc ... | head``): point stdout at /dev/null so the interpreter's final flush
    does not print a second error."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, inside the handlers below
        return code
    except KeyboardInterrupt:  # Ctrl-C: one line, the shell's exit code for SIGINT; outputs are written atomically
        print(f"merc {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`| head`): nothing to say
        _quiet_stdout()
        return 141
    except (ValueError, FileNotFoundError, FileExistsError, KeyError, ImportError) as e:
        # bad input or a missing optional package: one clear line; MERC_DEBUG=1 shows the traceback
        if os.environ.get("MERC_DEBUG"):
            raise
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"merc {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
