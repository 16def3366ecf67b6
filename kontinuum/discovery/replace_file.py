"""Writing a file whole: to a temporary file (0600, named `.tmp-*`, in the same directory)
renamed into place, so a reader finds the old content or the new, never half of it. No
fsync: callers whose copies may be lost in a crash (they are sent or read again) rely on
the rename being ordered after its data by the file systems in use."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

TEMPORARY_PREFIX = ".tmp-"


def replace_file(target: Path, content: bytes) -> None:
    """Write `content` to `target` whole; a failure leaves no temporary file behind."""
    descriptor, temporary = tempfile.mkstemp(prefix=TEMPORARY_PREFIX, dir=target.parent)
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(content)
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
