"""Plain, per-image implementations of ViT attention and relevance, written from the formulas.

They do not use cft's hooks: the forward pass is re-done block by block here, materialising attention.
"""

from __future__ import annotations

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


def reference_map(model, image: torch.Tensor, target: int | None, method: str, create_graph: bool = False):
    """One image's normalised relevance map by `method`, computed from the formula."""
    grid = tuple(model.patch_embed.grid_size)
    image = image.clone().requires_grad_(True)
    logits, attns, last_input = forward_with_attention(model, image)
    target = int(logits.argmax()) if target is None else target
    score = logits[target]
    p = model.num_prefix_tokens
    if method == "rollout":
        r = None
        for a in attns:
            m = 0.5 * a[0].mean(0) + 0.5 * torch.eye(a.shape[-1], dtype=a.dtype)
            m = m / m.sum(-1, keepdim=True)
            r = m if r is None else m @ r
        return minmax(_row(model, r, grid))
    if method in ("grad-rollout", "attn-lrp"):
        grads = torch.autograd.grad(score, attns, create_graph=create_graph, retain_graph=True)
        abars = [(g[0] * a[0]).clamp(min=0).mean(0) for g, a in zip(grads, attns)]
        n = abars[0].shape[0]
        if method == "grad-rollout":
            r = torch.eye(n, dtype=abars[0].dtype)
            for abar in abars:
                r = r + abar @ r
            return minmax(_row(model, r, grid))
        phi = [0.0] * n
        if _reads_cls(model):
            phi[0] = 1.0
        else:
            phi = [0.0] * p + [1.0 / (n - p)] * (n - p)
        phi = torch.tensor(phi, dtype=abars[0].dtype)
        for abar in reversed(abars):
            # Phi_i^{l-1} = sum_j A_ij Phi_j / (sum_k A_kj + eps), A_ij = abar[j, i] (input i -> output j)
            new = torch.zeros_like(phi)
            for i in range(n):
                new[i] = sum(abar[j, i] * phi[j] / (abar[j].sum() + 1e-9) for j in range(n))
            phi = new
        return minmax(phi[p:].reshape(grid))
    if method == "gradcam":
        (g,) = torch.autograd.grad(score, [last_input], create_graph=create_graph, retain_graph=True)
        x, g = last_input[0, p:], g[0, p:]
        alpha = g.mean(0)
        return minmax(torch.relu(x @ alpha).reshape(grid))
    if method == "input-grad":
        (g,) = torch.autograd.grad(score, [image], create_graph=create_graph)
        pixel = (image * g).sum(0).abs()
        ph, pw = model.patch_embed.patch_size
        return minmax(pixel.reshape(grid[0], ph, grid[1], pw).mean(dim=(1, 3)))
    raise ValueError(method)


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
