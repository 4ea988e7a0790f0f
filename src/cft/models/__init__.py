"""Loading the models the relevance engine can read (timm ViTs, timm ConvNeXt(-V2), Hugging Face), and checkpoints."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cft.errors import CftError

SUPPORTED = (
    "timm VisionTransformer family: ViT (any image and patch size, non-square included), AugReg, "
    "DeiT (distilled too), DeiT-III, ViTs with register tokens (reg_tokens); e.g. vit_base_patch16_224, "
    "deit_small_distilled_patch16_224, deit3_base_patch16_224, vit_small_patch14_reg4_dinov2; "
    "timm ConvNeXt / ConvNeXt-V2 (gradcam, input-grad), e.g. convnextv2_atto; and Hugging Face ViT, DeiT, DINOv2 "
    "and ConvNeXt-V2 image classifiers as 'hf:<hub id or local folder>'"
)


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


def vit_layout(model: nn.Module) -> ViTLayout:
    """Describe `model` or raise a CftError that says which models are supported."""
    blocks = getattr(model, "blocks", None)
    patch_embed = getattr(model, "patch_embed", None)
    if blocks is None or patch_embed is None or not hasattr(model, "num_prefix_tokens"):
        raise CftError(f"unsupported model {type(model).__name__}: cft reads attention from the {SUPPORTED}")
    for i, block in enumerate(blocks):
        attn = getattr(block, "attn", None)
        if attn is None or not hasattr(attn, "attn_drop") or not hasattr(attn, "fused_attn"):
            raise CftError(
                f"unsupported model {type(model).__name__}: block {i} has no timm Attention module whose "
                f"attention matrix can be read; supported: {SUPPORTED}"
            )
    patch = patch_embed.patch_size
    patch = (patch, patch) if isinstance(patch, int) else tuple(patch)
    return ViTLayout(
        num_prefix_tokens=int(model.num_prefix_tokens),
        reads_class_token=getattr(model, "cls_token", None) is not None
        and getattr(model, "global_pool", "token") == "token",
        patch_size=patch,
        num_blocks=len(blocks),
    )


def is_timm_convnext(model: nn.Module) -> bool:
    """True for an instance of timm's ConvNeXt class (convnext_*, convnextv2_*)."""
    module = sys.modules.get("timm.models.convnext")  # not imported: the model cannot be one
    return module is not None and isinstance(model, module.ConvNeXt)


def load_model(
    name: str,
    pretrained: bool = False,
    checkpoint: str | Path | None = None,
    **timm_kwargs,
) -> nn.Module:
    """Create the timm model `name` (weights from the hub if `pretrained`), optionally load a local checkpoint.

    timm ViTs: fused attention stays on; the relevance engine turns it off only for the blocks it reads and
    only while it reads them, so plain inference and training keep the fast kernel. timm ConvNeXt and
    ConvNeXt-V2 (convnext_*, convnextv2_*) are accepted as they are.
    "hf:<hub id or local folder>": a Hugging Face ViT / DeiT / DINOv2 / ConvNeXt-V2 classifier with eager
    attention, wrapped so that model(images) returns logits (`cft.models.hf.HFClassifier`); pretrained
    loads its weights (otherwise the architecture only, random weights) and the keyword arguments override
    its config (num_labels=..., and interpolate_pos_encoding=True for other image sizes).
    """
    if name.startswith("hf:"):
        from cft.models.hf import load_hf_model

        model = load_hf_model(name.removeprefix("hf:"), pretrained=pretrained, **timm_kwargs)
        if pretrained:
            check_finite(model.state_dict(), f"the weights in {name.removeprefix('hf:')}")
        return load_checkpoint(model, checkpoint) if checkpoint is not None else model
    import timm

    try:
        model = timm.create_model(name, pretrained=pretrained, **timm_kwargs)
    except RuntimeError as err:
        if "Unknown model" in str(err):
            raise CftError(f"unknown model name {name!r}; supported: {SUPPORTED}") from None
        raise _creation_error(name, timm_kwargs, pretrained, err) from None
    except TypeError as err:
        raise CftError(f"model {name!r} does not take these arguments {sorted(timm_kwargs)}: {err}") from None
    except Exception as err:  # noqa: BLE001 - timm's own complaints: bad sizes, no network for pretrained, ...
        raise _creation_error(name, timm_kwargs, pretrained, err) from None
    if not is_timm_convnext(model):
        vit_layout(model)
    if pretrained:
        check_finite(model.state_dict(), f"the pretrained weights of {name}")
    if checkpoint is not None:
        load_checkpoint(model, checkpoint)
    return model


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
    if name.startswith("hf:"):
        return {"num_labels": num_classes}
    if name.startswith(("convnext_", "convnextv2_")):
        return {"num_classes": num_classes}
    return {"num_classes": num_classes, "img_size": image_size}


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
