"""clipcore.preprocess against the reference eval transforms (open_clip 3.3.0 and OpenAI's clip).

Every comparison is max |clipcore - reference| <= 1e-6 on the float32 output (in practice 0).
"""

from __future__ import annotations

import functools
import io
import warnings
from dataclasses import asdict

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from hypothesis import assume, given
from hypothesis import strategies as st
from open_clip.transform import PreprocessCfg, image_transform, image_transform_v2
from PIL import Image, ImageOps, JpegImagePlugin

import clipcore.preprocess as preprocess_module
from clipcore.errors import ConfigError, ImageError
from clipcore.image.resample import axis_taps, fixed_point_weights, matches_pillow, resize_window
from clipcore.preprocess import OPENAI_MEAN, OPENAI_STD, Preprocess, normalize_uint8
from conformance.images import MODES, in_mode, noise, photo, write_files
from conformance.reference import import_openai_clip

SIZES = (224, 288, 336, 384, 448)
RESIZE_MODES = ("shortest", "longest", "squash")
TOL = 1e-6
# (width, height): 1x1, tall, wide, larger than every target on one side only, odd photo sizes.
SHAPES = ((1, 1), (23, 400), (400, 23), (500, 100), (120, 460), (333, 517), (640, 480))
FEW_SHAPES = ((1, 1), (23, 400), (500, 100), (333, 517))


# The reference's tensor ops are tiny; intra-op threads only slow them down (a lot on a busy box).
pytestmark = pytest.mark.usefixtures("one_thread")


@functools.cache
def reference(size, resize_mode="shortest", interpolation="bicubic", fill=0):
    return image_transform(size, is_train=False, resize_mode=resize_mode, interpolation=interpolation,
                           fill_color=fill)


@functools.cache
def openai_reference(n):
    clip = import_openai_clip()
    return clip.clip._transform(n)


@functools.cache
def ours(size, resize_mode="shortest", interpolation="bicubic", fill=0, **kw):
    return Preprocess(size, resize_mode=resize_mode, interpolation=interpolation, fill=fill, **kw)


def reference_output(transform, image):
    with warnings.catch_warnings():  # the reference warns about palette transparency; we do not
        warnings.simplefilter("ignore")
        return transform(image)


def assert_same(got: torch.Tensor, want: torch.Tensor, what=""):
    assert got.dtype == torch.float32 and got.shape == want.shape, (what, got.dtype, got.shape, want.shape)
    diff = (got - want).abs().max().item()
    assert diff <= TOL, f"{what}: max |diff| = {diff}"


@functools.cache
def shape_image(mode, w, h):
    return in_mode(photo(w, h, seed=w * 7 + h), mode, seed=w + h)


# -- the mode x shape x size x resize-mode matrix ---------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("resize_mode", RESIZE_MODES)
def test_every_mode_shape_and_size_matches_open_clip(mode, resize_mode):
    for w, h in SHAPES:
        image = shape_image(mode, w, h)
        for size in SIZES:
            want = reference_output(reference(size, resize_mode, fill=17), image)
            assert_same(ours(size, resize_mode, fill=17)(image), want, f"{mode} {w}x{h} -> {size}")


@pytest.mark.parametrize("mode", MODES)
def test_shortest_matches_openai_clip(mode):
    for w, h in SHAPES:
        image = shape_image(mode, w, h)
        for size in SIZES:
            assert_same(ours(size)(image), reference_output(openai_reference(size), image), f"{mode} {w}x{h}")


@pytest.mark.parametrize("resize_mode", RESIZE_MODES)
@pytest.mark.parametrize("interpolation", ["bilinear", "random"])
def test_other_interpolations(resize_mode, interpolation):
    for mode in ("RGB", "RGBA", "L", "P", "I;16", "CMYK"):
        for w, h in SHAPES:
            image = shape_image(mode, w, h)
            for size in (224, 336):
                want = reference_output(reference(size, resize_mode, interpolation), image)
                assert_same(ours(size, resize_mode, interpolation)(image), want, f"{mode} {w}x{h} {size}")


