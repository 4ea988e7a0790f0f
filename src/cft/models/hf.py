"""Hugging Face transformers image classifiers as plain modules: loading, the HFClassifier wrapper, and the
timm data config read from their image processors. Their relevance backend is `cft.relevance.hf`."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from cft.errors import CftError

ALWAYS_INTERPOLATES = ("dinov2", "dinov2_with_registers")  # position embeddings follow any image size

CLASSES = {
    "vit": ("ViTForImageClassification",),
    "deit": ("DeiTForImageClassification", "DeiTForImageClassificationWithTeacher"),
    "dinov2": ("Dinov2ForImageClassification",),
    "dinov2_with_registers": ("Dinov2WithRegistersForImageClassification",),
    "convnextv2": ("ConvNextV2ForImageClassification",),
}

IMAGENET_MEAN = (0.485, 0.456, 0.406)

IMAGENET_STD = (0.229, 0.224, 0.225)

RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic"}  # PIL resample codes in preprocessor_config.json

SUPPORTED = ", ".join(name for names in CLASSES.values() for name in names)


class HFClassifier(nn.Module):
    """A Hugging Face image classifier as a plain module: `forward(images)` returns the logits (B, classes).

    For a distilled DeiT (DeiTForImageClassificationWithTeacher) the logits are the mean of the class and
    distillation heads, as in transformers. interpolate_pos_encoding: let ViT and DeiT take images of another
    size than the config's (DINOv2 always interpolates). image_processor: the HF processor's settings, exposed
    as `pretrained_cfg` for timm's data config.
    """

    def __init__(
        self, model: nn.Module, interpolate_pos_encoding: bool = False, image_processor: dict | None = None
    ) -> None:
        super().__init__()
        model_type(model)
        self.model = model
        self.interpolate_pos_encoding = bool(interpolate_pos_encoding)
        self.image_processor = dict(image_processor) if image_processor else None

    @property
    def config(self) -> Any:
        """The wrapped model's transformers config."""
        return self.model.config

    @property
    def pretrained_cfg(self) -> dict[str, Any]:
        """timm's data config keys, so `timm.data.resolve_data_config(model=...)` preprocesses as the HF processor."""
        fixed = model_type(self.model) in ("vit", "deit") and not self.interpolate_pos_encoding
        return data_config(self.config, self.image_processor, fixed)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits (B, classes) of images (B, C, H, W)."""
        return logits(self.model, images, self.interpolate_pos_encoding)


def is_transformers_model(model: nn.Module) -> bool:
    """True for an HFClassifier or any module defined by the transformers package."""
    return isinstance(model, HFClassifier) or type(model).__module__.startswith("transformers.")


def model_type(model: nn.Module) -> str:
    """The config's model_type of a supported classifier, or a CftError naming the supported classes."""
    config = getattr(model, "config", None)
    kind = getattr(config, "model_type", None)
    if kind not in CLASSES or type(model).__name__ not in CLASSES[kind]:
        raise CftError(f"unsupported Hugging Face model {type(model).__name__}; cft supports {SUPPORTED}")
    return kind


def prefix_tokens(kind: str, config: Any) -> int:
    """Tokens before the patch tokens, from the config: CLS, DeiT's distillation token, DINOv2's registers."""
    if kind == "deit":
        return 2
    if kind == "dinov2_with_registers":
        return 1 + int(config.num_register_tokens)
    return 1


def data_config(config: Any, processor: dict | None, fixed_size: bool) -> dict[str, Any]:
    """input_size, mean, std, interpolation, crop_pct and crop_mode in timm's terms, read from an HF image
    processor's settings (preprocessor_config.json); without them timm's ImageNet defaults at the config's size.

    fixed_size: the model takes only the config's image size (ViT, DeiT without interpolation), which wins.
    """
    out: dict[str, Any] = {"mean": IMAGENET_MEAN, "std": IMAGENET_STD, "interpolation": "bicubic", "crop_pct": 0.875}
    size = pair(getattr(config, "image_size", 224))
    if processor:
        out["mean"] = tuple(processor.get("image_mean", IMAGENET_MEAN))
        out["std"] = tuple(processor.get("image_std", IMAGENET_STD))
        out["interpolation"] = RESAMPLE.get(processor.get("resample"), "bicubic")
        size = _processor_geometry(processor, out) or size
    if fixed_size:
        size = pair(config.image_size)
    out["input_size"] = (int(config.num_channels), *size)
    return out


