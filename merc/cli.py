"""The ``merc`` command. Each sub-command lives next to the code it drives and registers itself here.

Contract (docs/design.md): data stats · extract · train · evaluate · predict · qc · adapt ·
experiment · serve · demo;
plus encoder list/finetune.

Errors: a :class:`merc.errors.MercError` (something the user can fix) is printed as one line
``merc <command>: error: ...`` on stderr with exit code 2 (``MERC_DEBUG=1`` re-raises it with its traceback);
any other exception is a bug and propagates with its traceback.

Logging: library modules log through ``logging.getLogger(__name__)``; the top-level options choose what the
user sees: ``-v/--verbose`` (DEBUG), default INFO, ``--quiet`` (WARNING and no progress bars). What a command
exists to print (tables, JSON) goes to stdout with ``print`` in the CLI modules.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import re
import sys

from merc.errors import MercError

# sub-command -> module defining ``add_parser(subparsers)``; the module sets ``func`` on its parser.
COMMANDS = {
    "data": "merc.data.cli",
    "encoder": "merc.encoders.cli",
    "extract": "merc.training.extract",
    "train": "merc.training.cli",
    "evaluate": "merc.training.cli",
    "predict": "merc.training.cli",
    "qc": "merc.qc.cli",
    "experiment": "merc.training.experiment_cli",
    "adapt": "merc.training.adapt_cli",
    "serve": "merc.serve.cli",
    "demo": "merc.demo",
}


def build_parser() -> argparse.ArgumentParser:
    from merc import __version__
    parser = argparse.ArgumentParser(prog="merc", description="Multimodal emotion recognition in conversation.")
    level = parser.add_mutually_exclusive_group()
    level.add_argument("-v", "--verbose", action="store_true", help="debug messages (default: info)")
    # dest differs from the sub-commands' own --quiet: a sub-parser's default would overwrite this one
    level.add_argument("--quiet", dest="top_quiet", action="store_true",
                       help="warnings and errors only, no progress bars")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    done: set[str] = set()
    for module in COMMANDS.values():
        if module in done:
            continue
        done.add(module)
        importlib.import_module(module).add_parser(sub)
    show_defaults(parser)
    return parser


def configure_logging(level: int) -> None:
    """Messages of the ``merc`` loggers on stderr as ``merc: message`` (level name for warnings and above)."""
    handler = _StderrHandler()
    handler.setFormatter(_Formatter())
    root = logging.getLogger("merc")
    for h in list(root.handlers):
        if getattr(h, "_merc_cli", False):
            root.removeHandler(h)
    handler._merc_cli = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of the message (pytest's capture swaps it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        if record.levelno >= logging.WARNING:
            msg = f"{record.levelname.lower()}: {msg}"
        if record.exc_info:
            msg += "\n" + self.formatException(record.exc_info)
        return f"merc: {msg}"


class DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Each flag's help ends with its default, "(default: X)", or "(required)", unless it says its default itself
    ("default: kept"). A help ending in "[X]" (a
    default that a preset may override, the flag's own default being None) shows it as "(default: X)"; a None
    default that the help already explains ("None: …", "when omitted") is not repeated as "(default: None)"."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.required:
            return f"{text} (required)"
        if re.search(r"\bdefault\b", text, re.IGNORECASE):  # the help states its default itself: once is enough
            return text
        if action.default is None:
            bracket = re.search(r"\s*\[([^\]]+)\]\s*$", text)
            if bracket:
                return f"{text[:bracket.start()]} (default: {bracket.group(1)})"
            if re.search(r"None:|omitted|not given", text):
                return text
        return super()._get_help_string(action)


class _RawDescriptionDefaults(argparse.RawDescriptionHelpFormatter, DefaultsFormatter):
    pass


def show_defaults(parser: argparse.ArgumentParser) -> None:
    """Every sub-command's help lists each flag's default (:class:`DefaultsFormatter`, keeping a raw
    description where a command asked for one)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for p in set(action.choices.values()):
                raw = issubclass(p.formatter_class, argparse.RawDescriptionHelpFormatter)
                p.formatter_class = _RawDescriptionDefaults if raw else DefaultsFormatter
                show_defaults(p)


@contextlib.contextmanager
def no_progress_bars(quiet: bool):
    """``--quiet``: no progress bar from merc (``progress=False``) nor from the libraries it calls:
    huggingface_hub's, switched off through its API, and transformers' ("Loading weights"), which takes its
    initial state from huggingface_hub's when imported (and is switched off directly when already imported).
    Everything is switched back on afterwards (``main`` may be called again in-process). The environment
    variable HF_HUB_DISABLE_PROGRESS_BARS is not used: huggingface_hub reads it once, at import, and would then
    refuse to turn its bars back on."""
    if not quiet:
        yield
        return
    try:
        from huggingface_hub import utils as hub
    except ImportError:  # no text encoder installed: no library bars to hide
        yield
        return
    hub_was_on = not hub.are_progress_bars_disabled()
    hub.disable_progress_bars()
    hf_logging = sys.modules.get("transformers.utils.logging")
    tf_was_on = hf_logging is not None and hf_logging.is_progress_bar_enabled()
    if hf_logging is not None:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if hub_was_on:
            hub.enable_progress_bars()
        hf_logging_now = sys.modules.get("transformers.utils.logging")
        if hf_logging_now is not None and (tf_was_on or (hf_logging is None and hub_was_on)):
            hf_logging_now.enable_progress_bar()  # on before, or imported while quiet (it was on by default)


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
    quiet = bool(args.top_quiet or getattr(args, "quiet", False))
    args.quiet = quiet  # every sub-command reads args.quiet (no progress bars)
    configure_logging(logging.DEBUG if args.verbose else logging.WARNING if quiet else logging.INFO)
    try:
        from merc.threads import apply_threads
        apply_threads(getattr(args, "threads", 0))  # --threads of the commands that compute
        device = contextlib.nullcontext()
        if getattr(args, "device", None) is not None:  # --device of the commands that run torch models
            from merc.device import resolve_device, using_device
            args.device = resolve_device(args.device)
            device = using_device(args.device)
        with no_progress_bars(quiet), device:
            code = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, inside the handlers below
        return code
    except KeyboardInterrupt:  # Ctrl-C: one line, the shell's exit code for SIGINT; outputs are written atomically
        print(f"merc {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`| head`): nothing to say
        _quiet_stdout()
        return 141
    except MercError as e:  # something the user can fix: one line; anything else is a bug -> traceback
        if os.environ.get("MERC_DEBUG"):
            raise
        print(f"merc {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