@pytest.mark.parametrize("interpolation", ["nearest", "box", "hamming", "lanczos"])
def test_torchvision_filters(interpolation):
    # open_clip only takes bicubic/bilinear; torchvision's Resize takes every Pillow filter.
    for size in (224, 336):
        want_pipeline = T.Compose([
            T.Resize(size, interpolation=T.InterpolationMode(interpolation)), T.CenterCrop(size),
            lambda im: im.convert("RGB"), T.ToTensor(), T.Normalize(OPENAI_MEAN, OPENAI_STD)])
        for mode in ("RGB", "RGBA", "L", "P", "CMYK", "F"):
            for w, h in FEW_SHAPES:
                image = shape_image(mode, w, h)
                got = ours(size, "shortest", interpolation)(image)
                assert_same(got, reference_output(want_pipeline, image), f"{mode} {w}x{h} {size}")


@pytest.mark.parametrize("resize_mode", RESIZE_MODES)
def test_non_square_targets(resize_mode):
    # open_clip's non-square 'shortest' uses ResizeKeepRatio (bicubic whatever the config says).
    for size in ((224, 320), (320, 224), (256, 193)):
        for interpolation in ("bicubic", "bilinear"):
            for mode in ("RGB", "RGBA", "P", "F"):
                for w, h in FEW_SHAPES:
                    image = shape_image(mode, w, h)
                    want = reference_output(reference(size, resize_mode, interpolation, fill=200), image)
                    got = ours(size, resize_mode, interpolation, fill=200)(image)
                    assert_same(got, want, f"{mode} {w}x{h} -> {size} {interpolation}")


def test_very_thin_images_shortest():
    # The reference resizes 1x600 to 224x134400 before cropping; we only compute the crop.
    for w, h in ((1, 600), (600, 1), (2, 999), (3, 1000)):
        for mode in ("RGB", "L", "RGBA", "P"):
            image = shape_image(mode, w, h)
            assert_same(ours(224)(image), reference_output(reference(224), image), f"{mode} {w}x{h}")


def test_very_thin_images_longest_keep_one_pixel():
    # The reference fails here (a side rounds to 0 pixels, Pillow refuses); we keep 1 pixel.
    image = shape_image("RGB", 1, 2000)
    with pytest.raises(ValueError):
        reference(224, "longest")(image)
    out = ours(224, "longest")(image)
    assert out.shape == (3, 224, 224) and torch.isfinite(out).all()
    pad = (0 - torch.tensor(OPENAI_MEAN)) / torch.tensor(OPENAI_STD)
    assert torch.allclose(out[:, :, 0], pad[:, None].expand(3, 224))


def test_tall_shrinks_use_pillows_pass_order():
    # Pillow 13 resizes vertically first when the height shrinks much more than the width.
    for w, h in ((300, 3000), (224, 2000), (50, 5000), (260, 900)):
        for mode in ("RGB", "L", "RGBA"):
            image = in_mode(noise(w, h, seed=w), mode, seed=h)
            for size in (224, 336):
                for rm in RESIZE_MODES:
                    assert_same(ours(size, rm)(image), reference_output(reference(size, rm), image), f"{w}x{h}")


def test_uniform_noise_large_images():
    # Independent pixels make every rounding decision visible; big images take the strip path.
    for w, h in ((2000, 1500), (1501, 2000), (1999, 1001)):
        image = noise(w, h, seed=h)
        for size in (224, 448):
            for rm in RESIZE_MODES:
                assert_same(ours(size, rm)(image), reference_output(reference(size, rm), image), f"{w}x{h}")


# -- hypothesis: random sizes, modes, content ---------------------------------------------------------

side = st.one_of(st.integers(1, 64), st.integers(1, 600), st.integers(1, 2000))


@st.composite
def images(draw):
    w, h = draw(side), draw(side)
    kind = draw(st.sampled_from(["photo", "noise", "flat"]))
    seed = draw(st.integers(0, 2**16))
    if kind == "photo":
        rgb = photo(w, h, seed)
    elif kind == "noise":
        rgb = noise(w, h, seed)
    else:
        rgb = Image.new("RGB", (w, h), tuple(draw(st.lists(st.integers(0, 255), min_size=3, max_size=3))))
    return in_mode(rgb, draw(st.sampled_from(MODES)), seed)


