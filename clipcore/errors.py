"""clipcore's exceptions: the hierarchy lives in `spec.errors` (the bottom layer); this is its public face."""

from spec.errors import *  # noqa: F403
from spec.errors import __all__  # noqa: F401
