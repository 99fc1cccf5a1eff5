"""spec: CLIP hyperparameters as data. Pure Python: this package never imports torch.

- `ClipConfig`, `VisionConfig`, `TextConfig`, `PreprocessConfig`: frozen, validated hyperparameters.
- `shapes_of(config)`: the state-dict keys and shapes a config produces.
- `infer_config(shapes)`: the config a mapping of key -> shape describes; `check_shapes` compares the two.
- `list_models()`, `get_model_config()`, `add_model_config()`: OpenCLIP's JSON model configs.
- `available_models()`, `get_checkpoint()`, `openai_config()`: OpenAI's released checkpoints (URL, SHA-256,
  file name) and their architectures.
"""

from spec.checkpoints import OPENAI_BASE_URL, KnownCheckpoint, available_models, get_checkpoint
from spec.config import OPENAI_MEAN, OPENAI_STD, ClipConfig, PreprocessConfig, TextConfig, VisionConfig
from spec.errors import ClipcoreError
from spec.infer import check_shapes, infer_config, shapes_from
from spec.registry import add_model_config, builtin_configs, get_model_config, list_models, openai_config
from spec.shapes import shapes_of

__all__ = [
    "OPENAI_BASE_URL",
    "OPENAI_MEAN",
    "OPENAI_STD",
    "ClipConfig",
    "ClipcoreError",
    "KnownCheckpoint",
    "PreprocessConfig",
    "TextConfig",
    "VisionConfig",
    "add_model_config",
    "available_models",
    "builtin_configs",
    "check_shapes",
    "get_checkpoint",
    "get_model_config",
    "infer_config",
    "list_models",
    "openai_config",
    "shapes_from",
    "shapes_of",
]
