"""Training checkpoints: written atomically, read without pickle, enough to resume bit for bit.

A checkpoint is a folder `<root>/step_00000100/` holding

    open_clip_model.safetensors   the model's state dict (OpenCLIP key names: loadable by clipcore and by
                                  open_clip.create_model('local-dir:<folder>'), with the config below)
    open_clip_config.json         {"model_cfg": OpenCLIP JSON config, "preprocess_cfg": ...} when known
    optimizer.safetensors         the optimizer's tensors, keyed "<parameter name>/<state key>"
    train_state.json              format, step, the training config, world size, the optimizer's
                                  hyperparameters per group, the grad scaler's state
    rng_rank<r>.json              each rank's random-generator states (torch CPU and CUDA, Python, numpy)

Everything is first written into a hidden `.step_00000100.tmp` folder, each file flushed to disk, then the
folder is renamed into place: a crash at any moment leaves either the complete checkpoint or none (a
left-over `.tmp` folder is ignored and removed by the next save). The newest complete folder is the one to
resume from; older ones beyond `keep` are deleted.

Nothing here unpickles: safetensors and JSON only, so resuming from an untrusted folder cannot run code.
"""

from __future__ import annotations

import base64
import json
import os
import random
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import safetensors
import safetensors.torch
import torch

from clipcore.errors import CheckpointError

__all__ = [
    "CHECKPOINT_FORMAT",
    "capture_rng",
    "checkpoint_dir",
    "latest_checkpoint",
    "list_checkpoints",
    "load_optimizer",
    "optimizer_tensors",
    "read_json",
    "restore_rng",
    "write_checkpoint",
]

CHECKPOINT_FORMAT = "clipcore-train-checkpoint/1"
MODEL_FILE = "open_clip_model.safetensors"
CONFIG_FILE = "open_clip_config.json"
OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "train_state.json"
_STEP_DIR = re.compile(r"^step_(\d{8,})$")


def checkpoint_dir(root: str | os.PathLike, step: int) -> Path:
    return Path(root) / f"step_{step:08d}"


def list_checkpoints(root: str | os.PathLike) -> list[Path]:
    """The complete checkpoints under `root`, oldest first (hidden .tmp folders are not checkpoints)."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_DIR.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def latest_checkpoint(root: str | os.PathLike) -> Path | None:
    checkpoints = list_checkpoints(root)
    return checkpoints[-1] if checkpoints else None


# --- writing ------------------------------------------------------------------------------------------------


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    _fsync(path)


def _write_tensors(path: Path, tensors: Mapping[str, torch.Tensor]) -> None:
    safetensors.torch.save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(path))
    _fsync(path)


def write_checkpoint(
    root: str | os.PathLike,
    step: int,
    *,
    model_state: Mapping[str, torch.Tensor],
    optimizer_state: Mapping[str, torch.Tensor],
    state: Mapping[str, Any],
    rng_states: Mapping[int, Any],
    model_config: Mapping[str, Any] | None = None,
    keep: int | None = None,
) -> Path:
    """Write a complete checkpoint for `step` atomically; returns its folder.

    `rng_states` maps rank -> `capture_rng()` of that rank (only what this process knows: in a multi-process
    run every rank calls `write_rng` into the staging folder first; see the training loop).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final, staging = checkpoint_dir(root, step), staging_dir(root, step)
    if not staging.is_dir():
        staging.mkdir()
    for rank, rng in rng_states.items():
        write_rng(staging, rank, rng)
    _write_tensors(staging / MODEL_FILE, model_state)
    _write_tensors(staging / OPTIMIZER_FILE, optimizer_state)
    if model_config is not None:
        _write_json(staging / CONFIG_FILE, model_config)
    _write_json(staging / STATE_FILE, {"format": CHECKPOINT_FORMAT, "step": step, **state})
    _fsync(staging)
    if final.exists():  # the same step written again (e.g. a rerun): the new one replaces it
        shutil.rmtree(final)
    os.replace(staging, final)
    _fsync(root)
    for old in [p for p in root.iterdir() if p.name.startswith(".step_") and p.name.endswith(".tmp")]:
        shutil.rmtree(old, ignore_errors=True)  # staging folders of writes that crashed
    if keep is not None:
        for old in list_checkpoints(root)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def staging_dir(root: str | os.PathLike, step: int) -> Path:
    """Where the checkpoint for `step` is assembled before it is renamed into place."""
    return Path(root) / f".step_{step:08d}.tmp"