def reference_cost(w, h, size, resize_mode):
    """Pixels of the reference's full resize; bounded so each example stays fast."""
    if resize_mode != "shortest":
        return size * size
    short, long = min(w, h), max(w, h)
    return size * int(size * long / short)


@given(image=images(), size=st.sampled_from(SIZES), resize_mode=st.sampled_from(RESIZE_MODES),
       interpolation=st.sampled_from(["bicubic", "bilinear"]), fill=st.integers(0, 255))
def test_random_images_match_open_clip(image, size, resize_mode, interpolation, fill):
    assume(reference_cost(*image.size, size, resize_mode) < 4_000_000)
    transform = reference(size, resize_mode, interpolation, fill)
    try:
        want = reference_output(transform, image)
    except ValueError:  # the reference's own failures (a side rounding to 0 in 'longest')
        assume(False)
    assert_same(ours(size, resize_mode, interpolation, fill)(image), want, f"{image.mode} {image.size}")


@given(image=images(), size=st.sampled_from(SIZES))
def test_random_images_match_openai(image, size):
    assume(reference_cost(*image.size, size, "shortest") < 4_000_000)
    assert_same(ours(size)(image), reference_output(openai_reference(size), image), f"{image.mode} {image.size}")


# -- the exact resampler itself --------------------------------------------------------------------

@given(w=st.integers(1, 900), h=st.integers(1, 900), out_w=st.integers(1, 500), out_h=st.integers(1, 500),
       filt=st.sampled_from(["bicubic", "bilinear", "box"]), mode=st.sampled_from(["L", "RGB", "RGBa", "CMYK", "La"]),
       data=st.data())
def test_resize_window_equals_pillow_resize_then_crop(w, h, out_w, out_h, filt, mode, data):
    image = noise(w, h, seed=w * h).convert(mode)
    x0 = data.draw(st.integers(0, out_w - 1))
    x1 = data.draw(st.integers(x0 + 1, out_w))
    y0 = data.draw(st.integers(0, out_h - 1))
    y1 = data.draw(st.integers(y0 + 1, out_h))
    pil = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR,
           "box": Image.Resampling.BOX}[filt]
    want = np.asarray(image.resize((out_w, out_h), pil).crop((x0, y0, x1, y1))).reshape(y1 - y0, x1 - x0, -1)
    got = resize_window(image, (out_w, out_h), (x0, y0, x1, y1), filt).permute(1, 2, 0).numpy()
    assert np.array_equal(got.astype(np.uint8), want) and np.array_equal(got, want.astype(np.float32))


def test_huge_downscale_uses_the_float64_path_and_stays_exact():
    image = noise(20000, 3, seed=1).convert("L")
    assert axis_taps(20000, 30, 0, 30, "bicubic").wide
    want = np.asarray(image.resize((30, 3), Image.Resampling.BICUBIC))
    got = resize_window(image, (30, 3), (0, 0, 30, 3), "bicubic")[0].numpy()
    assert np.array_equal(got, want.astype(np.float32))


def test_the_exact_resize_is_active_for_the_installed_pillow():
    # Otherwise every comparison above would only be testing Pillow against itself.
    assert matches_pillow()


def test_falls_back_to_pillow_when_the_self_check_fails(monkeypatch):
    monkeypatch.setattr(preprocess_module, "matches_pillow", lambda: False)
    preprocess_module._fast_resize_ok.cache_clear()
    try:
        image = shape_image("RGBA", 333, 517)
        with pytest.warns(RuntimeWarning, match="falling back"):
            got = Preprocess(224)(image)
        assert_same(got, reference_output(reference(224), image))
    finally:
        preprocess_module._fast_resize_ok.cache_clear()


