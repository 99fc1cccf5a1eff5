"""Checkpoint readers: any supported file (or model folder) -> {key: tensor}, with nothing executed.

    with open_checkpoint(path) as checkpoint:
        shapes = checkpoint.shapes()               # no tensor data read
        for key in checkpoint:
            tensor = checkpoint.get(key, torch.float32)  # read now, converted; the caller owns it

Formats, told apart by their bytes: safetensors (memory-mapped), torch.save zip files, OpenAI TorchScript
archives (read as zips with a restricted unpickler; never torch.jit.load), legacy non-zip torch.save files,
and folders of Hugging Face / OpenCLIP snapshots. OpenCLIP training checkpoints, `module.` prefixes and the
Hugging Face CLIPModel layout are unwrapped into OpenAI/OpenCLIP state-dict keys.
"""

from clipcore.checkpoint.detect import FORMATS, detect_format
from clipcore.checkpoint.reader import Checkpoint, open_checkpoint, read_state_dict

__all__ = ["FORMATS", "Checkpoint", "detect_format", "open_checkpoint", "read_state_dict"]