def _processor_geometry(processor: dict, out: dict[str, Any]) -> tuple[int, int] | None:
    """The processor's output size; sets crop_pct / crop_mode in `out` to the same resize and crop."""
    size = processor.get("size") or {}
    crop = processor.get("crop_size") if processor.get("do_center_crop") else None
    if crop and "height" in crop:
        out["crop_pct"] = crop["height"] / size.get("shortest_edge", size.get("height", crop["height"]))
        return int(crop["height"]), int(crop["width"])
    if "height" in size:
        out["crop_pct"], out["crop_mode"] = 1.0, "squash"  # a plain resize to (height, width)
        return int(size["height"]), int(size["width"])
    if "shortest_edge" in size:
        edge = int(size["shortest_edge"])
        out["crop_pct"] = float(processor["crop_pct"]) if processor.get("crop_pct") and edge < 384 else 1.0
        return edge, edge
    return None


def _read_processor(source: str) -> dict | None:
    """The image processor settings saved with a model (preprocessor_config.json), or None."""
    from transformers.image_processing_base import ImageProcessingMixin

    try:
        return ImageProcessingMixin.get_image_processor_dict(source)[0]
    except Exception:  # noqa: BLE001 - no processor file: timm's defaults apply
        return None


def load_hf_model(source: str, pretrained: bool = False, **config_overrides: Any) -> HFClassifier:
    """An HFClassifier from a hub id or a local folder (written by save_pretrained), with eager attention.

    pretrained: load the weights too; otherwise only the architecture is read and the weights are random,
    as timm does. config_overrides (num_labels=..., image_size=..., interpolate_pos_encoding=True for the
    wrapper) change the config; with pretrained weights a classifier of another size is newly initialised.
    The image processor settings saved with the model, if any, become the wrapper's `pretrained_cfg`, so
    cft's preprocessing (timm's resolve_data_config) uses its mean, std and size.
    """
    from transformers import AutoConfig

    interpolate = bool(config_overrides.pop("interpolate_pos_encoding", False))
    try:
        config = AutoConfig.from_pretrained(source, **config_overrides)
        cls = _model_class(config)
        if pretrained:
            mismatched = "num_labels" in config_overrides or "id2label" in config_overrides
            model = cls.from_pretrained(
                source, config=config, attn_implementation="eager", ignore_mismatched_sizes=mismatched
            )
        else:
            model = cls._from_config(config, attn_implementation="eager")
    except CftError:
        raise
    except Exception as err:  # noqa: BLE001 - transformers' own complaints: no such folder, no network, ...
        raise CftError(
            f"cannot load Hugging Face model {source!r}: {type(err).__name__}: {err} (a hub id needs the network "
            "or a filled cache; a local folder needs config.json, and model.safetensors when pretrained)"
        ) from None
    return HFClassifier(model, interpolate_pos_encoding=interpolate, image_processor=_read_processor(source))


def _model_class(config: Any) -> type:
    import transformers

    kind = getattr(config, "model_type", None)
    if kind not in CLASSES:
        raise CftError(f"unsupported Hugging Face model type {kind!r}; cft supports {SUPPORTED}")
    named = [name for name in (config.architectures or []) if name in CLASSES[kind]]
    return getattr(transformers, named[0] if named else CLASSES[kind][0])


def logits(model: nn.Module, images: torch.Tensor, interpolate: bool) -> torch.Tensor:
    """The logits of a raw transformers classifier (interpolating ViT/DeiT position embeddings if asked)."""
    kind = model.config.model_type
    kwargs = {"interpolate_pos_encoding": True} if interpolate and kind in ("vit", "deit") else {}
    return model(pixel_values=images, **kwargs).logits


def pair(value: Any) -> tuple[int, int]:
    """An int or a pair as a pair of ints."""
    return (int(value), int(value)) if isinstance(value, int) else (int(value[0]), int(value[1]))
