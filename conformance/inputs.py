"""Model inputs and output comparison shared by the differential tests, drawn without clipcore's own code."""

from __future__ import annotations

import torch

from spec import ClipConfig, TextConfig


def random_tokens(text: TextConfig, batch: int, seed: int, length: int | None = None) -> torch.Tensor:
    """Token rows like a tokenizer's: random ids, the EOT (the largest id) at a varying position, zero
    padding after it, and in some rows the tower's eos_id somewhere before it."""
    g = torch.Generator().manual_seed(seed)
    length = length or text.context_length
    eot = text.vocab_size - 1
    rows = torch.zeros(batch, length, dtype=torch.long)
    for i in range(batch):
        n = int(torch.randint(1, length + 1, (1,), generator=g))
        rows[i, :n] = torch.randint(1, eot, (n,), generator=g)
        if i % 2 and n > 1 and text.eos_id < eot:
            rows[i, int(torch.randint(0, n - 1, (1,), generator=g))] = text.eos_id
        rows[i, n - 1] = eot
    return rows


def random_images(config: ClipConfig, batch: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, *config.vision.image_size_hw, generator=g)


def rel_err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    """max|ours - ref| / max|ref|. Where the reference gives NaN (e.g. averaging the zero pooler queries
    after the first of one), ours must give NaN too; the rest is compared."""
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    assert ours.dtype == ref.dtype, (ours.dtype, ref.dtype)
    nan = ref.isnan()
    assert torch.equal(ours.isnan(), nan), "NaN where the reference has none, or the reverse"
    if nan.all():
        return 0.0
    ours, ref = ours[~nan], ref[~nan]
    return ((ours - ref).abs().max() / ref.abs().max()).item()


@torch.no_grad()
def clip_outputs(model, images: torch.Tensor, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
    """encode_image, encode_text and the image->text logits, computed the same way for any CLIP module."""
    image = model.encode_image(images).float()
    text = model.encode_text(tokens).float()
    logits = model.logit_scale.exp() * (image / image.norm(dim=-1, keepdim=True)) @ (
        text / text.norm(dim=-1, keepdim=True)
    ).T
    if getattr(model, "logit_bias", None) is not None:
        logits = logits + model.logit_bias
    return {"image": image, "text": text, "logits": logits}


def assert_outputs_close(ours: dict, expected: dict, tolerance: float = 1e-5) -> None:
    errors = {k: rel_err(ours[k], expected[k]) for k in expected}
    assert max(errors.values()) <= tolerance, errors