def test_fixed_point_weights_sum_to_one():
    for in_size, out_size in ((640, 298), (7, 224), (2000, 224), (224, 224 * 3 + 1)):
        _, _, _, weights = fixed_point_weights(in_size, out_size, 0, out_size, "bicubic")
        assert np.all(np.abs(weights.sum(1) - (1 << 22)) <= weights.shape[1])


def test_pillow_box_resize_is_not_exact_but_ours_is():
    # Why we do not use Image.resize(box=...): Pillow passes the box as float32.
    image = noise(640, 480, seed=3)
    full = image.resize((298, 224), Image.Resampling.BICUBIC).crop((37, 0, 261, 224))
    boxed = image.resize((224, 224), Image.Resampling.BICUBIC, box=(37 * 640 / 298, 0, 261 * 640 / 298, 480))
    assert not np.array_equal(np.asarray(full), np.asarray(boxed))
    ours_window = resize_window(image, (298, 224), (37, 0, 261, 224), "bicubic").permute(1, 2, 0).numpy()
    assert np.array_equal(ours_window, np.asarray(full).astype(np.float32))


# -- files: every format/mode, from disk -----------------------------------------------------------


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return write_files(tmp_path_factory.mktemp("images"))


@pytest.mark.parametrize("size", SIZES)
def test_files_match_reference(files, size):
    for name, path in files.items():
        for rm in RESIZE_MODES:
            want = reference_output(reference(size, rm), Image.open(path))
            assert_same(ours(size, rm)(path), want, f"{name} {rm}")
            if size == 224:
                assert_same(ours(size, rm)(Image.open(path)), want, f"{name} {rm} (opened)")


def test_real_photo_like_files(tmp_path):
    for i, (w, h) in enumerate(((640, 480), (375, 500), (1024, 768), (2000, 1500))):
        image = photo(w, h, seed=i)
        formats = ((".jpg", {"quality": 92}), (".png", {}), (".tif", {}))
        for ext, kw in formats if w * h < 500_000 else formats[:1]:
            path = tmp_path / f"photo{i}{ext}"
            image.save(path, **kw)
            for size in (224, 336):
                assert_same(ours(size)(path), reference_output(openai_reference(size), Image.open(path)), str(path))


def test_exif_orientation_is_ignored_by_default_and_applied_on_request(files):
    path = files["exif_rotated.jpg"]
    raw, upright = Image.open(path), ImageOps.exif_transpose(Image.open(path))
    assert raw.size != upright.size
    assert_same(ours(224)(path), reference_output(reference(224), raw))
    assert_same(ours(224, exif_transpose=True)(path), reference_output(reference(224), upright))
    assert_same(ours(224, exif_transpose=True)(Image.open(path)), reference_output(reference(224), upright))
    for rm in ("longest", "squash"):
        assert_same(ours(336, rm, exif_transpose=True)(path), reference_output(reference(336, rm), upright))


# -- batch -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("workers", [1, 2, 4])
def test_batch_equals_stacked_single_calls(files, workers):
    paths = list(files.values())
    pre = ours(224)
    single = torch.stack([pre(p) for p in paths])
    assert torch.equal(pre.batch(paths, workers=workers), single)
    opened = [Image.open(p) for p in paths]
    assert torch.equal(pre.batch(opened, workers=workers), single)
    as_bytes = pre.batch(paths, workers=workers, output="uint8")
    assert as_bytes.dtype == torch.uint8 and as_bytes.shape == (len(paths), 224, 224, 3)
    assert torch.equal(torch.stack([pre(p, output="uint8") for p in paths]), as_bytes)
    assert torch.equal(normalize_uint8(as_bytes), single)
    assert torch.equal(normalize_uint8(as_bytes[0]), single[0])


def test_batch_with_custom_normalisation_and_mixed_inputs(files):
    pre = Preprocess(288, mean=(0.5, 0.5, 0.5), std=0.5, resize_mode="squash")
    items = [files["rgb.jpg"], Image.open(files["palette.png"]), str(files["i16.tif"])]
    out = pre.batch(items, workers=3)
    assert torch.equal(out, torch.stack([pre(x) for x in items]))
    assert torch.equal(normalize_uint8(pre.batch(items, output="uint8"), mean=0.5, std=0.5), out)
    assert pre.batch([], workers=2).shape == (0, 3, 288, 288)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_normalize_uint8_on_cuda_equals_cpu(files):
    pre = ours(224)
    as_bytes = pre.batch(list(files.values()), output="uint8")
    on_gpu = normalize_uint8(as_bytes, device="cuda")
    assert on_gpu.device.type == "cuda"
    assert torch.equal(on_gpu.cpu(), pre.batch(list(files.values())))


