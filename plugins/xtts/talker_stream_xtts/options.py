"""[tts.xtts] settings, and the consent rule that guards them."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from talker_stream.plugin import opt
from talker_stream.plugin import ConfigError

LANGUAGES = ("en", "es", "fr", "de", "it", "pt", "pl", "tr", "ru", "nl", "cs", "ar", "zh-cn", "hu", "ko", "ja", "hi")


@dataclass
class XttsOptions:
    model_dir: str = ""  # folder holding XTTS-v2's config.json, model.pth and vocab.json
    reference: str = ""  # a clip of the voice to clone: 6 to 30 s of clean speech
    consent: str = ""  # repeat the reference path here to record that its speaker agreed
    language: str = opt("en", choices=LANGUAGES)
    device: str = opt("auto", choices=("auto", "cpu", "cuda"))
    temperature: float = opt(0.75, 0.05, 2.0)
    speed: float = opt(1.0, 0.5, 2.0)
    chunk_tokens: int = opt(20, 4, 200)  # GPT tokens per streamed audio chunk: smaller starts sooner
    cache_dir: str = ""  # the cloned voice's embedding; empty: ~/.cache/talker-stream/voices


def resolve(options: XttsOptions, base_dir: Path) -> tuple[Path, Path]:
    """The model folder and reference clip, once the consent rule is met.

    Consent is tied to one clip rather than a yes/no switch: pointing ``reference`` at a
    different person's voice voids it, so nobody is cloned by a config edit alone.
    """

    def path(value: str) -> Path:
        p = Path(value).expanduser()
        return (p if p.is_absolute() else base_dir / p).resolve()

    if not options.model_dir:
        raise ConfigError(
            "tts.xtts.model_dir is empty: download XTTS-v2 (config.json, model.pth, vocab.json from "
            "https://huggingface.co/coqui/XTTS-v2, Coqui Public Model License) and set model_dir to that folder"
        )
    if not options.reference:
        raise ConfigError("tts.xtts.reference is empty: set it to a 6-30 s recording of the voice to clone")
    reference = path(options.reference)
    if not options.consent or path(options.consent) != reference:
        raise ConfigError(
            f"tts.xtts: cloning {reference.name} needs its speaker's consent. Once they have agreed, "
            f"set consent = {options.reference!r} in [tts.xtts] (the same path as reference)"
        )
    return path(options.model_dir), reference
