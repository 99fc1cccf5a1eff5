"""clipcore: load any CLIP checkpoint safely, infer its architecture from the tensors, run it anywhere.

    import clipcore
    model, preprocess = clipcore.load("ViT-B/32")            # or a local file, in any supported format
    image = preprocess(PIL.Image.open("cat.png")).unsqueeze(0)
    text = clipcore.tokenize(["a cat", "a dog"])
    logits_per_image, logits_per_text = model(image, text)
"""

from clipcore.api import available_models, default_device, load
from clipcore.download import download
from clipcore.errors import ClipcoreError
from clipcore.export import export_torchscript
from clipcore.factory import (
    add_model_config,
    create_model,
    create_model_and_transforms,
    create_model_from_pretrained,
    get_tokenizer,
    list_models,
    list_pretrained,
)
from clipcore.preprocess import Preprocess
from clipcore.tokenizer import Tokenizer, tokenize

__version__ = "0.1.0"

__all__ = [
    "ClipcoreError",
    "Preprocess",
    "Tokenizer",
    "__version__",
    "add_model_config",
    "available_models",
    "create_model",
    "create_model_and_transforms",
    "create_model_from_pretrained",
    "default_device",
    "download",
    "export_torchscript",
    "get_tokenizer",
    "list_models",
    "list_pretrained",
    "load",
    "tokenize",
]