# -- draft mode ------------------------------------------------------------------------------------

DRAFT_MAX_ERROR = 0.5  # the bound clipcore.preprocess documents (measured max: about 0.31)


def test_draft_is_off_by_default(files):
    assert Preprocess(224).draft is False
    assert_same(Preprocess(224)(files["rgb.jpg"]), reference_output(reference(224), Image.open(files["rgb.jpg"])))


def test_draft_error_stays_within_the_documented_bound(tmp_path, monkeypatch):
    asked = []
    original = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):
        asked.append(size)
        return original(self, mode, size)

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    worst = 0.0
    for i, (w, h) in enumerate(((640, 480), (1024, 768), (2000, 1500), (1600, 1200))):
        path = tmp_path / f"p{i}.jpg"
        photo(w, h, seed=10 + i).save(path, quality=90)
        for size in (224, 336):
            fast, exact = Preprocess(size, draft=True)(path), Preprocess(size)(path)
            worst = max(worst, (fast - exact).abs().max().item())
    assert asked, "draft mode never asked the decoder for a smaller size"
    assert 0.0 < worst <= DRAFT_MAX_ERROR


def test_draft_never_goes_below_the_resize_size(tmp_path, monkeypatch):
    decoded = []
    original = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):
        result = original(self, mode, size)
        decoded.append(self.size)
        return result

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    shapes = ((2400, 1800), (1800, 2400), (3000, 700))
    for w, h in shapes:
        photo(w, h, seed=4).save(tmp_path / f"{w}x{h}.jpg", quality=90)
    for size, rm in ((224, "shortest"), (336, "longest"), (224, "squash")):
        for w, h in shapes:
            path = tmp_path / f"{w}x{h}.jpg"
            pre = Preprocess(size, resize_mode=rm, draft=True)
            need = pre.layout((w, h)).resized
            decoded.clear()
            assert pre(path).shape == (3, size, size)
            (dw, dh), = decoded
            assert need[0] <= dw < w and need[1] <= dh < h, (rm, (w, h), need, (dw, dh))


def test_draft_leaves_other_formats_exact(files):
    for name in ("rgb.png", "rgb.tif", "palette.gif"):
        want = reference_output(reference(224), Image.open(files[name]))
        assert_same(Preprocess(224, draft=True)(files[name]), want, name)


# -- configuration ---------------------------------------------------------------------------------


def test_from_config_matches_open_clip_preprocess_cfg():
    cfgs = [
        PreprocessCfg(size=224),
        PreprocessCfg(size=(256, 256), mean=(0.5,) * 3, std=(0.5,) * 3, interpolation="bicubic", resize_mode="squash"),
        PreprocessCfg(size=384, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), interpolation="bilinear",
                      resize_mode="longest", fill_color=128),
        PreprocessCfg(size=(224, 320), resize_mode="shortest"),
    ]
    image = shape_image("RGBA", 333, 517)
    for cfg in cfgs:
        want = reference_output(image_transform_v2(cfg, is_train=False), image)
        assert_same(Preprocess.from_config(asdict(cfg))(image), want, str(cfg))
        assert_same(Preprocess.from_config(cfg)(image), want, str(cfg))


def test_from_config_takes_the_spec_dataclass():
    from spec.config import PreprocessConfig

    cfg = PreprocessConfig(image_size=288, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), resize_mode="longest",
                           fill_color=9)
    pre = Preprocess.from_config(cfg)
    assert (pre.size, pre.mean, pre.resize_mode, pre.fill) == ((288, 288), (0.5, 0.5, 0.5), "longest", 9)
    with pytest.raises(ConfigError):
        Preprocess.from_config(["size", 224])


