"""Atomic file writes: an output appears under its final name complete or not at all.

Every stage writes its files (image stores, reject tables, tokens, checkpoints, exported
weights) beside their final names and renames them into place, so a killed job never
leaves a partial file that looks complete.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_output(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; it replaces ``path`` only if the block succeeds.

    The temporary name is fixed (``.<name>.tmp``), so the leftover of a writer killed with
    SIGKILL, which no handler can delete, is overwritten by the rerun instead of piling up
    (a killed gather of MIMIC-CXR leaves ~115 GB). One writer per output is assumed, as
    Snakemake's lock guarantees. On any error the temporary file is deleted and an older
    ``path`` (if any) is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
