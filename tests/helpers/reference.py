"""Plain, per-image implementations of ViT attention and relevance, written from the formulas.

They do not use cft's hooks: the forward pass is re-done block by block here, materialising attention.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def forward_with_attention(model, image: torch.Tensor):
    """Run one image (C, H, W) through a timm ViT by hand; return logits (classes,), attentions, last-block input."""
    x = model.patch_embed(image[None])
    x = model._pos_embed(x)
    x = model.norm_pre(x)
    attentions, last_input = [], None
    for i, blk in enumerate(model.blocks):
        h = blk.norm1(x)
        if i == len(model.blocks) - 1:
            last_input = h
        attn_mod = blk.attn
        n, d = h.shape[1], h.shape[2]
        qkv = attn_mod.qkv(h).reshape(1, n, 3, attn_mod.num_heads, attn_mod.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        a = torch.softmax((q * attn_mod.scale) @ k.transpose(-2, -1), dim=-1)
        attentions.append(a)
        out = (a @ v).transpose(1, 2).reshape(1, n, d)
        x = x + blk.ls1(attn_mod.proj(out))
        x = x + blk.ls2(blk.mlp(blk.norm2(x)))
    logits = model.forward_head(model.norm(x))
    return logits[0], attentions, last_input


def _reads_cls(model) -> bool:
    return model.cls_token is not None and model.global_pool == "token"


def minmax(m: torch.Tensor) -> torch.Tensor:
    span = m.max() - m.min()
    return torch.zeros_like(m) if span == 0 else (m - m.min()) / span


def _row(model, matrix: torch.Tensor, grid) -> torch.Tensor:
    p = model.num_prefix_tokens
    row = matrix[0] if _reads_cls(model) else matrix[p:].mean(0)
    return row[p:].reshape(grid)


@dataclass
class Pass:
    """One image's hand-made forward pass: what a reference method reads."""

    model: torch.nn.Module
    image: torch.Tensor  # (C, H, W), requires grad
    score: torch.Tensor  # the target's logit
    attns: list[torch.Tensor]  # per block (1, heads, N, N)
    last_input: torch.Tensor  # (1, N, D): the normalised tokens entering the last block
    grid: tuple[int, int]
    create_graph: bool


def _rollout(p: Pass) -> torch.Tensor:
    r = None
    for a in p.attns:
        m = 0.5 * a[0].mean(0) + 0.5 * torch.eye(a.shape[-1], dtype=a.dtype)
        m = m / m.sum(-1, keepdim=True)
        r = m if r is None else m @ r
    return _row(p.model, r, p.grid)


def _abars(p: Pass) -> list[torch.Tensor]:
    grads = torch.autograd.grad(p.score, p.attns, create_graph=p.create_graph, retain_graph=True)
    return [(g[0] * a[0]).clamp(min=0).mean(0) for g, a in zip(grads, p.attns)]


def _grad_rollout(p: Pass) -> torch.Tensor:
    abars = _abars(p)
    r = torch.eye(abars[0].shape[0], dtype=abars[0].dtype)
    for abar in abars:
        r = r + abar @ r
    return _row(p.model, r, p.grid)


def _attn_lrp(p: Pass) -> torch.Tensor:
    abars = _abars(p)
    n, prefix = abars[0].shape[0], p.model.num_prefix_tokens
    phi = [0.0] * n
    if _reads_cls(p.model):
        phi[0] = 1.0
    else:
        phi = [0.0] * prefix + [1.0 / (n - prefix)] * (n - prefix)
    phi = torch.tensor(phi, dtype=abars[0].dtype)
    for abar in reversed(abars):
        # Phi_i^{l-1} = sum_j A_ij Phi_j / (sum_k A_kj + eps), A_ij = abar[j, i] (input i -> output j)
        new = torch.zeros_like(phi)
        for i in range(n):
            new[i] = sum(abar[j, i] * phi[j] / (abar[j].sum() + 1e-9) for j in range(n))
        phi = new
    return phi[prefix:].reshape(p.grid)


def _gradcam(p: Pass) -> torch.Tensor:
    (g,) = torch.autograd.grad(p.score, [p.last_input], create_graph=p.create_graph, retain_graph=True)
    prefix = p.model.num_prefix_tokens
    x, g = p.last_input[0, prefix:], g[0, prefix:]
    alpha = g.mean(0)
    return torch.relu(x @ alpha).reshape(p.grid)


def _input_grad(p: Pass) -> torch.Tensor:
    (g,) = torch.autograd.grad(p.score, [p.image], create_graph=p.create_graph)
    pixel = (p.image * g).sum(0).abs()
    ph, pw = p.model.patch_embed.patch_size
    return pixel.reshape(p.grid[0], ph, p.grid[1], pw).mean(dim=(1, 3))


# relevance method -> its per-image reference, unnormalised; tests/relevance/test_methods.py checks that every method of
# cft.METHODS has one here
REFERENCES = {
    "grad-rollout": _grad_rollout,
    "rollout": _rollout,
    "attn-lrp": _attn_lrp,
    "gradcam": _gradcam,
    "input-grad": _input_grad,
}


def reference_map(model, image: torch.Tensor, target: int | None, method: str, create_graph: bool = False):
    """One image's normalised relevance map by `method`, computed from the formula."""
    reference = REFERENCES[method]  # a KeyError: a registered method without a reference
    grid = tuple(model.patch_embed.grid_size)
    image = image.clone().requires_grad_(True)
    logits, attns, last_input = forward_with_attention(model, image)
    target = int(logits.argmax()) if target is None else target
    return minmax(reference(Pass(model, image, logits[target], attns, last_input, grid, create_graph)))


def reference_batch(model, images, targets, method, create_graph=False):
    return torch.stack(
        [
            reference_map(model, img, None if targets is None else int(t), method, create_graph)
            for img, t in zip(images, targets if targets is not None else [None] * len(images))
        ]
    )


def soft_pool(mask: torch.Tensor, grid) -> torch.Tensor:
    b, h, w = mask.shape
    return F.avg_pool2d(mask[:, None], (h // grid[0], w // grid[1]))[:, 0]
