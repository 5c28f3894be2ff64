import tomllib

import pytest

from talker_stream.config import defaults_as_dict, load_settings
from talker_stream.errors import ConfigError
from conftest import ROOT


def test_config_toml_documents_exactly_the_defaults():
    with open(ROOT / "config.toml", "rb") as f:
        assert tomllib.load(f) == defaults_as_dict()


def test_repo_config_loads_and_resolves_paths_from_its_folder():
    s = load_settings(ROOT / "config.toml")
    assert s.portrait_path() == ROOT / "talker_stream" / "assets" / "portrait.png", "empty: the sample in the package"
    assert s.portrait_path().read_bytes() == (ROOT / "examples" / "portrait.png").read_bytes()
    mine = load_settings(ROOT / "config.toml", {"avatar.portrait": "examples/portrait.png"})
    assert mine.portrait_path() == ROOT / "examples" / "portrait.png", "relative to the config file's folder"


@pytest.mark.parametrize(
    "body,line,words",
    [
        ("[video]\n\nfps = 500\n", 3, "between 1 and 120"),
        ("[video]\nfsp = 5\n", 2, "unknown setting"),
        ("[face.expression]\nhead_motion = 'lots'\n", 2, "must be float"),
        ("[tts]\nengine = \"nope\"\n", 2, "installed: espeak, openai, piper"),
        ("[render]\npreset = \"glacial\"\n", 2, "must be one of"),
        ("# secrets\n[render]\nstream_key = \"live_123\"\n", 3, "environment variable"),
        ("[serve]\nport = 1\nice_servers = [\"turn.example.org:3478\"]\n", 3, "not a STUN/TURN URL"),
        ("[serve]\nice_servers = [\"stun:stun.example.org\"]\n\nrelay_only = true\n", 4, "needs a TURN server"),
        ("[serve]\nturn_secret = \"abc\"\n", 2, "environment variable"),
    ],
)
def test_errors_point_at_the_line(tmp_path, body, line, words):
    p = tmp_path / "config.toml"
    p.write_text(body)
    with pytest.raises(ConfigError) as err:
        load_settings(p)
    msg = str(err.value)
    assert msg.startswith(f"{p}:{line}:"), msg
    assert words in msg
    assert "live_123" not in msg, "a secret must never be echoed back"


def test_invalid_toml_and_missing_file(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text("[video\nfps=")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_settings(p)
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "missing.toml")


def test_blink_range_checked(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text("[face.expression]\nblink_min = 8.0\nblink_max = 3.0\n")
    with pytest.raises(ConfigError, match="blink_min"):
        load_settings(p)


def test_memory_that_cannot_fit_the_model_context_is_refused(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[llm]\nmemory_tokens = 4000\n\n[llm.llamacpp]\ncontext = 2048\n")
    with pytest.raises(ConfigError, match=r"c.toml:2: llm: memory_tokens \(4000\).*exceed llm.llamacpp.context \(2048\)"):
        load_settings(cfg)
    cfg.write_text("[llm]\nmemory_tokens = 4000\n\n[llm.llamacpp]\ncontext = 8192\n")
    assert load_settings(cfg).llm.memory_tokens == 4000