def test_from_config_takes_pretrained_records():
    record = {"url": "", "hf_hub": "timm/x/", "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5),
              "interpolation": "bicubic", "resize_mode": "squash", "quick_gelu": True}
    pre = Preprocess.from_config(record, image_size=384)
    assert pre.size == (384, 384) and pre.resize_mode == "squash" and pre.mean == (0.5, 0.5, 0.5)
    with pytest.raises(ConfigError, match="size"):
        Preprocess.from_config(record)
    assert Preprocess.from_config({"size": 224, "mean": None}).mean == OPENAI_MEAN


@pytest.mark.parametrize("kwargs", [
    {"image_size": 0}, {"image_size": (224, 0)}, {"image_size": "224"}, {"image_size": (1, 2, 3)},
    {"resize_mode": "crop"}, {"interpolation": "cubic"}, {"fill": 256}, {"fill": -1}, {"fill": 1.5},
    {"mean": (0.5, 0.5)}, {"std": (0.5, 0.0, 0.5)}, {"mean": "abc"}, {"interpolation": ["bicubic"]},
])
def test_bad_configuration_raises_config_error(kwargs):
    with pytest.raises(ConfigError):
        Preprocess(**{"image_size": 224, **kwargs})


def test_bad_outputs_and_workers():
    pre = ours(224)
    image = shape_image("RGB", 40, 30)
    with pytest.raises(ConfigError):
        pre(image, output="float16")
    with pytest.raises(ConfigError):
        pre.batch([image], workers=0)
    with pytest.raises(ImageError):
        normalize_uint8(torch.zeros(2, 3, 8, 8))


# -- bad input -------------------------------------------------------------------------------------


def test_not_an_image(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("this is text, not a picture")
    with pytest.raises(ImageError, match=r"notes\.jpg") as err:
        ours(224)(path)
    assert err.value.fix


def test_truncated_file(tmp_path):
    data = io.BytesIO()
    photo(640, 480).save(data, "JPEG", quality=90)
    path = tmp_path / "cut.jpg"
    path.write_bytes(data.getvalue()[: len(data.getvalue()) // 2])
    with pytest.raises(ImageError, match=r"cut\.jpg.*truncated"):
        ours(224)(path)
    with pytest.raises(ImageError, match=r"cut\.jpg"):
        ours(224).batch([path], workers=2)
    with pytest.raises(ImageError, match="truncated"):
        ours(224)(Image.open(path))  # lazily opened: decoding happens inside


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(ImageError, match=r"nowhere\.png.*does not exist"):
        ours(224)(tmp_path / "nowhere.png")
    with pytest.raises(ImageError, match="directory"):
        ours(224)(tmp_path)


def test_zero_size_image():
    with pytest.raises(ImageError, match="zero size"):
        ours(224)(Image.new("RGB", (0, 5)))


def test_unsupported_mode():
    with pytest.raises(ImageError, match="'La'"):
        ours(224)(shape_image("RGB", 40, 30).convert("La"))


def test_whole_image_resize_of_rare_modes_is_bounded():
    # Palette images are resized whole (nearest neighbour), as the reference does; absurd sizes are refused.
    thin = shape_image("P", 1, 20000)
    with pytest.raises(ImageError, match="intermediate"):
        ours(448)(thin)


def test_not_an_image_object():
    with pytest.raises(ImageError, match="expected a PIL"):
        ours(224)(42)
    with pytest.raises(ImageError, match="item 1"):
        ours(224).batch([shape_image("RGB", 40, 30), b"bytes"], workers=1)


@pytest.mark.parametrize("pixels", [1000, 2000])  # Pillow warns above the limit and refuses above twice it
def test_decompression_bomb(tmp_path, monkeypatch, pixels):
    path = tmp_path / "bomb.png"
    photo(64, 32).save(path)  # 2048 pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", pixels)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with pytest.raises(ImageError, match=r"bomb\.png.*decompression"):
            ours(224)(path)
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with pytest.raises(ImageError, match=r"bomb\.png"):
            ours(224)(path)
