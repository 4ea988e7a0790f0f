"""Loading the models the relevance engine can read (timm ViTs, timm ConvNeXt(-V2), Hugging Face), and checkpoints."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cft.errors import CftError
from cft.registry import Registry


@dataclass(frozen=True)
class ViTLayout:
    """What the relevance engine needs to know about a ViT, read from the model itself."""

    num_prefix_tokens: int
    reads_class_token: bool  # the classifier reads the class token (global_pool "token"), not pooled patches
    patch_size: tuple[int, int]
    num_blocks: int

    def grid(self, model: nn.Module, image_hw: tuple[int, int]) -> tuple[int, int]:
        """The patch grid (rows, cols) the model makes of an image of this size."""
        patch_embed = model.patch_embed
        if getattr(model, "dynamic_img_size", False) and hasattr(patch_embed, "dynamic_feat_size"):
            return tuple(patch_embed.dynamic_feat_size(image_hw))
        return tuple(patch_embed.grid_size)


def has_vit_parts(model: nn.Module) -> bool:
    """True for a model with a ViT's parts (blocks, patch_embed, num_prefix_tokens), as timm's ViTs have."""
    parts = (getattr(model, "blocks", None), getattr(model, "patch_embed", None))
    return None not in parts and hasattr(model, "num_prefix_tokens")


def vit_layout(model: nn.Module) -> ViTLayout:
    """Describe `model` or raise a CftError that says which models are supported."""
    if not has_vit_parts(model):
        raise CftError(
            f"unsupported model {type(model).__name__}: it has no ViT blocks whose attention cft can read; "
            f"supported: {supported_models()}"
        )
    for i, block in enumerate(model.blocks):
        attn = getattr(block, "attn", None)
        if attn is None or not hasattr(attn, "attn_drop") or not hasattr(attn, "fused_attn"):
            raise CftError(
                f"unsupported model {type(model).__name__}: block {i} has no timm Attention module whose "
                f"attention matrix can be read; supported: {supported_models()}"
            )
    patch = model.patch_embed.patch_size
    patch = (patch, patch) if isinstance(patch, int) else tuple(patch)
    return ViTLayout(
        num_prefix_tokens=int(model.num_prefix_tokens),
        reads_class_token=getattr(model, "cls_token", None) is not None
        and getattr(model, "global_pool", "token") == "token",
        patch_size=patch,
        num_blocks=len(model.blocks),
    )


def is_timm_convnext(model: nn.Module) -> bool:
    """True for an instance of timm's ConvNeXt class (convnext_*, convnextv2_*)."""
    module = sys.modules.get("timm.models.convnext")  # not imported: the model cannot be one
    return module is not None and isinstance(model, module.ConvNeXt)


ModelLoader = Callable[..., nn.Module]  # (name, pretrained, **kwargs) -> the model, or a CftError


@dataclass(frozen=True)
class ModelFamily:
    """A family of models `load_model` builds by name: `claims(name)` says whether a name is one of its models,
    `load(name, pretrained, **kwargs)` builds it, `size_kwargs(num_classes, image_size)` gives the load arguments
    that set the classes and input size. Families are asked by ascending `priority`."""

    load: ModelLoader
    claims: Callable[[str], bool]
    size_kwargs: Callable[[int, int], dict[str, Any]]
    priority: int


MODEL_FAMILIES: Registry[ModelFamily] = Registry("model family", describe=lambda family: family.load.__doc__)


def register_model_family(
    name: str,
    *,
    claims: Callable[[str], bool],
    size_kwargs: Callable[[int, int], dict[str, Any]],
    priority: int,
    description: str | None = None,
) -> Callable[[ModelLoader], ModelLoader]:
    """Decorator: register a loader `(name, pretrained, **kwargs) -> model` as the model family `name`, asked for
    the model names `claims` accepts, in `priority` order (lower first; the built-in ones: hf 10,
    timm-convnext 20, timm-vit 90, which claims every other name)."""

    def decorate(load: ModelLoader) -> ModelLoader:
        MODEL_FAMILIES.add(name, ModelFamily(load, claims, size_kwargs, int(priority)), description)
        return load

    return decorate


