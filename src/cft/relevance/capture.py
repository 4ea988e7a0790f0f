"""Hooks that expose what relevance methods read, as a context manager that always cleans up."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class Captured:
    """Tensors recorded during one forward pass, all inside the autograd graph."""

    attentions: list[torch.Tensor] = field(default_factory=list)  # per block, (B, heads, N, N)
    last_block_input: torch.Tensor | None = None  # (B, N, D): the normalised tokens the last attention reads
    features: torch.Tensor | None = None  # (B, C, h, w): a convolutional model's last feature map


@contextlib.contextmanager
def capture(
    model: nn.Module, attentions: bool = True, last_block_input: bool = False, unfused: bool = False
) -> Iterator[Captured]:
    """Record post-softmax attention of every block (and the last block's normalised input) while active.

    Fused attention never materialises the attention matrix (and its CPU kernel has no second derivative),
    so it is switched off when attention is read or `unfused` is set, and only inside this context: the
    previous setting comes back on exit, hooks are removed, whatever happens in the block.
    """
    store = Captured()
    handles = []
    fused_before = []
    try:
        for block in model.blocks if attentions or unfused else ():
            attn = block.attn
            fused_before.append((attn, attn.fused_attn))
            attn.fused_attn = False
            if attentions:
                handles.append(attn.attn_drop.register_forward_hook(_append_output(store.attentions)))
        if last_block_input:
            norm = getattr(model.blocks[-1], "norm1", None)
            if norm is None:
                raise TypeError("the last block has no norm1 layer to read activations from")

            def keep(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
                store.last_block_input = output

            handles.append(norm.register_forward_hook(keep))
        yield store
    finally:
        for handle in handles:
            handle.remove()
        for attn, fused in fused_before:
            attn.fused_attn = fused


def _append_output(target: list[torch.Tensor]):
    def hook(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        target.append(output)

    return hook


@contextlib.contextmanager
def leading_tokens_only(modules: Sequence[nn.Module], rows: int) -> Iterator[None]:
    """While active, each module computes tokens [0, rows) of its (B, N, D) input alone and pads its output with
    zeros to N tokens; the hooks are removed whatever happens.

    Only for modules that act on each token alone and whose output for the other tokens nothing reads (the last
    block's attention projection and MLP when the head reads only the prefix tokens): then the logits, the maps
    and every gradient are those of the whole module, for less work in the forward and both backward passes."""
    handles = []
    try:
        for module in modules:
            handles.extend(_on_leading_tokens(module, rows))
        yield
    finally:
        for handle in handles:
            handle.remove()


def _on_leading_tokens(module: nn.Module, rows: int) -> list[torch.utils.hooks.RemovableHandle]:
    tokens: list[int] = []

    def keep_rows(_module: nn.Module, args: tuple) -> tuple:
        tokens.append(args[0].shape[1])
        return (args[0][:, :rows], *args[1:])

    def pad_rows(_module: nn.Module, _args: tuple, out: torch.Tensor) -> torch.Tensor:
        return F.pad(out, (0, 0, 0, tokens.pop() - out.shape[1]))

    return [module.register_forward_pre_hook(keep_rows), module.register_forward_hook(pad_rows)]
