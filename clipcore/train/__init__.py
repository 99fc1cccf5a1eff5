"""Contrastive training and fine-tuning of CLIP models, and zero-shot evaluation.

    from clipcore.train import TrainConfig, Trainer, CaptionBatches, read_captions
    data = CaptionBatches(read_captions("captions.csv"), Preprocess(224), None, batch_size=128)
    Trainer(model, data, TrainConfig(steps=1000, checkpoint_dir="runs/a")).fit()

Modules: loss (ClipLoss, SigLipLoss), distributed (World, feature exchange, gradient reduction, launch),
optim (AdamW parameter groups), schedule (warmup + cosine), loop (Trainer), checkpointing (atomic, resumable),
data (captions files and image folders), zeroshot (classifier from prompts, top-k accuracy).
"""

from clipcore.train.checkpointing import latest_checkpoint, list_checkpoints
from clipcore.train.data import CaptionBatches, Example, LabelledBatches, read_captions, read_image_folder
from clipcore.train.distributed import World, launch
from clipcore.train.loop import PRECISIONS, BatchSource, TrainConfig, Trainer, train
from clipcore.train.loss import ClipLoss, SigLipLoss, make_loss
from clipcore.train.optim import build_optimizer, is_no_decay, param_groups
from clipcore.train.schedule import learning_rate
from clipcore.train.zeroshot import accuracy, build_zero_shot_classifier, zero_shot_accuracy

__all__ = [
    "PRECISIONS",
    "BatchSource",
    "CaptionBatches",
    "ClipLoss",
    "Example",
    "LabelledBatches",
    "SigLipLoss",
    "TrainConfig",
    "Trainer",
    "World",
    "accuracy",
    "build_optimizer",
    "build_zero_shot_classifier",
    "is_no_decay",
    "latest_checkpoint",
    "launch",
    "learning_rate",
    "list_checkpoints",
    "make_loss",
    "param_groups",
    "read_captions",
    "read_image_folder",
    "train",
    "zero_shot_accuracy",
]