def model_family(name: str) -> ModelFamily:
    """The first family, by priority, that claims the model name `name`."""
    for family in sorted(MODEL_FAMILIES.values(), key=lambda family: family.priority):
        if family.claims(name):
            return family
    raise CftError(f"unknown model name {name!r}; supported: {supported_models()}")


def supported_models() -> str:
    """The registered model families with their descriptions, for error messages."""
    return "; ".join(f"{name}: {text}" for name, text in MODEL_FAMILIES.descriptions().items())


def load_model(
    name: str,
    pretrained: bool = False,
    checkpoint: str | Path | None = None,
    **timm_kwargs,
) -> nn.Module:
    """Create the model `name` of its family in MODEL_FAMILIES (weights from the hub if `pretrained`), optionally
    load a local checkpoint.

    timm ViTs: fused attention stays on; the relevance engine turns it off only for the blocks it reads and
    only while it reads them, so plain inference and training keep the fast kernel. timm ConvNeXt and
    ConvNeXt-V2 (convnext_*, convnextv2_*) are accepted as they are.
    "hf:<hub id or local folder>": a Hugging Face ViT / DeiT / DINOv2 / ConvNeXt-V2 classifier with eager
    attention, wrapped so that model(images) returns logits (`cft.models.hf.HFClassifier`); pretrained
    loads its weights (otherwise the architecture only, random weights) and the keyword arguments override
    its config (num_labels=..., and interpolate_pos_encoding=True for other image sizes).
    """
    if not isinstance(name, str) or not name:
        raise CftError(f"the model name must be a non-empty string, got {name!r}")
    model = model_family(name).load(name, pretrained, **timm_kwargs)
    if checkpoint is not None:
        load_checkpoint(model, checkpoint)
    return model


@register_model_family(
    "hf",
    claims=lambda name: name.startswith("hf:"),
    size_kwargs=lambda num_classes, image_size: {"num_labels": num_classes},
    priority=10,
    description="Hugging Face ViT, DeiT, DINOv2 and ConvNeXt-V2 image classifiers as 'hf:<hub id or local folder>'",
)
def _load_hf(name: str, pretrained: bool, **kwargs: Any) -> nn.Module:
    from cft.models.hf import load_hf_model

    source = name.removeprefix("hf:")
    model = load_hf_model(source, pretrained=pretrained, **kwargs)
    if pretrained:
        check_finite(model.state_dict(), f"the weights in {source}")
    return model


def _load_timm(name: str, pretrained: bool, **kwargs: Any) -> nn.Module:
    """A timm model: a ConvNeXt as it is, anything else must have a ViT's readable attention."""
    import timm

    try:
        model = timm.create_model(name, pretrained=pretrained, **kwargs)
    except RuntimeError as err:
        if "Unknown model" in str(err):
            raise CftError(f"unknown model name {name!r}; supported: {supported_models()}") from None
        raise _creation_error(name, kwargs, pretrained, err) from None
    except TypeError as err:
        raise CftError(f"model {name!r} does not take these arguments {sorted(kwargs)}: {err}") from None
    except Exception as err:  # noqa: BLE001 - timm's own complaints: bad sizes, no network for pretrained, ...
        raise _creation_error(name, kwargs, pretrained, err) from None
    if not is_timm_convnext(model):
        vit_layout(model)
    if pretrained:
        check_finite(model.state_dict(), f"the pretrained weights of {name}")
    return model


