"""A small XTTS checkpoint in coqui's own layout, written by the tests themselves.

No package ships XTTS-v2's weights (1.8 GB, Coqui Public Model License), so the tests build
the real model class with a small GPT (1 layer, 64 channels, 34 audio codes) and the real
HiFi-GAN decoder and speaker encoder, with random weights, and save the three files the
published model folder holds: config.json, model.pth ({"model": state_dict}) and vocab.json
(a character-level BPE tokenizer with XTTS's special tokens). The engine then loads the
folder through the same code path as the real download. It speaks noise, of course: the
tests check shapes, rates, streaming, caching and errors, not voice quality.
"""
from __future__ import annotations

import string
from pathlib import Path

SPECIAL = ["[STOP]", "[UNK]", "[SPACE]", "[START]", "[en]", "[zh-cn]", "[de]", "[fr]"]


def write_vocab(path: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers

    chars = list(string.ascii_lowercase + string.digits + ".,!?'-:;\"()")
    vocab = {tok: i for i, tok in enumerate(SPECIAL + chars)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="[UNK]"))
    tok.add_special_tokens(SPECIAL)
    tok.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    tok.save(str(path))


def write_checkpoint(folder: Path, seed: int = 0) -> Path:
    """config.json, model.pth and vocab.json for a tiny XTTS in *folder*."""
    import torch
    from TTS.tts.configs.xtts_config import XttsArgs, XttsAudioConfig, XttsConfig
    from TTS.tts.models.xtts import Xtts

    folder.mkdir(parents=True, exist_ok=True)
    write_vocab(folder / "vocab.json")
    args = XttsArgs(
        gpt_layers=1, gpt_n_model_channels=64, gpt_n_heads=4, decoder_input_dim=64,
        gpt_num_audio_tokens=34, gpt_start_audio_token=32, gpt_stop_audio_token=33,
        gpt_max_audio_tokens=24, gpt_max_text_tokens=120, gpt_max_prompt_tokens=16,
        gpt_use_perceiver_resampler=True, gpt_code_stride_len=1024,
    )
    config = XttsConfig(model_args=args, audio=XttsAudioConfig(), gpt_cond_len=6, gpt_cond_chunk_len=3)
    config.model_args.tokenizer_file = str(folder / "vocab.json")
    torch.manual_seed(seed)
    model = Xtts(config)
    from TTS.tts.layers.xtts.tokenizer import VoiceBpeTokenizer

    model.tokenizer = VoiceBpeTokenizer(str(folder / "vocab.json"))
    model.init_models()
    torch.save({"model": model.state_dict()}, folder / "model.pth")
    config.save_json(str(folder / "config.json"))
    return folder
