"""The bundled demo model and the synthetic pictures it was trained on: it loads offline on the CPU by name, is
what its provenance record says, and classifies the fixed held-out set clearly right; the training script
writes a loadable model and an honest record."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import clipcore
from clipcore import demo, synthetic
from clipcore.checkpoint import open_checkpoint
from spec import ClipConfig, shapes_of

pytestmark = pytest.mark.usefixtures("one_thread")

# Zero-shot top-1 over the 48 colour-and-shape classes on the fixed held-out set (480 pictures, chance 2%).
# The shipped model's own figure is in demo.json; this is the floor under which the demo would not convince.
HELD_OUT_TOP1 = 0.95
MAX_BYTES = 15 * 2**20


def same_architecture(a: ClipConfig, b: ClipConfig) -> bool:
    """The same model: the same tensors and the same facts the tensors cannot tell. (Configs may still differ
    in fields the architecture ignores, such as a ResNet's patch_size: the script's default, the reader's None.)"""
    return shapes_of(a) == shapes_of(b) and (a.quick_gelu, a.vision.head_width, a.text.heads) == (
        b.quick_gelu, b.vision.head_width, b.text.heads)


@pytest.fixture(scope="module")
def bundled():
    return clipcore.load("demo", device="cpu")


def test_loads_by_name_offline_on_cpu(monkeypatch):
    monkeypatch.setenv("CLIPCORE_OFFLINE", "1")
    monkeypatch.setenv("CLIPCORE_CACHE", "/nonexistent/cache")
    model, preprocess = clipcore.load("demo", device="cpu")
    record = demo.provenance()
    assert same_architecture(model.config, ClipConfig.from_openclip(record["model_cfg"]))
    assert model.config.assumed == ()  # the file's header says everything the shapes cannot
    assert preprocess.size == (64, 64) and next(model.parameters()).device.type == "cpu"


def test_the_file_is_what_its_record_says():
    path, record = demo.weights_path(), demo.provenance()
    data = path.read_bytes()
    assert record["sha256"] == hashlib.sha256(data).hexdigest() and record["bytes"] == len(data) <= MAX_BYTES
    with open_checkpoint(path) as checkpoint:
        assert set(checkpoint.dtypes().values()) == {torch.float16}
        assert sum(int(np.prod(s)) for s in checkpoint.shapes().values()) == record["parameters"]
    assert record["command"].startswith("python scripts/train_demo.py") and f"--seed {record['train']['seed']}" in \
        record["command"]
    assert record["built_with"]["torch"] and record["held_out"]["seed"] == demo.EVAL_SEED


def test_held_out_accuracy(bundled):
    model, preprocess = bundled
    scores = demo.evaluate(model, preprocess)
    assert scores["count"] == 480 and scores["classes"] == 48
    assert scores["top1"] >= HELD_OUT_TOP1
    assert scores["top1"] == pytest.approx(demo.provenance()["held_out"]["top1"], abs=0.01)
    assert scores["colour"] >= 0.9  # the attributes the captions name are read, not guessed (chance 1/8)


def test_the_held_out_set_is_fixed_and_balanced():
    first, again = demo.held_out_scenes(), demo.held_out_scenes()
    assert first == again and len(first) == 48 * demo.EVAL_PER_CLASS
    assert [s.label for s in first[:: demo.EVAL_PER_CLASS]] == synthetic.class_names()
    a, b = synthetic.render(first[0]), synthetic.render(again[0])
    assert np.array_equal(np.asarray(a), np.asarray(b)) and a.size == (64, 64) and a.mode == "RGB"
    # Nuisances vary within a class.
    assert len({(s.x, s.y, s.background, s.size) for s in first[: demo.EVAL_PER_CLASS]}) == demo.EVAL_PER_CLASS


def test_captions_name_the_attributes():
    rng = np.random.default_rng(0)
    for scene in synthetic.scenes(3, 50):
        text = synthetic.caption(scene, rng)
        assert scene.colour in text and scene.shape in text
        assert set(text.split()) <= set(" ".join(t for t, _ in synthetic.CAPTIONS).split()) | {
            scene.colour, scene.shape, scene.size, scene.background, "{size}", "{colour}"}
    fixed = synthetic.scenes(4, 5, shape="heart", colour="blue")
    assert {s.label for s in fixed} == {"blue heart"}
    with pytest.raises(clipcore.ClipcoreError, match="'hexagon'"):
        synthetic.scenes(0, 1, shape="hexagon")


def test_predict_and_top(bundled):
    model, preprocess = bundled
    scenes = [synthetic.random_scene(np.random.default_rng(i), shape="star", colour="yellow") for i in range(3)]
    found = demo.predict(model, preprocess, [synthetic.render(s) for s in scenes], ["a yellow star", "a blue square"])
    assert found.probs.shape == (3, 2) and torch.allclose(found.probs.sum(1), torch.ones(3))
    assert [found.top(i, 1)[0][0] for i in range(3)] == ["a yellow star"] * 3
    with pytest.raises(clipcore.ClipcoreError, match="no labels"):
        demo.predict(model, preprocess, [synthetic.render(scenes[0])], [])


def test_the_training_script_writes_a_loadable_model_and_its_record(tmp_path):
    spec = importlib.util.spec_from_file_location("train_demo", Path(__file__).parents[1] / "scripts/train_demo.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "tiny.safetensors"
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    try:
        assert script.main(["--steps", "2", "--batch-size", "8", "--warmup", "1", "--threads", "1",
                            "--eval-per-class", "1", "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert record["train"]["steps"] == 2 and "--steps 2" in record["command"] and "--seed 0" in record["command"]
    assert record["built_with"]["torch"] == torch.__version__
    assert 0 <= record["held_out"]["top1"] <= 1 and record["held_out"]["count"] == 48
    model, _ = clipcore.load(out, device="cpu")
    assert same_architecture(model.config, ClipConfig.from_openclip(record["model_cfg"]))
    assert same_architecture(model.config, script.CONFIG)
