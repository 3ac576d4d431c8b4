"""A tiny, random, offline CLIP saved like a real one, for tests that need a model.

``build_tiny_clip(dir)`` writes a ``CLIPModel``, a ``CLIPTokenizerFast`` and a
``CLIPImageProcessor`` with ``save_pretrained``, so loading it goes through the same
``from_pretrained`` path as ``openai/clip-vit-base-patch32``, without network.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

_CORPUS = [
    "a photo of a cat",
    "a photo of a dog on the grass",
    "a red car parked in the street",
    "two people walking on a beach at sunset",
    "a bowl of fruit on a wooden table",
    "a mountain lake with snow and trees",
    "the quick brown fox jumps over the lazy dog",
    "an old black and white portrait",
]
BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def build_tiny_clip(
    directory: Path, *, image_size: int = 32, patch_size: int = 8, dim: int = 32, seed: int = 0
) -> Path:
    """Save a deterministic tiny CLIP (model, tokenizer, image processor) into ``directory``."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    tokenizer = build_tiny_tokenizer()
    vocab_size = len(tokenizer)
    config = CLIPConfig(  # type: ignore[no-untyped-call]
        text_config={
            "vocab_size": vocab_size,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "max_position_embeddings": 16,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "image_size": image_size,
            "patch_size": patch_size,
        },
        projection_dim=dim,
    )
    torch.manual_seed(seed)
    model = CLIPModel(config).eval()  # type: ignore[no-untyped-call]
    processor = CLIPImageProcessor(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
    )
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory


def build_tiny_tokenizer() -> Any:
    """A ``CLIPTokenizerFast``: BPE with CLIP's special tokens and ``</w>``, trained in memory."""
    from tokenizers import (  # type: ignore[import-untyped]
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
    )
    from tokenizers.trainers import BpeTrainer  # type: ignore[import-untyped]
    from transformers import CLIPTokenizerFast

    backend = Tokenizer(models.BPE(unk_token=EOS, end_of_word_suffix="</w>"))
    backend.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Lowercase()])
    # CLIPTokenizerFast insists on a Sequence pre-tokenizer (the post-4.17 format).
    backend.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace()])
    backend.decoder = decoders.BPEDecoder(suffix="</w>")
    trainer = BpeTrainer(
        vocab_size=120,
        special_tokens=[BOS, EOS],
        end_of_word_suffix="</w>",
        show_progress=False,
    )
    backend.train_from_iterator(_CORPUS, trainer=trainer)
    backend.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A {EOS}",
        pair=f"{BOS} $A {EOS} {EOS} $B {EOS}",
        special_tokens=[(BOS, backend.token_to_id(BOS)), (EOS, backend.token_to_id(EOS))],
    )
    return CLIPTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=backend, bos_token=BOS, eos_token=EOS, pad_token=EOS, unk_token=EOS
    )
