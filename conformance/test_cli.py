"""The `clipcore` command line, end to end: every command on the bundled model and on reference checkpoints in
each format, bad arguments (exit 2), bad files (exit 1 with a message, no traceback), `convert` giving the same
model, and `embed` resumed after an interruption giving the same file as an uninterrupted run."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import safetensors
import torch

import clipcore
from clipcore import cli, demo, synthetic
from conformance.reference import openclip_model, perturb, save_formats
from spec import ClipConfig, TextConfig, VisionConfig

pytestmark = pytest.mark.usefixtures("one_thread")

# Small, but with CLIP's 49408-token vocabulary so that `classify` can tokenize for it, and 64-wide heads so
# that an OpenAI-style archive of it needs no assumptions.
CONFIG = ClipConfig(
    embed_dim=32,
    quick_gelu=True,
    vision=VisionConfig(image_size=32, patch_size=8, width=64, layers=1, head_width=64),
    text=TextConfig(context_length=16, vocab_size=49408, width=64, heads=1, layers=1),
)
FORMATS = ("fp32", "fp16", "legacy", "safetensors", "training", "torchscript")


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def run_json(capsys, *argv: str) -> dict:
    code, out, err = run(capsys, *argv, "--json")
    assert code == 0, err
    return json.loads(out)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    torch.manual_seed(0)
    reference = perturb(openclip_model(CONFIG))
    folder = tmp_path_factory.mktemp("formats")
    return save_formats(reference, folder, CONFIG.vision.image_size, CONFIG.text.context_length,
                        CONFIG.text.vocab_size)


@pytest.fixture(scope="module")
def pictures(tmp_path_factory) -> tuple[Path, list[str]]:
    """Seven generated pictures in a folder (one in a subfolder), and their colour-and-shape labels."""
    folder = tmp_path_factory.mktemp("pictures")
    labels = []
    for i, scene in enumerate(synthetic.scenes(11, 7)):
        path = folder / ("sub" if i == 6 else "") / f"p{i}.png"
        path.parent.mkdir(exist_ok=True)
        synthetic.render(scene, 64).save(path)
        labels.append(scene.label)
    (folder / "notes.md").write_text("not an image")
    return folder, labels


def outputs(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    model, _ = clipcore.load(path, device="cpu")
    g = torch.Generator().manual_seed(0)
    image = torch.randn(2, 3, 32, 32, generator=g)
    tokens = clipcore.tokenize(["a red circle", "a photo of a dog"], context_length=CONFIG.text.context_length)
    with torch.no_grad():
        return model.encode_image(image), model.encode_text(tokens)


# --- help and usage -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [None, *cli.COMMANDS])
def test_every_command_has_help_with_examples(command, capsys):
    code, out, _ = run(capsys, *([command] if command else []), "--help")
    assert code == 0
    assert "examples:" in out and "usage: clipcore" in out
    if command:
        assert f"clipcore {command}" in out.split("examples:")[1]


@pytest.mark.parametrize("argv", [
    [],
    ["frobnicate"],
    ["classify", "x.png"],  # no --labels
    ["classify", "x.png", "--labels", " , "],
    ["classify", "x.png", "--labels", "a,a"],
    ["classify", "x.png", "--labels", "a,b", "--template", "a photo"],
    ["classify", "x.png", "--labels", "a,b", "--top", "many"],
    ["classify", "x.png", "--labels", "a,b", "--top", "0"],
    ["embed", ".", "--out", "features.txt"],
    ["embed", "."],  # no --out
    ["embed", ".", "--out", "f.npy", "--batch-size", "0"],
    ["convert", "in.pt", "out.pt"],
    ["convert", "in.pt", "out.safetensors", "--dtype", "fp8"],
    ["demo", "--count", "0"],
    ["inspect"],
    ["download"],
])
def test_bad_arguments_exit_2(argv, capsys):
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert "usage: clipcore" in err and "error:" in err
    assert out == ""


def test_version(capsys):
    code, out, _ = run(capsys, "--version")
    assert code == 0 and clipcore.__version__ in out


# --- bad files --------------------------------------------------------------------------------------------------


def test_bad_files_exit_1_with_a_message(checkpoints, pictures, tmp_path, capsys):
    folder, _ = pictures
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"PK\x03\x04 this is not really a zip file" * 10)
    garbage.with_suffix(".safetensors").write_bytes(garbage.read_bytes())
    broken_png = tmp_path / "broken.png"
    broken_png.write_bytes((folder / "p0.png").read_bytes()[:100])
    (tmp_path / "empty").mkdir()
    taken = tmp_path / "taken.safetensors"
    taken.write_bytes(b"x")
    cases = {
        ("inspect", garbage): str(garbage.name),
        ("inspect", tmp_path / "missing.pt"): "does not exist",
        ("convert", garbage, tmp_path / "o.safetensors"): str(garbage.name),
        ("convert", checkpoints["fp32"], taken): "already exists",
        ("classify", tmp_path / "missing.png", "--labels", "a,b"): "missing.png",
        ("classify", broken_png, "--labels", "a,b"): "broken.png",
        ("classify", folder / "p0.png", "--labels", "a,b", "--model", garbage): str(garbage.name),
        ("classify", folder / "p0.png", "--labels", "a,b", "--backend", "warp-drive"): "warp-drive",
        ("classify", folder / "p0.png", "--labels", "a,b", "--backend", "torchscript", "--model",
         checkpoints["torchscript"]): "trust",
        ("embed", tmp_path / "empty", "--out", tmp_path / "e.npy"): "no images",
        ("embed", tmp_path / "nowhere", "--out", tmp_path / "e.npy"): "nowhere",
        ("embed", folder, "--out", garbage.with_suffix(".safetensors")): "not an embeddings file",
        ("download", "ViT-Z/99", "--offline", "--root", tmp_path): "ViT-Z/99",
    }
    for argv, named in cases.items():
        code, out, err = run(capsys, *argv)
        assert code == 1, (argv, out, err)
        assert err.startswith("error: ") and named in err, (argv, err)
        assert "Traceback" not in err
    assert taken.read_bytes() == b"x"  # not replaced without --force
    assert not list(tmp_path.glob("*.tmp")) and not (tmp_path / "o.safetensors").exists()


def test_a_model_with_another_vocabulary_is_refused(tmp_path, capsys, pictures):
    folder, _ = pictures
    small = dataclasses.replace(CONFIG, text=dataclasses.replace(CONFIG.text, vocab_size=300))
    torch.manual_seed(0)
    path = save_formats(openclip_model(small), tmp_path, 32, 16, 300, formats=("safetensors",))["safetensors"]
    code, _, err = run(capsys, "classify", folder / "p0.png", "--labels", "a,b", "--model", path)
    assert code == 1 and "300-token vocabulary" in err


# --- inspect and convert on every format ------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_inspect_every_format(fmt, checkpoints, capsys):
    path = checkpoints[fmt]
    report = run_json(capsys, "inspect", path)
    state = torch.load(checkpoints["fp32"], weights_only=True)
    expected_format = {"legacy": "torch-legacy", "safetensors": "safetensors", "torchscript": "torchscript"}
    assert report["format"] == expected_format.get(fmt, "torch-zip")
    assert report["files"][0]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert report["parameters"] == sum(v.numel() for v in state.values() if v.is_floating_point())
    assert report["tensors"] == len(state)
    assert list(report["dtypes"]) == (["float16"] if fmt in ("fp16", "torchscript") else ["float32"])
    safety = report["safety"]
    assert safety["opens_without_running_code"] is True
    assert safety["contains_code"] is (fmt == "torchscript")
    assert safety["contains_pickle"] is (fmt != "safetensors")
    cfg = report["architecture"]["open_clip_config"]
    assert cfg["vision_cfg"]["width"] == 64 and cfg["text_cfg"]["context_length"] == 16 and cfg["embed_dim"] == 32
    if fmt == "torchscript":  # OpenAI's archive markings settle the activation and the heads
        assert report["architecture"]["assumed"] == {}
        assert report["architecture"]["facts_from"] == "an OpenAI release"
    else:
        assert "quick_gelu" in report["architecture"]["assumed"]
    # The text form says the same things.
    code, out, _ = run(capsys, "inspect", path)
    assert code == 0 and report["files"][0]["sha256"] in out and f"{report['parameters']:,} parameters" in out
    assert ("contains code" in out) is (fmt == "torchscript")


def test_inspect_the_bundled_model(capsys):
    report = run_json(capsys, "inspect", "demo")
    record = demo.provenance()
    assert report["files"][0]["sha256"] == record["sha256"]
    assert report["architecture"]["assumed"] == {}
    inferred = report["architecture"]["open_clip_config"]
    inferred["vision_cfg"] = {k: v for k, v in inferred["vision_cfg"].items() if v is not None}  # a ResNet's patch
    assert inferred == record["model_cfg"]
    assert report["parameters"] == record["parameters"] and report["dtypes"] == {"float16": report["tensors"]}


@pytest.mark.parametrize("fmt", FORMATS)
def test_convert_gives_the_same_model(fmt, checkpoints, tmp_path, capsys):
    out = tmp_path / "model.safetensors"
    result = run_json(capsys, "convert", checkpoints[fmt], out)
    assert result["in_format"] == run_json(capsys, "inspect", checkpoints[fmt])["format"]
    original, converted = outputs(checkpoints[fmt]), outputs(out)
    for a, b in zip(original, converted, strict=True):
        assert torch.equal(a, b)
    assert clipcore.load(out, device="cpu")[0].config == clipcore.load(checkpoints[fmt], device="cpu")[0].config
    with safetensors.safe_open(str(out), "pt") as f:
        header = f.metadata()
    assert json.loads(header["open_clip_config"])["model_cfg"]["vision_cfg"]["width"] == 64
    # What the source did not say is recorded as assumed, and reloads with no further guess.
    assert ("clipcore_assumed" in header) is (fmt != "torchscript")
    assert run_json(capsys, "inspect", out)["architecture"]["assumed"] == {}
    assert not list(tmp_path.glob("*.tmp"))


def test_convert_to_another_dtype_and_replace(checkpoints, tmp_path, capsys):
    out = tmp_path / "half.safetensors"
    out.write_bytes(b"old")
    code, text, _ = run(capsys, "convert", checkpoints["fp32"], out, "--dtype", "fp16", "--force")
    assert code == 0 and "nothing in the source was executed" in text and "assumed" in text
    assert run_json(capsys, "inspect", out)["dtypes"] == {"float16": len(torch.load(checkpoints["fp32"]))}


# --- classify, demo, download ---------------------------------------------------------------------------------


def test_classify_with_the_bundled_model(pictures, capsys):
    folder, labels = pictures
    images = sorted(folder.glob("p*.png"))[:6]
    choices = ",".join(dict.fromkeys([*labels[:6], "green heart", "white square"]))
    result = run_json(capsys, "classify", *images, "--labels", choices, "--template", "a {}", "--top", "2")
    assert [r["image"] for r in result["results"]] == [str(p) for p in images]
    assert [r["top"][0]["label"] for r in result["results"]] == labels[:6]
    assert all(len(r["top"]) == 2 and r["top"][0]["p"] >= r["top"][1]["p"] for r in result["results"])
    code, out, _ = run(capsys, "classify", images[0], "--labels", choices)
    assert code == 0 and out.splitlines()[0] == str(images[0]) and labels[0] in out.splitlines()[1]


@pytest.mark.parametrize("fmt", ["training", "torchscript"])
def test_classify_with_generated_checkpoints(fmt, checkpoints, pictures, capsys):
    folder, _ = pictures
    result = run_json(capsys, "classify", folder / "p0.png", folder / "p1.png", "--labels", "a,b,c",
                      "--model", checkpoints[fmt], "--device", "cpu")
    for r in result["results"]:
        assert sorted(t["label"] for t in r["top"]) == ["a", "b", "c"]
        assert sum(t["p"] for t in r["top"]) == pytest.approx(1, abs=1e-4)


def test_demo_command(tmp_path, capsys):
    png = tmp_path / "grid.png"
    result = run_json(capsys, "demo", "--count", "6", "--seed", "5", "--out", png, "--device", "cpu")
    assert result["png"] == str(png) and result["count"] == 6 and result["seed"] == 5
    truths = [scene.label for scene in synthetic.scenes(5, 6)]
    assert [r["truth"] for r in result["results"]] == truths
    assert result["right"] == sum(r["top"][0]["label"] == r["truth"] for r in result["results"])
    from PIL import Image

    with Image.open(png) as grid:
        assert grid.format == "PNG" and grid.width > 3 * 192 and grid.height > 2 * 192
    code, out, _ = run(capsys, "demo", "--count", "3", "--seed", "5", "--out", png)
    assert code == 0 and f"wrote {png}" in out and "right among 48" in out
    assert all(truth in out for truth in truths[:3])


def test_download(tmp_path, capsys):
    from conformance.httpserver import FileServer

    code, out, _ = run(capsys, "download", "demo")
    assert code == 0 and out.strip() == str(demo.weights_path())
    data = b"weights" * 1000
    sha = hashlib.sha256(data).hexdigest()
    with FileServer() as server:
        server.route(f"/m/{sha}/w.safetensors", data)
        result = run_json(capsys, "download", server.url(f"/m/{sha}/w.safetensors"), "--root", tmp_path)
        assert Path(result["path"]) == tmp_path / "w.safetensors" and result["sha256"] == sha
        server.route(f"/m/{sha}/bad.safetensors", b"not the same bytes")
        code, _, err = run(capsys, "download", server.url(f"/m/{sha}/bad.safetensors"), "--root", tmp_path)
        assert code == 1 and err.startswith("error: ") and "Traceback" not in err


# --- embed --------------------------------------------------------------------------------------------------------


def test_embed_folder_to_npy_and_safetensors(pictures, tmp_path, capsys):
    folder, _ = pictures
    out = tmp_path / "features.npy"
    summary = run_json(capsys, "embed", folder, "--out", out, "--batch-size", "3", "--device", "cpu")
    paths = json.loads(json.loads((tmp_path / "features.npy.json").read_text())["paths"])
    assert paths == sorted(str(p) for p in folder.rglob("*.png")) and len(paths) == 7
    rows = np.load(out)
    model, preprocess = clipcore.load("demo", device="cpu")
    with torch.no_grad():
        expected = model.encode_image(preprocess.batch(paths), normalize=True).numpy()
    assert rows.shape == (7, 128) and rows.dtype == np.float32
    np.testing.assert_allclose(rows, expected, atol=1e-5)
    assert summary == {**summary, "images": 7, "embedded": 7, "reused": 0, "dim": 128}
    # The same images as safetensors, named by a list file instead of a folder.
    listing = tmp_path / "list.txt"
    listing.write_text("# pictures\n" + "\n".join(paths) + "\n")
    st = tmp_path / "features.safetensors"
    code, text, _ = run(capsys, "embed", listing, "--out", st, "--batch-size", "4")
    assert code == 0 and "7 x 128" in text
    with safetensors.safe_open(str(st), "np") as f:
        np.testing.assert_allclose(f.get_tensor("embeddings"), rows, atol=1e-5)
        assert json.loads(f.metadata()["paths"]) == paths
    # Run again with one image more: only that one is embedded.
    extra = folder / "sub" / "p7.png"
    synthetic.render(synthetic.scenes(99, 1)[0], 64).save(extra)
    try:
        again = run_json(capsys, "embed", folder, "--out", out, "--batch-size", "3")
    finally:
        extra.unlink()
    assert (again["embedded"], again["reused"]) == (1, 7)
    grown = json.loads(json.loads((tmp_path / "features.npy.json").read_text())["paths"])
    assert sorted(grown) == sorted([*paths, str(extra)])
    np.testing.assert_array_equal(np.load(out)[[grown.index(p) for p in paths]], rows)
    # A .npy its sidecar does not describe (a run stopped between the two writes) is not trusted: all again.
    sidecar = tmp_path / "features.npy.json"
    sidecar.write_text(sidecar.read_text().replace(hashlib.sha256(out.read_bytes()).hexdigest(), "0" * 64))
    assert run_json(capsys, "embed", folder, "--out", out, "--batch-size", "4")["embedded"] == 7
    np.testing.assert_allclose(np.load(out), rows, atol=1e-5)
    # A rerun with another model identity refuses to mix rows.
    code, _, err = run(capsys, "embed", folder, "--out", out, "--no-normalize")
    assert code == 1 and "normalized" in err


def test_embed_interrupted_then_resumed_gives_the_same_file(pictures, tmp_path, capsys, monkeypatch):
    folder, _ = pictures
    whole = tmp_path / "whole" / "e.safetensors"
    assert run(capsys, "embed", folder, "--out", whole, "--batch-size", "2")[0] == 0

    real, calls = cli.embed_batch, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(cli, "embed_batch", interrupted)
    out = tmp_path / "resumed" / "e.safetensors"
    code, _, err = run(capsys, "embed", folder, "--out", out, "--batch-size", "2")
    assert code == 130 and "resume" in err
    assert not out.exists() and len(list((out.parent / "e.safetensors.parts").glob("part-*"))) == 2
    # A hard kill (no KeyboardInterrupt) can leave the temporary file of the part being written.
    (out.parent / "e.safetensors.parts" / ".part-000002.safetensors.x1y2.tmp").write_bytes(b"half a part")
    monkeypatch.setattr(cli, "embed_batch", real)
    resumed = run_json(capsys, "embed", folder, "--out", out, "--batch-size", "2")
    assert (resumed["embedded"], resumed["reused"]) == (3, 4)
    assert out.read_bytes() == whole.read_bytes()
    assert not (out.parent / "e.safetensors.parts").exists()
    assert sorted(p.name for p in out.parent.iterdir()) == ["e.safetensors"]


# --- the installed console script ---------------------------------------------------------------------------------


def test_console_script(tmp_path):
    """The installed `clipcore` command (the README's first command), in a process of its own."""
    script = Path(sys.executable).with_name("clipcore")
    assert script.is_file(), "clipcore is not installed in this environment (pip install -e .)"
    png = tmp_path / "demo.png"
    done = subprocess.run([script, "demo", "--count", "3", "--seed", "2", "--out", png], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"wrote {png}" in done.stdout and png.read_bytes().startswith(b"\x89PNG")
    assert all(scene.description in done.stdout for scene in synthetic.scenes(2, 3))
