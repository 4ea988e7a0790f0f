"""Hugging Face transformers image classifiers behind cft's relevance interface.

Supported: ViTForImageClassification, DeiTForImageClassification, DeiTForImageClassificationWithTeacher
(distilled), Dinov2ForImageClassification, Dinov2WithRegistersForImageClassification (all five relevance
methods) and ConvNextV2ForImageClassification (gradcam, input-grad; see `cft.relevance.convnext`).

Attention is read with forward hooks on each layer's attention module, whose output is
(attn_output, attn_weights): with eager attention, attn_weights is the post-softmax (post-dropout) A of shape
(B, heads, N, N) that multiplies the values, inside the autograd graph, so dS/dA and every map are exactly
those of the timm path. Other attention kernels (sdpa, flash) return no weights: a model must be loaded with
attn_implementation="eager" (`cft.load_model("hf:...")` does), otherwise a CftError says so. The hooks live
only for one call and are removed whatever happens.

The number of prefix tokens comes from the config: 1 (CLS) for ViT and DINOv2, 2 (CLS + distillation) for
every DeiT (transformers' DeiT embeddings always carry the distillation token), 1 + num_register_tokens for
DINOv2 with registers. The maps read the CLS row (row 0), as the timm path does for the class-token readers;
note that DINOv2's classification head also reads the mean of the patch tokens. The grid is
(H // patch, W // patch), patch from the config.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from cft.errors import CftError
from cft.relevance.capture import Captured
from cft.relevance.methods import METHODS, Backend, Method

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
EAGER_HINT = (
    'load it with attn_implementation="eager" (cft.load_model("hf:<id or folder>") does, and so does '
    'Model.from_pretrained(..., attn_implementation="eager")), or call model.set_attn_implementation("eager")'
)


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
        return _logits(self.model, images, self.interpolate_pos_encoding)


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


def backend(model: nn.Module) -> Backend | None:
    """The relevance backend of a transformers classifier (raw or wrapped in HFClassifier); None otherwise."""
    if not is_transformers_model(model):
        return None
    interpolate = model.interpolate_pos_encoding if isinstance(model, HFClassifier) else False
    inner = model.model if isinstance(model, HFClassifier) else model
    kind = model_type(inner)
    config = inner.config
    if kind == "convnextv2":
        from cft.relevance.convnext import feature_backend

        reduction = _pair(config.patch_size)[0] * 2 ** (len(config.depths) - 1)
        forward = _forward(inner, False)
        return feature_backend("transformers ConvNeXt-V2", config.num_channels, reduction, forward, _last_stage(inner))
    if config._attn_implementation != "eager":
        raise CftError(
            f"{type(inner).__name__} uses {config._attn_implementation!r} attention, which never returns the "
            f"attention probabilities that relevance reads; {EAGER_HINT}"
        )
    layers = _layers(inner)
    always_interpolates = kind in ALWAYS_INTERPOLATES
    return Backend(
        family=f"transformers {type(inner).__name__}",
        methods=dict(METHODS),
        channels=int(config.num_channels),
        grid=lambda hw: _grid(config, hw, interpolate or always_interpolates),
        forward=_forward(inner, interpolate),
        capture=lambda spec: _capture(layers, spec),
        num_prefix_tokens=prefix_tokens(kind, config),
        reads_class_token=True,
    )


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
    size = _pair(getattr(config, "image_size", 224))
    if processor:
        out["mean"] = tuple(processor.get("image_mean", IMAGENET_MEAN))
        out["std"] = tuple(processor.get("image_std", IMAGENET_STD))
        out["interpolation"] = RESAMPLE.get(processor.get("resample"), "bicubic")
        size = _processor_geometry(processor, out) or size
    if fixed_size:
        size = _pair(config.image_size)
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


def _logits(model: nn.Module, images: torch.Tensor, interpolate: bool) -> torch.Tensor:
    kind = model.config.model_type
    kwargs = {"interpolate_pos_encoding": True} if interpolate and kind in ("vit", "deit") else {}
    return model(pixel_values=images, **kwargs).logits


def _forward(model: nn.Module, interpolate: bool):
    return lambda images: _logits(model, images, interpolate)


def _pair(value: Any) -> tuple[int, int]:
    return (int(value), int(value)) if isinstance(value, int) else (int(value[0]), int(value[1]))


def _grid(config: Any, image_hw: tuple[int, int], interpolates: bool) -> tuple[int, int]:
    """The patch grid (H // patch_h, W // patch_w); the image must have the config's size unless interpolating."""
    ph, pw = _pair(config.patch_size)
    expected = _pair(config.image_size)
    if not interpolates and tuple(image_hw) != expected:
        raise CftError(
            f"images are {tuple(image_hw)} pixels but the model takes {expected}; resize them, or wrap the model "
            "as HFClassifier(model, interpolate_pos_encoding=True)"
        )
    if image_hw[0] < ph or image_hw[1] < pw:
        raise CftError(f"images of {tuple(image_hw)} pixels are smaller than one {ph}x{pw} patch")
    return image_hw[0] // ph, image_hw[1] // pw


def _layers(model: nn.Module) -> list[nn.Module]:
    """The transformer layers in order: modules with an `attention` child and a pre-attention norm."""
    layers = [m for m in model.modules() if hasattr(m, "attention") and _norm(m) is not None]
    if len(layers) != model.config.num_hidden_layers:
        raise CftError(
            f"found {len(layers)} attention layers in {type(model).__name__}, expected "
            f"{model.config.num_hidden_layers}; supported: {SUPPORTED}"
        )
    return layers


def _norm(layer: nn.Module) -> nn.Module | None:
    """The norm in front of a layer's attention (ViT, DeiT: layernorm_before; DINOv2: norm1)."""
    for name in ("layernorm_before", "norm1"):
        norm = getattr(layer, name, None)
        if isinstance(norm, nn.Module):
            return norm
    return None


def _last_stage(model: nn.Module) -> nn.Module:
    return model.convnextv2.encoder.stages[-1]


@contextlib.contextmanager
def _capture(layers: list[nn.Module], spec: Method) -> Iterator[Captured]:
    """Record each layer's attention probabilities (and the last layer's normalised input) while active."""
    store = Captured()
    handles = []
    try:
        if spec.attentions:
            for layer in layers:
                handles.append(layer.attention.register_forward_hook(_keep_weights(store.attentions)))
        if spec.last_block_input:

            def keep(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
                store.last_block_input = output

            handles.append(_norm(layers[-1]).register_forward_hook(keep))
        yield store
    finally:
        for handle in handles:
            handle.remove()


def _keep_weights(target: list[torch.Tensor]):
    def hook(module: nn.Module, _inputs: tuple, output: Any) -> None:
        weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
        if weights is None:
            raise CftError(f"{type(module).__name__} returned no attention probabilities; {EAGER_HINT}")
        target.append(weights)

    return hook
