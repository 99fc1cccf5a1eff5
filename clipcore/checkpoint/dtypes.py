"""Tables of the element types the checkpoint formats name, and the torch dtype each stands for.

Only names found in these tables are ever resolved: a pickle that names anything else is refused, and a
name is never looked up on the `torch` module (whose lazy attribute hook could import code).
"""

from __future__ import annotations

import torch


def _present(names: dict[str, str]) -> dict[str, torch.dtype]:
    """name -> dtype, for the dtypes this torch build has (newer ones are missing from older torch)."""
    return {name: getattr(torch, attr) for name, attr in names.items() if hasattr(torch, attr)}


# `torch.<Name>Storage` globals in torch.save pickles (the legacy typed-storage classes).
STORAGE_TYPES: dict[str, torch.dtype] = _present(
    {
        "DoubleStorage": "float64",
        "FloatStorage": "float32",
        "HalfStorage": "float16",
        "BFloat16Storage": "bfloat16",
        "LongStorage": "int64",
        "IntStorage": "int32",
        "ShortStorage": "int16",
        "CharStorage": "int8",
        "ByteStorage": "uint8",
        "BoolStorage": "bool",
        "ComplexDoubleStorage": "complex128",
        "ComplexFloatStorage": "complex64",
    }
)

# Untyped byte storages, paired with an explicit dtype by `_rebuild_tensor_v3` (dtypes newer than the
# typed-storage classes: uint16/32/64, float8 variants, ...).
UNTYPED_STORAGES = {("torch", "UntypedStorage"), ("torch.storage", "UntypedStorage")}

# `torch.<dtype>` globals that `_rebuild_tensor_v3` passes.
DTYPE_GLOBALS: dict[str, torch.dtype] = _present(
    {
        name: name
        for name in (
            "float64", "float32", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8",
            "bool", "complex128", "complex64", "complex32", "uint16", "uint32", "uint64",
            "float8_e5m2", "float8_e4m3fn", "float8_e5m2fnuz", "float8_e4m3fnuz", "float8_e8m0fnu",
        )
    }
)

# The safetensors header's dtype strings.
SAFETENSORS_DTYPES: dict[str, torch.dtype] = _present(
    {
        "F64": "float64",
        "F32": "float32",
        "F16": "float16",
        "BF16": "bfloat16",
        "I64": "int64",
        "I32": "int32",
        "I16": "int16",
        "I8": "int8",
        "U64": "uint64",
        "U32": "uint32",
        "U16": "uint16",
        "U8": "uint8",
        "BOOL": "bool",
        "C64": "complex64",
        "F8_E4M3": "float8_e4m3fn",
        "F8_E5M2": "float8_e5m2",
        "F8_E8M0": "float8_e8m0fnu",
    }
)

