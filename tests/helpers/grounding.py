"""Tiny random Hugging Face segmentation models built offline from configs, with their tokenizers and processors
(the tests of cft.grounding.hf, the pipeline test and benchmarks/bench_masks.py use them).

Random weights say nothing about quality: they prove plumbing. Nothing is downloaded.
"""

from __future__ import annotations

import json

import torch
from transformers import (
    BertConfig,
    BertTokenizer,
    CLIPSegConfig,
    CLIPSegForImageSegmentation,
    CLIPSegProcessor,
    CLIPTokenizer,
    GroundingDinoConfig,
    GroundingDinoForObjectDetection,
    GroundingDinoImageProcessor,
    GroundingDinoProcessor,
    Owlv2Config,
    Owlv2ForObjectDetection,
    Owlv2ImageProcessor,
    Owlv2Processor,
    Sam2Config,
    Sam2ImageProcessor,
    Sam2Model,
    Sam2Processor,
    Sam3Config,
    Sam3ImageProcessor,
    Sam3Model,
    Sam3Processor,
    SamConfig,
    SamImageProcessor,
    SamModel,
    SamProcessor,
    SwinConfig,
    ViTImageProcessor,
)

from cft.grounding.hf import SAM3, CLIPSeg, GroundedSAM, OWLv2SAM

WORDS = ["cat", "dog", "water", "wheel", "red", "sky"]


