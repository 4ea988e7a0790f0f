"""The `cft` command line: one module per verb (parsing and orchestration only; the library does the work)."""

from __future__ import annotations

import argparse
import contextlib
import errno
import signal
import sys
from collections.abc import Sequence

from cft import __version__
from cft.cli import compare, concepts, demo, evaluate, explain, finetune, ls, masks, recipes, run
from cft.errors import CftError
from cft.registry import load_plugins


def build_parser() -> argparse.ArgumentParser:
    """The `cft` parser with every verb's sub-parser, in the order `cft --help` lists them."""
    parser = argparse.ArgumentParser(
        prog="cft",
        description="Concept-guided Fine-Tuning (CFT) for timm Vision Transformers.",
    )
    parser.add_argument("--version", action="version", version=f"cft {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for verb in (explain, demo, concepts, masks, evaluate, compare, run, finetune, recipes, ls):
        verb.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 2 a usage or input error) instead of exiting. The plug-ins
    (`cft.registry.load_plugins`) are loaded first: their names are in the choices and help texts."""
    argv = masks.route_masks_show(list(sys.argv[1:] if argv is None else argv))
    try:
        load_plugins()
        args = build_parser().parse_args(argv)
        with _sigterm_as_interrupt():
            return int(args.run(args) or 0)
    except SystemExit as stop:  # argparse: --help, --version and usage errors
        code = stop.code
        return code if isinstance(code, int) else (0 if code is None else 2)
    except CftError as err:
        print(f"cft: error: {user_message(err)}", file=sys.stderr)
        return 2
    except OSError as err:  # a fault of the machine, met while reading or writing: what, where and why
        print(f"cft: error: {os_error_message(err)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            "cft: interrupted: finished work is kept (saved epochs and training state, mask entries, cached LLM "
            "answers, finished runs); rerun the same command to continue (cft finetune: add --resume)",
            file=sys.stderr,
        )
        return 130


def os_error_message(err: OSError) -> str:
    """`path: reason` for an OS error (a read-only folder, a full disk, a name too long), with what is kept."""
    where = " -> ".join(str(name) for name in (err.filename, err.filename2) if name is not None)
    reason = err.strerror or str(err)
    hint = {
        errno.ENOSPC: "; free some space and rerun the same command: finished work is kept",
        errno.EDQUOT: "; free some space and rerun the same command: finished work is kept",
        errno.EROFS: "; choose a writable --out",
        errno.EACCES: "; check the permissions or choose another --out",
        errno.ENAMETOOLONG: "; choose a shorter path",
    }.get(err.errno or 0, "")
    return f"{where}: {reason}{hint}" if where else f"{reason}{hint}"


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """SIGTERM (a scheduler's kill, `timeout`) ends the run like Ctrl-C: one line, the finished work kept."""

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def user_message(err: CftError) -> str:
    """The error's message; for one re-raised from a DataLoader worker, only the worker's own message (torch
    pastes the worker's traceback into it)."""
    text = str(err)
    if "Original Traceback" not in text:
        return text
    last = [line for line in text.strip().splitlines() if line.strip()][-1]
    return last.split("CftError: ", 1)[-1]