def write_rng(folder: Path, rank: int, rng: Any) -> None:
    _write_json(folder / f"rng_rank{rank}.json", rng)


# --- optimizer state by parameter name ----------------------------------------------------------------------


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """(tensors keyed '<parameter name>/<state key>', the groups' hyperparameters without the parameters).

    Parameters are named by the `names` list each group carries (see `optim.param_groups`), so the state
    can be matched to parameters by name on load rather than by position.
    """
    tensors, groups = {}, []
    for group in optimizer.param_groups:
        names = group.get("names")
        if names is None or len(names) != len(group["params"]):
            raise CheckpointError(
                "the optimizer's parameter groups do not name their parameters",
                fix="build the optimizer with clipcore.train.optim.build_optimizer",
            )
        for name, param in zip(names, group["params"], strict=True):
            for key, value in optimizer.state.get(param, {}).items():
                if not isinstance(value, torch.Tensor):
                    value = torch.tensor(value, dtype=torch.float64)
                tensors[f"{name}/{key}"] = value
        groups.append(
            {k: (list(v) if isinstance(v, tuple) else v) for k, v in group.items() if k != "params"}
        )
    return tensors, groups


def load_optimizer(optimizer: torch.optim.Optimizer, folder: Path, saved_groups: list[dict]) -> None:
    """Restore `optimizer` from a checkpoint folder; its groups must train the same parameters by name."""
    current = [group.get("names") for group in optimizer.param_groups]
    saved = [group.get("names") for group in saved_groups]
    if current != saved:
        raise CheckpointError(
            f"the optimizer state in {folder} is for other parameters than the model now trains "
            f"({sum(map(len, saved))} saved vs {sum(len(n or []) for n in current)} now)",
            fix="resume with the same model and the same locking options as the run that wrote it",
        )
    tensors = read_tensors(folder / OPTIMIZER_FILE)
    state: dict[int, dict[str, torch.Tensor]] = {}
    index = 0
    for names in current:
        for name in names:
            keys = [k for k in tensors if k.rpartition("/")[0] == name]
            if keys:
                state[index] = {k.rpartition("/")[2]: tensors[k] for k in keys}
            index += 1
    groups, index = [], 0
    for saved_group in saved_groups:
        n = len(saved_group["names"])
        groups.append({**saved_group, "params": list(range(index, index + n))})
        index += n
    optimizer.load_state_dict({"state": state, "param_groups": groups})


# --- reading ------------------------------------------------------------------------------------------------


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing", fix="resume from a complete checkpoint folder") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(
            f"{path} cannot be read as JSON: {err}", fix="resume from another checkpoint"
        ) from None


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return safetensors.torch.load_file(str(path))
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing", fix="resume from a complete checkpoint folder") from None
    except (OSError, safetensors.SafetensorError, ValueError) as err:
        raise CheckpointError(
            f"{path} is not a readable safetensors file: {err}", fix="resume from another checkpoint"
        ) from None


def read_checkpoint(folder: str | os.PathLike) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(train_state.json, the model's tensors) of a checkpoint folder, after checking its format."""
    folder = Path(folder)
    state = read_json(folder / STATE_FILE)
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{folder / STATE_FILE} is not a clipcore training checkpoint (format {state.get('format')!r})"
            if isinstance(state, dict)
            else f"{folder / STATE_FILE} is not a JSON object",
            fix=f"resume from a folder written by clipcore.train (format {CHECKPOINT_FORMAT})",
        )
    return state, read_tensors(folder / MODEL_FILE)


# --- random generators --------------------------------------------------------------------------------------


def _bytes_to_text(t: torch.Tensor) -> str:
    return base64.b64encode(t.numpy().tobytes()).decode("ascii")


def _text_to_bytes(s: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(s)), dtype=torch.uint8)


def capture_rng() -> dict[str, Any]:
    """This process's random-generator states, as JSON-ready data."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": _bytes_to_text(torch.get_rng_state()),
        "python": [version, list(internal), gauss],
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
    }
    if torch.cuda.is_available():
        state["cuda"] = [_bytes_to_text(s) for s in torch.cuda.get_rng_state_all()]
    return state


def restore_rng(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(_text_to_bytes(state["torch"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        saved = [_text_to_bytes(s) for s in state["cuda"]]
        if len(saved) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(saved)
