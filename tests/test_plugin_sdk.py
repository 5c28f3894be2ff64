"""The core's two faces: the public API for embedders, the plugin SDK for plugins."""
from __future__ import annotations

import ast
from pathlib import Path

from conftest import ROOT


def core_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) for every import of talker_stream.* in *path*."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        out += [(node.lineno, n) for n in names if n == "talker_stream" or n.startswith("talker_stream.")]
    return out


def test_plugins_import_only_the_plugin_sdk():
    files = sorted(ROOT.glob("plugins/*/talker_stream_*/**/*.py"))
    assert len(files) > 20, "every plugin's code is read"
    wrong = [f"{f.relative_to(ROOT)}:{line}: {mod}" for f in files for line, mod in core_imports(f)
             if mod != "talker_stream.plugin"]
    assert not wrong, "plugins may import only talker_stream.plugin:\n" + "\n".join(wrong)


def test_the_plugin_sdk_exports_what_it_lists():
    import talker_stream.plugin as sdk

    missing = [n for n in sdk.__all__ if not hasattr(sdk, n)]
    assert not missing and {"OutFrame", "AudioChunk", "ChatMessage", "AsyncAdapter", "MediaClock", "opt",
                            "EngineUnavailable"} <= set(sdk.__all__)


def test_the_public_api_renders_with_three_names(tmp_path):
    from talker_stream import LiveAvatar, Settings, load_settings, render

    assert isinstance(load_settings(None), Settings) and callable(render) and hasattr(LiveAvatar, "say")


def test_each_plugin_keeps_its_tests_beside_it():
    for plugin in sorted(p for p in (ROOT / "plugins").iterdir() if (p / "pyproject.toml").is_file()):
        assert list((plugin / "tests").glob("test_*.py")), f"{plugin.name} has its tests in plugins/{plugin.name}/tests"
