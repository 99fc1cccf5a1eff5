"""The CLIP model: an image tower, a text tower, and the learned temperature (and bias) of their logits.

The interface is OpenAI's: `encode_image`, `encode_text`, and `forward(image, text)` returning
`(logits_per_image, logits_per_text)`. The state-dict layout is OpenAI's flat one (text parts at the top
level) or OpenCLIP's CustomTextCLIP one (text parts under `text.`), as `config.text_prefix` says.
"""

import torch
import torch.nn.functional as F
from torch import nn

from clipcore.errors import UnsupportedModelError
from clipcore.towers.hf_text import HFText
from clipcore.towers.resnet import ModifiedResNet
from clipcore.towers.text import TextEncoder, TextTransformer, check_freeze_layer_norm
from clipcore.towers.timm_vision import TimmVision
from clipcore.towers.vit import VisionTransformer
from spec.config import ClipConfig


def check_supported(config: ClipConfig) -> None:
    """Raise UnsupportedModelError for the model kinds clipcore does not build (CoCa). timm and Hugging Face
    towers are built when their extra is installed (the towers say which one is missing)."""
    if config.is_coca:
        raise UnsupportedModelError(
            "this is a CoCa model (the config has multimodal_cfg): its captioning decoder is not part of "
            "clipcore's native CLIP towers",
            fix="a later clipcore feature will provide CoCa; use a CLIP config (no multimodal_cfg) meanwhile",
        )


class CLIP(TextEncoder):
    """A CLIP model. In OpenAI's layout the text tower's parts are this module's own (it is a TextEncoder);
    in OpenCLIP's CustomTextCLIP layout they are on the child `text`, and `self.text` is None otherwise."""

    def __init__(self, config: ClipConfig) -> None:
        super().__init__()
        check_supported(config)
        self.config = config
        vision = config.vision
        if vision.kind == "resnet":
            self.visual: nn.Module = ModifiedResNet(vision, config.embed_dim)
        elif vision.kind == "timm":  # its own activations: quick_gelu does not apply (as in OpenCLIP)
            self.visual = TimmVision(vision, config.embed_dim)
        else:
            self.visual = VisionTransformer(vision, config.embed_dim, config.quick_gelu)
        if config.text.kind == "hf":  # OpenCLIP takes the model's own limits (e.g. 514 positions for RoBERTa)
            self.text: TextTransformer | HFText | None = HFText(config.text, config.embed_dim)
            self.context_length = self.text.context_length
            self.vocab_size = self.text.vocab_size
        elif config.text_prefix:
            self.text = TextTransformer(config.text, config.embed_dim, config.quick_gelu)
            self.context_length = config.text.context_length
            self.vocab_size = config.text.vocab_size
        else:
            self.text = None
            self.add_text_tower(config.text, config.embed_dim, config.quick_gelu, openai_layout=True)
        shape = (1,) if config.nonscalar_logit_scale else ()
        self.logit_scale = nn.Parameter(torch.empty(shape))
        self.logit_bias = nn.Parameter(torch.empty(shape)) if config.init_logit_bias is not None else None

    @property
    def dtype(self) -> torch.dtype:
        """The weights' dtype (OpenAI's `model.dtype`): images are cast to it."""
        # hasattr, not isinstance: TorchScript resolves it at compile time and skips the other branch.
        if hasattr(self.visual, "conv1"):
            return self.visual.conv1.weight.dtype
        return next(self.visual.parameters()).dtype  # a timm trunk: its first weight

    def encode_image(self, image: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        features = self.visual(image.to(self.dtype))
        if isinstance(features, tuple):  # a tower configured with output_tokens
            features = features[0]
        return F.normalize(features, dim=-1) if normalize else features

    def encode_text(self, text: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        if self.text is None:
            features = self.encode_tokens(text)[0]
        else:
            features = self.text.encode_tokens(text)[0]
        return F.normalize(features, dim=-1) if normalize else features

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits_per_image [images, texts], logits_per_text [texts, images]) as OpenAI's CLIP returns."""
        image_features = self.encode_image(image, normalize=True)
        text_features = self.encode_text(text, normalize=True)
        logits_per_image = self.logit_scale.exp() * image_features @ text_features.t()
        if self.logit_bias is not None:
            logits_per_image = logits_per_image + self.logit_bias
        return logits_per_image, logits_per_image.t()

    def lock_image_tower(self, unlocked_groups: int = 0, freeze_bn_stats: bool = False) -> None:
        """Freeze the image tower for LiT-style training, as OpenCLIP does (see the tower's `lock`)."""
        self.visual.lock(unlocked_groups=unlocked_groups, freeze_bn_stats=freeze_bn_stats)

    def lock_text_tower(self, unlocked_layers: int = 0, freeze_layer_norm: bool = True) -> None:
        """Freeze the text tower, leaving its last `unlocked_layers` groups trainable, as OpenCLIP does."""
        if self.text is None:
            check_freeze_layer_norm(freeze_layer_norm)
            self.lock_text(unlocked_layers)
        else:
            self.text.lock(unlocked_layers, freeze_layer_norm)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute transformer blocks in the backward pass (training memory for compute)."""
        if isinstance(self.visual, VisionTransformer):
            self.visual.transformer.grad_checkpointing = enable
        elif isinstance(self.visual, TimmVision):
            self.visual.set_grad_checkpointing(enable)
        if isinstance(self.text, HFText):
            self.text.set_grad_checkpointing(enable)
            return
        tower = self if self.text is None else self.text
        tower.transformer.grad_checkpointing = enable

    @torch.no_grad()
    def init_weights(self) -> None:
        """The reference's initialisation, for training from scratch (on a real device, e.g. after
        `to_empty(device=...)`). Loading a checkpoint does not need it."""
        self.visual.init_weights()
        if self.text is None:
            self.init_text_weights()
        else:
            self.text.init_weights()
        nn.init.constant_(self.logit_scale, self.config.init_logit_scale)
        if self.logit_bias is not None:
            nn.init.constant_(self.logit_bias, self.config.init_logit_bias)