def write_vocab(d):
    """A BERT vocab.txt and a CLIP vocab.json + merges.txt that know WORDS whole (BOS is not id 0, as in CLIP)."""
    (d / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", *WORDS]) + "\n")
    vocab = {"!": 0, "<|startoftext|>": 1, "<|endoftext|>": 2}
    merges = []
    for c in "abcdefghijklmnopqrstuvwxyz.":
        vocab.setdefault(c, len(vocab))
        vocab.setdefault(c + "</w>", len(vocab))
    for w in WORDS:
        parts, cur = [*w[:-1], w[-1] + "</w>"], w[0]
        for t in parts[1:]:
            merges.append(f"{cur} {t}")
            cur += t
            vocab.setdefault(cur, len(vocab))
    (d / "vocab.json").write_text(json.dumps(vocab))
    (d / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return d


def clip_tokenizer(d, max_length: int) -> CLIPTokenizer:
    return CLIPTokenizer(vocab=str(d / "vocab.json"), merges=str(d / "merges.txt"), model_max_length=max_length)


def clip_text(d) -> dict:
    n = len(json.loads((d / "vocab.json").read_text()))
    tiny = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
    return dict(vocab_size=n, **tiny, bos_token_id=1, eos_token_id=2, pad_token_id=2)


def clip_vision(layers: int) -> dict:
    """A CLIP-style vision tower of `layers` blocks on 32x32 images in 8x8 patches (OWLv2, CLIPSeg)."""
    return dict(
        hidden_size=16, intermediate_size=32, num_hidden_layers=layers, num_attention_heads=2, image_size=32,
        patch_size=8,
    )  # fmt: skip


def tiny_sam() -> tuple:
    torch.manual_seed(0)
    cfg = SamConfig(
        vision_config=dict(
            hidden_size=16,
            output_channels=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=64,
            patch_size=8,
            window_size=4,
            global_attn_indexes=[0],
            num_pos_feats=8,
            mlp_dim=16,
        ),
        prompt_encoder_config=dict(hidden_size=16, image_size=64, patch_size=8, mask_input_channels=4),
        mask_decoder_config=dict(hidden_size=16, mlp_dim=16, num_attention_heads=2, iou_head_hidden_dim=8),
    )
    ip = SamImageProcessor(
        size={"longest_edge": 64},
        pad_size={"height": 64, "width": 64},
        mask_size={"longest_edge": 16},
        mask_pad_size={"height": 16, "width": 16},
    )
    return SamModel(cfg).eval(), SamProcessor(image_processor=ip)


def tiny_sam2() -> tuple:
    torch.manual_seed(0)
    backbone = dict(
        model_type="sam2_hiera_det_model",
        hidden_size=8,
        image_size=[64, 64],
        blocks_per_stage=[1, 1, 1, 2],
        embed_dim_per_stage=[8, 16, 32, 64],
        num_attention_heads_per_stage=[1, 1, 1, 1],
        window_size_per_stage=[4, 4, 4, 2],
        global_attention_blocks=[4],
        window_positional_embedding_background_size=[2, 2],
    )
    cfg = Sam2Config(
        vision_config=dict(
            backbone_config=backbone,
            backbone_channel_list=[64, 32, 16, 8],
            backbone_feature_sizes=[[16, 16], [8, 8], [4, 4]],
            fpn_hidden_size=32,
        ),
        prompt_encoder_config=dict(hidden_size=32, image_size=64, patch_size=16, mask_input_channels=4),
        mask_decoder_config=dict(hidden_size=32, mlp_dim=16, num_attention_heads=2, iou_head_hidden_dim=8),
    )
    ip = Sam2ImageProcessor(size={"height": 64, "width": 64}, mask_size={"height": 16, "width": 16})
    return Sam2Model(cfg).eval(), Sam2Processor(image_processor=ip)


def tiny_grounding_dino(d) -> tuple:
    torch.manual_seed(0)
    cfg = GroundingDinoConfig(
        backbone_config=SwinConfig(
            image_size=64,
            patch_size=4,
            embed_dim=8,
            depths=[1, 1, 1, 1],
            num_heads=[1, 1, 1, 1],
            window_size=2,
            out_indices=[2, 3, 4],
        ),
        text_config=BertConfig(
            vocab_size=len(WORDS) + 6,
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=16,
            max_position_embeddings=32,
        ),
        num_queries=4,
        encoder_layers=1,
        decoder_layers=2,
        encoder_ffn_dim=16,
        decoder_ffn_dim=16,
        d_model=32,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        max_text_len=16,
        encoder_n_points=1,
        decoder_n_points=1,
        num_feature_levels=3,
    )  # d_model >= 32 (GroupNorm(32)); decoder_layers >= 2 (tied box heads)
    ip = GroundingDinoImageProcessor(size={"shortest_edge": 64, "longest_edge": 64})
    tok = BertTokenizer(vocab=str(d / "vocab.txt"))
    return GroundingDinoForObjectDetection(cfg).eval(), GroundingDinoProcessor(image_processor=ip, tokenizer=tok)


def tiny_owlv2(d) -> tuple:
    torch.manual_seed(0)
    cfg = Owlv2Config(
        text_config={**clip_text(d), "max_position_embeddings": 16},
        vision_config=clip_vision(1),
        projection_dim=16,
    )
    ip = Owlv2ImageProcessor(size={"height": 32, "width": 32})
    return Owlv2ForObjectDetection(cfg).eval(), Owlv2Processor(image_processor=ip, tokenizer=clip_tokenizer(d, 16))


def tiny_sam3(d) -> tuple:
    torch.manual_seed(0)
    h = 16
    backbone = dict(
        model_type="sam3_vit_model",
        hidden_size=h,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=56,
        patch_size=14,
        window_size=2,
        global_attn_indexes=[0],
        pretrain_image_size=56,
    )
    layers = dict(hidden_size=h, num_attention_heads=2, intermediate_size=32)
    cfg = Sam3Config(
        vision_config=dict(
            backbone_config=backbone, fpn_hidden_size=h, backbone_feature_sizes=[[16, 16], [8, 8], [4, 4]]
        ),
        text_config={
            **clip_text(d),
            "model_type": "clip_text_model",
            "projection_dim": h,
            "max_position_embeddings": 32,
        },
        geometry_encoder_config=dict(**layers, num_layers=1, roi_size=2),
        detr_encoder_config=dict(**layers, num_layers=1),
        detr_decoder_config=dict(**layers, num_layers=1, num_queries=5),
        mask_decoder_config=dict(hidden_size=h, num_upsampling_stages=2, num_attention_heads=2),
    )
    ip = Sam3ImageProcessor(size={"height": 56, "width": 56}, mask_size={"height": 16, "width": 16})
    return Sam3Model(cfg).eval(), Sam3Processor(image_processor=ip, tokenizer=clip_tokenizer(d, 32))


def tiny_clipseg(d) -> tuple:
    torch.manual_seed(0)
    cfg = CLIPSegConfig(
        text_config={**clip_text(d), "max_position_embeddings": 16},
        vision_config=clip_vision(2),
        projection_dim=16,
        extract_layers=[0, 1],
        reduce_dim=8,
        decoder_num_attention_heads=2,
        decoder_intermediate_size=16,
    )
    ip = ViTImageProcessor(size={"height": 32, "width": 32})
    return CLIPSegForImageSegmentation(cfg).eval(), CLIPSegProcessor(
        image_processor=ip, tokenizer=clip_tokenizer(d, 16)
    )


def save(pair, path):
    pair[0].save_pretrained(path)
    pair[1].save_pretrained(path)
    return str(path)


def tiny_segmenters(d) -> dict:
    """Every backend with its tiny random model and thresholds that keep everything (for benchmarks/bench_masks)."""
    d = write_vocab(d)
    return {
        "grounded-sam": GroundedSAM(box_threshold=0.0, detector=tiny_grounding_dino(d), sam=tiny_sam(), device="cpu"),
        "owlv2-sam": OWLv2SAM(box_threshold=0.0, detector=tiny_owlv2(d), sam=tiny_sam(), device="cpu"),
        "sam3": SAM3(score_threshold=0.0, mask_threshold=0.0, sam3=tiny_sam3(d), device="cpu"),
        "clipseg": CLIPSeg(threshold=0.0, clipseg=tiny_clipseg(d), device="cpu"),
    }
