"""Writing a file whole: the one atomic write of kneeage (model weights and cards, training state, exports,
the PI password file)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable


def atomic_write(path: str | Path, data: bytes | str | Callable[[Path], object], private: bool = False) -> Path:
    """Write ``path`` into a temporary file beside it (``<name>.tmp``) and rename that over it, so a reader,
    or a kill mid-write, finds the old file or the new one, never half of one. ``data``: bytes, text, or a
    function that writes the file at the path it is given (savers such as safetensors' or torch's).
    ``private``: readable by the owner only (0600). Returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    if callable(data):
        data(tmp)
        if private:
            os.chmod(tmp, 0o600)
    else:
        fd = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600 if private else 0o666)
        with os.fdopen(fd, "wb" if isinstance(data, bytes) else "w") as f:
            f.write(data)
    tmp.replace(path)
    return path
