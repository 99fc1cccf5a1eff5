"""clipcore: load any CLIP checkpoint safely, infer its architecture from the tensors, run it anywhere."""

from clipcore.errors import ClipcoreError

__version__ = "0.1.0"

__all__ = ["ClipcoreError", "__version__"]
