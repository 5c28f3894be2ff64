"""talker-stream: one portrait photo becomes a talking, blinking, emoting face.

For people embedding it::

    from talker_stream import LiveAvatar, Settings, load_settings, render

    settings = load_settings("config.toml")          # or Settings() for the embedded defaults
    render(settings, "hello.mp4", text=["Hello! [happy] I can talk now."])
    with LiveAvatar(settings, sinks=[my_sink]) as avatar:
        avatar.say("Hi, chat!")

Plugins import from :mod:`talker_stream.plugin` instead. docs/architecture.md draws the
data path and says what each folder holds.
"""

import os

# Every matrix product here is small; a multi-threaded BLAS only adds threads that spin
# between frames (measured: a whole idle core). Users can still override it.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

__version__ = "0.1.0"

_PUBLIC = {  # loaded on first use: `import talker_stream` stays light (the CLI parses args first)
    "LiveAvatar": ("live", "LiveAvatar"),
    "render": ("offline", "render"),
    "Settings": ("config", "Settings"),
    "load_settings": ("config", "load_settings"),
}
__all__ = ["LiveAvatar", "Settings", "__version__", "load_settings", "render"]


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'talker_stream' has no attribute {name!r}")
    import importlib

    module, attr = _PUBLIC[name]
    value = getattr(importlib.import_module(f".{module}", __name__), attr)
    globals()[name] = value
    return value
