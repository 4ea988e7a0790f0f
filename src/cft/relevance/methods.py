"""Relevance methods. Each turns one recorded forward pass into per-patch scores (B, gh, gw), unnormalised.

All of them are batched and, where noted, differentiable with respect to the model's parameters. METHODS is their
registry (`@register_method`); BACKENDS the registry of model families that run them (`@register_backend`).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cft.registry import Registry
from cft.relevance.capture import Captured

LRP_EPS = 1e-9


@dataclass
class Trace:
    """One forward pass: what a method may read."""

    images: torch.Tensor  # (B, C, H, W), requires grad when the method needs input gradients
    score: torch.Tensor  # scalar: sum over the batch of each image's target logit
    captured: Captured
    num_prefix_tokens: int
    reads_class_token: bool
    grid: tuple[int, int]
    create_graph: bool


@dataclass(frozen=True)
class Method:
    """A relevance method and what it needs from the forward pass: each block's attention (`attentions`), the
    normalised tokens entering the last block (`last_block_input`), the gradient of the images (`input_gradient`:
    Trace.images then requires grad); and whether it differentiates through the gradients it takes when the caller
    does not say (`create_graph_default`)."""

    fn: Callable[[Trace], torch.Tensor]
    attentions: bool
    last_block_input: bool
    create_graph_default: bool
    doc: str
    input_gradient: bool = False


METHODS: Registry[Method] = Registry("relevance method", describe=lambda method: method.doc)


def register_method(
    name: str,
    *,
    attentions: bool = False,
    last_block_input: bool = False,
    input_gradient: bool = False,
    create_graph_default: bool = False,
    description: str | None = None,
) -> Callable[[Callable[[Trace], torch.Tensor]], Callable[[Trace], torch.Tensor]]:
    """Decorator: register `fn(trace) -> (B, gh, gw)` as the relevance method `name` (`relevance(..., method=name)`).

    The flags say what the backend records for it (see `Method`); description: one line for `cft ls methods`
    (None: the first paragraph of fn's docstring).
    """

    def decorate(fn: Callable[[Trace], torch.Tensor]) -> Callable[[Trace], torch.Tensor]:
        method = Method(fn, attentions, last_block_input, create_graph_default, fn.__doc__ or "", input_gradient)
        METHODS.add(name, method, description)
        return fn

    return decorate


@dataclass(frozen=True)
class Backend:
    """A model family (timm ViTs, Hugging Face ViTs, ConvNeXt): how to run it and what it offers.

    `grid` checks an image size (H, W) and returns the map grid (rows, cols); `forward` maps images to logits
    (B, classes); `capture` records, for one forward pass, what a method of `methods` reads.
    """

    family: str
    methods: dict[str, Method]
    channels: int
    grid: Callable[[tuple[int, int]], tuple[int, int]]
    forward: Callable[[torch.Tensor], torch.Tensor]
    capture: Callable[[Method, bool], AbstractContextManager[Captured]]  # (method, create_graph)
    num_prefix_tokens: int = 0
    reads_class_token: bool = False


@dataclass(frozen=True)
class BackendFinder:
    """A relevance backend's entry in BACKENDS: `find(model)` returns the model's Backend, or None when the model
    is not of its family; finders are tried by ascending `priority`."""

    find: Callable[[nn.Module], Backend | None]
    priority: int


BACKENDS: Registry[BackendFinder] = Registry("relevance backend", describe=lambda finder: finder.find.__doc__)


def register_backend(
    name: str, priority: int, description: str | None = None
) -> Callable[[Callable[[nn.Module], Backend | None]], Callable[[nn.Module], Backend | None]]:
    """Decorator: register `find(model) -> Backend | None` as the relevance backend `name`, tried in `priority`
    order (lower first; the built-in ones: hf 10, timm-convnext 20, timm-vit 30)."""

    def decorate(find: Callable[[nn.Module], Backend | None]) -> Callable[[nn.Module], Backend | None]:
        BACKENDS.add(name, BackendFinder(find, int(priority)), description)
        return find

    return decorate


def backends_in_order() -> list[tuple[str, BackendFinder]]:
    """The registered backends by ascending priority (ties: in registration order)."""
    return sorted(BACKENDS.items(), key=lambda item: item[1].priority)


def _grad(trace: Trace, inputs: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    return torch.autograd.grad(trace.score, inputs, retain_graph=True, create_graph=trace.create_graph)


def _to_grid(tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    return tokens.reshape(tokens.shape[0], grid[0], grid[1])


def _positive_gradients(trace: Trace) -> list[torch.Tensor]:
    """Per block: relu(dS/dA), (B, heads, N, N); in the gradient's own storage when it is a constant."""
    grads = list(_grad(trace, trace.captured.attentions))
    return [g.relu() if trace.create_graph else g.relu_() for g in grads]


def _weighted_attention(trace: Trace) -> list[torch.Tensor]:
    """Per block: mean over heads of clamp(dS/dA * A, min=0), each (B, N, N).

    Computed as sum_heads(A * relu(dS/dA)) / heads, which is the same number for every entry because A >= 0
    (post-softmax attention): where g > 0 both are g A, elsewhere both are 0 (and so are their derivatives in A and
    in g). With the gradient a constant (create_graph=False), relu runs in g's own storage and the product's
    backward keeps only that one (B, heads, N, N) tensor, where clamp(g * A) would keep g, g * A and the clamp's
    input. Dividing the (B, N, N) sum, not the product, spares the backward a pass over (B, heads, N, N) (the
    backward of a mean divides the expanded gradient; that of a sum is a view)."""
    positives = _positive_gradients(trace)
    weighted = []
    for i, attn in enumerate(trace.captured.attentions):
        weighted.append((attn * positives[i]).sum(dim=1) / attn.shape[1])
        positives[i] = None  # the product's backward keeps it
    return weighted


class _RowTimesWeighted(torch.autograd.Function):
    """v Abar for v (B, R) and Abar = mean_heads(A[:, :, :R] * P[:, :, :R]), (B, N); P = relu(dS/dA) a constant.

    Abar is neither kept nor returned: the backward rebuilds A * P (one pass over (B, heads, R, N)) for the
    gradient of v, so a block keeps only A (which its softmax keeps anyway) and P for the backward."""

    @staticmethod
    def forward(ctx, v: torch.Tensor, attn: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(v, attn, positive)
        b, heads, rows, n = attn.shape
        product = (attn * positive).reshape(b, heads * rows, n)
        v_heads = (v / heads).to(product.dtype)[:, None, :].expand(b, heads, rows).reshape(b, 1, heads * rows)
        return torch.bmm(v_heads, product)[:, 0].to(v.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None]:
        v, attn, positive = ctx.saved_tensors
        b, heads, rows, n = attn.shape
        grad_v = grad_attn = None
        if ctx.needs_input_grad[0]:
            product = (attn * positive).reshape(b, heads * rows, n)
            per_head = torch.bmm(product, grad.to(product.dtype)[:, :, None]).view(b, heads, rows)
            grad_v = (per_head.sum(dim=1) / heads).to(v.dtype)
        if ctx.needs_input_grad[1]:
            outer = (v / heads)[:, :, None] * grad[:, None, :]  # (B, R, N)
            grad_attn = (positive * outer[:, None].to(positive.dtype)).to(attn.dtype)
        return grad_v, grad_attn, None


@register_method(
    "grad-rollout", attentions=True, description="gradient-weighted attention rollout (Chefer et al., ICCV 2021)"
)
def grad_rollout(trace: Trace) -> torch.Tensor:
    """Gradient-weighted attention rollout (Chefer et al., ICCV 2021): R = I; R <- R + Abar_l R per block.

    Only the row the classifier reads is needed, so it is carried as a vector from the last block down:
    v = e_row; v <- v + v Abar_l for l = L..1 equals row `row` of R_L = (I + Abar_L) ... (I + Abar_1), at
    O(B N^2) per block instead of the O(B N^3) of the matrix products. With the gradient a constant
    (create_graph=False), v Abar_l is one `_RowTimesWeighted` (Abar_l never stored), and a class-token reader's
    first step, v = e_0, reads row 0 of the last block alone (the rest of that block's gradient is dropped)."""
    if not trace.create_graph:
        return grad_rollout_row(trace, _positive_gradients(trace))
    v = _row_vector(trace, trace.captured.attentions[0])
    for abar in reversed(_weighted_attention(trace)):
        v = v + torch.bmm(v[:, None], abar)[:, 0]
    return _patch_columns(trace, v)


def grad_rollout_row(trace: Trace, positives: list[torch.Tensor | None]) -> torch.Tensor:
    """grad_rollout's vector loop with the gradient a constant, given relu(dS/dA) per block (emptied as it goes)."""
    attns = trace.captured.attentions
    v = _row_vector(trace, attns[0])
    blocks = list(range(len(attns)))
    if trace.reads_class_token:
        last = blocks.pop()
        rows = (attns[last][:, :, :1], positives[last][:, :, :1].clone())
        positives[last] = None
        v = v + _RowTimesWeighted.apply(v[:, :1], *rows)
    for i in reversed(blocks):
        v = v + _RowTimesWeighted.apply(v, attns[i], positives[i])
        positives[i] = None
    return _patch_columns(trace, v)


@register_method("rollout", attentions=True, description="attention rollout (Abnar and Zuidema, 2020), class-agnostic")
def attention_rollout(trace: Trace) -> torch.Tensor:
    """Attention rollout (Abnar and Zuidema, 2020): product of 0.5 * mean_heads(A) + 0.5 * I, rows renormalised
    (the row the classifier reads, carried as a vector from the last block down, as in grad_rollout)."""
    attns = trace.captured.attentions
    v = None
    for attn in reversed(attns):
        a = attn.mean(dim=1)
        a = 0.5 * a + 0.5 * torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
        a = a / a.sum(dim=-1, keepdim=True)
        v = _row_vector(trace, a) if v is None else v
        v = torch.bmm(v[:, None], a)[:, 0]
    return _patch_columns(trace, v)


def _row_vector(trace: Trace, like: torch.Tensor) -> torch.Tensor:
    """(B, N): the one-hot class-token row, or the mean over patch-token rows for patch-pooling models."""
    b, n = like.shape[0], like.shape[-1]
    v = torch.zeros(b, n, dtype=like.dtype, device=like.device)
    p = trace.num_prefix_tokens
    if trace.reads_class_token:
        v[:, 0] = 1.0
    else:
        v[:, p:] = 1.0 / (n - p)
    return v


def _patch_columns(trace: Trace, row: torch.Tensor) -> torch.Tensor:
    return _to_grid(row[:, trace.num_prefix_tokens :], trace.grid)


@register_method(
    "attn-lrp",
    attentions=True,
    description="the CFT paper's redistribution of relevance through gradient-weighted attention",
)
def attn_lrp(trace: Trace) -> torch.Tensor:
    """The redistribution rule printed in the CFT paper, Phi_i^{l-1} = sum_j A_ij Phi_j^l / (sum_k A_kj + eps).

    Read with A_ij the weight from input token i to output token j of a block, i.e. A_ij = Abar[j, i]
    in query-by-key order, where Abar = mean_heads(clamp(dS/dA * A, min=0)) is the gradient-weighted
    attention of that block (this makes the map class-specific). Relevance starts as 1 on the token the
    classifier reads (the class token; for patch-pooling models 1/n on each patch token), flows from the last
    block to the first through attention only (no residual term), and is conserved up to eps. The map is
    the input-level relevance of the patch tokens.
    """
    weighted = _weighted_attention(trace)
    b, n, _ = weighted[0].shape
    p = trace.num_prefix_tokens
    phi = weighted[0].new_zeros(b, n)
    if trace.reads_class_token:
        phi[:, 0] = 1.0
    else:
        phi[:, p:] = 1.0 / (n - p)
    for abar in reversed(weighted):
        phi = torch.einsum("bji,bj->bi", abar, phi / (abar.sum(dim=-1) + LRP_EPS))
    return _to_grid(phi[:, p:], trace.grid)


@register_method(
    "gradcam",
    last_block_input=True,
    description="Grad-CAM on the tokens entering the last block (ConvNeXt: on the last feature map)",
)
def gradcam(trace: Trace) -> torch.Tensor:
    """Grad-CAM on the normalised patch tokens entering the last block (what its attention reads).

    alpha_c = mean over patches of dS/dX_pc; map_p = relu(sum_c alpha_c X_pc).
    """
    x = trace.captured.last_block_input
    (g,) = _grad(trace, [x])
    p = trace.num_prefix_tokens
    x, g = x[:, p:], g[:, p:]
    alpha = g.mean(dim=1, keepdim=True)
    return _to_grid((alpha * x).sum(dim=-1).clamp(min=0), trace.grid)


@register_method(
    "input-grad",
    input_gradient=True,
    create_graph_default=True,
    description="|input x gradient| per pixel, averaged over each patch",
)
def input_grad(trace: Trace) -> torch.Tensor:
    """|sum over channels of input * dS/dinput| per pixel, averaged over each patch.

    Depends on the parameters only through the input gradient, so it is differentiable with respect to
    them only with create_graph=True (its default).
    """
    (g,) = _grad(trace, [trace.images])
    pixel = (trace.images * g).sum(dim=1, keepdim=True).abs()
    return F.adaptive_avg_pool2d(pixel, trace.grid)[:, 0]