register_model_family(
    "timm-convnext",
    claims=lambda name: name.startswith(("convnext_", "convnextv2_")),
    size_kwargs=lambda num_classes, image_size: {"num_classes": num_classes},
    priority=20,
    description="timm ConvNeXt / ConvNeXt-V2, e.g. convnextv2_atto (relevance methods that read no attention)",
)(_load_timm)
register_model_family(
    "timm-vit",
    claims=lambda name: True,
    size_kwargs=lambda num_classes, image_size: {"num_classes": num_classes, "img_size": image_size},
    priority=90,
    description=(
        "timm VisionTransformer family: ViT (any image and patch size, non-square included), AugReg, "
        "DeiT (distilled too), DeiT-III, ViTs with register tokens (reg_tokens); e.g. vit_base_patch16_224, "
        "deit_small_distilled_patch16_224, deit3_base_patch16_224, vit_small_patch14_reg4_dinov2"
    ),
)(_load_timm)


def check_finite(state: dict[str, torch.Tensor], source: str) -> None:
    """Refuse weights holding NaN or infinity (a diverged run, an overflowed bf16 save): a model computed from
    them scores plausible-looking numbers. The message names the first bad tensor and how many there are."""
    bad = [(k, int((~torch.isfinite(v)).sum())) for k, v in state.items() if v.is_floating_point()]
    bad = [(k, n) for k, n in bad if n]
    if bad:
        name, count = bad[0]
        raise CftError(
            f"{source} cannot be used: tensor {name} has {count} NaN/inf of {state[name].numel()} values "
            f"({len(bad)} non-finite tensor(s)); the run that wrote them diverged or overflowed"
        )


def size_kwargs(name: str, num_classes: int, image_size: int) -> dict[str, Any]:
    """The load_model arguments that set the number of classes and the input size, per model family."""
    return model_family(name).size_kwargs(num_classes, image_size)


def _creation_error(name: str, kwargs: dict[str, Any], pretrained: bool, err: Exception) -> CftError:
    hint = " (pretrained=True downloads weights from the Hugging Face hub: is this machine online?)"
    return CftError(
        f"cannot create model {name!r} with arguments {kwargs}: {type(err).__name__}: {err}"
        + (hint if pretrained else "")
    )


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a .safetensors file, or a torch file with weights_only=True (never arbitrary pickles)."""
    path = Path(path)
    if not path.is_file():
        raise CftError(f"checkpoint {path} does not exist (expected a .safetensors or .pt/.pth file)")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any parse failure means a corrupt or foreign file
        raise CftError(f"checkpoint {path} cannot be read ({type(err).__name__}: {err}); is it corrupt?") from None
    for key in ("state_dict", "model", "module"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CftError(f"checkpoint {path} holds no state dict of tensors")
    check_finite(state, f"checkpoint {path}")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_checkpoint(model: nn.Module, path: str | Path) -> nn.Module:
    """Load the weights in `path` into `model` strictly; a mismatch names the keys."""
    state = read_state_dict(path)
    own = model.state_dict()
    wrong = [(k, tuple(v.shape), tuple(own[k].shape)) for k, v in state.items() if k in own and v.shape != own[k].shape]
    if wrong:
        name, theirs, ours = wrong[0]
        hint = ""
        if name.startswith(("head.", "classifier.", "model.classifier.")) and theirs[:1] != ours[:1]:
            hint = f"; a {theirs[0]}-class checkpoint: build the model with num_classes={theirs[0]} (--model-arg)"
        raise CftError(
            f"checkpoint {path} does not fit {type(model).__name__}: tensor {name} is {theirs} in the checkpoint "
            f"but {ours} in the model ({len(wrong)} tensor(s) differ){hint}"
        )
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise CftError(
            f"checkpoint {path} does not fit {type(model).__name__}: missing {result.missing_keys[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}"
        )
    return model


def save_checkpoint(model: nn.Module, path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """Write the model's weights as safetensors, atomically (serialised in memory first, so a full disk is an
    OSError naming the file and the old file stays as it was)."""
    from safetensors.torch import save

    from cft.io import write_bytes_atomic

    path = Path(path)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    write_bytes_atomic(path, save(state, metadata=metadata))
    return path
