"""kneeage: pediatric bone age from knee radiographs, and the tools to validate such a model."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from .errors import KneeageError  # noqa: E402

__version__ = "0.1.0"
__all__ = ["KneeageError", "__version__"]
