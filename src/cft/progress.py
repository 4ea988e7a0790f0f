"""The one progress-bar rule: a tqdm bar on stderr when asked for and stderr is a terminal, else a silent one."""

from __future__ import annotations

import sys

from tqdm import tqdm


def progress_bar(total: int, desc: str, unit: str = "it", enabled: bool = True, initial: int = 0, leave: bool = True):
    """A tqdm bar (update / set_postfix / close work either way); disabled unless `enabled` and stderr is a TTY."""
    show = bool(enabled) and total > 0 and sys.stderr.isatty()
    return tqdm(
        total=total,
        initial=initial,
        desc=desc,
        unit=unit,
        leave=leave,
        file=sys.stderr,
        dynamic_ncols=True,
        disable=not show,
    )
