"""Progress bars for long work: tqdm on stderr.

A bar that an error interrupts is erased, so on a terminal the error's one line is what is left
(tqdm on its own leaves the stopped bar, or an empty line when it had drawn nothing yet).
"""
from __future__ import annotations

import os
import sys
from typing import Iterator, Sequence, TypeVar

T = TypeVar("T")


def shown(requested: bool = True) -> bool:
    """Whether to draw a bar: asked for, and stderr is a terminal (a log file or a pipe gets no
    bar); ``FARM_PROGRESS=always`` draws it anyway (tests read it)."""
    return requested and (sys.stderr.isatty() or os.environ.get("FARM_PROGRESS") == "always")


def progress(items: Sequence[T], desc: str, unit: str, *, disable: bool = False,
             leave: bool = True) -> Iterator[T]:
    """``items`` one by one, with a bar counting them (``unit`` each)."""
    from tqdm import tqdm

    bar = tqdm(total=len(items), desc=desc, unit=unit, file=sys.stderr, disable=not shown(not disable), leave=leave,
               dynamic_ncols=True)
    try:
        for item in items:
            yield item
            bar.update()
    except BaseException:  # GeneratorExit too: the loop over us stopped on an error
        bar.leave = False
        raise
    finally:
        bar.close()
