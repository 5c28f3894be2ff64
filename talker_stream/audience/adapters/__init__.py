"""Chat platforms in: every adapter turns its platform's messages into ChatMessages.

An adapter is a plugin (entry point group ``talker_stream.adapters``) enabled by name in
``[chat] adapters`` and configured in ``[adapters.NAME]`` (its ``Options`` dataclass, checked
like a sink's; tokens only through ``*_env`` settings naming environment variables).

The contract, kept small so each platform's quirks stay inside its plugin:

- ``run(on_message)`` blocks in a thread of its own (an adapter may run an asyncio loop
  inside it) until ``stop()``; it calls ``on_message(ChatMessage)`` for every message,
  reconnects by itself with backoff, and logs each state change once.
  ``on_message`` never blocks: the core only enqueues, and returns what became of the
  message (the question queue's outcome: accepted, merged, rate_limited, expired,
  dropped_full, refused; or error), so an adapter can tell the asker when it matters.
- ``reply(message, text)`` answers in the platform's chat where it allows it (rate limits
  are the adapter's to respect); thread-safe; returns False when it cannot.
- ``stop()`` makes ``run`` return soon (within a few seconds), from any thread.
- ``dropped(message, why)``, optional: a question that was *accepted* will not be answered
  after all. *why* is "expired" (waited past [chat] max_age_seconds), "dropped_full" (pushed
  out of a full queue by a higher-priority question), "unheard" (answered, but nothing of
  the answer was heard: the avatar was full or interrupted) or "failed" (the language model
  crashed or was unreachable while answering, again when the question was asked once more). Called on the core's reply
  thread, like ``reply``; an adapter that told the asker "wait for it" can take it back here
  (Discord's /ask edits its "thinking…" message). Adapters without it are unaffected.
- ``speak_along(message)``, optional: for a question the platform can hear an answer to (a
  spoken question in a voice channel), a pass-through ``Iterator[str] -> Iterator[str]`` for
  the answer's pieces on their way to the avatar's voice, which also speaks them on the
  platform as the model writes them, so the asker hears the answer while the stream does,
  not after it; None for any other message. Only asked when the adapter replies in chat;
  its ``reply`` then need not say the answer again.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from ...frames import MODERATOR, PAID, REGULAR, ChatMessage  # noqa: F401 - the contract's types



class ChatAdapter(Protocol):
    name: str

    def run(self, on_message: Callable[[ChatMessage], str]) -> None: ...

    def reply(self, message: ChatMessage, text: str) -> bool: ...

    def stop(self) -> None: ...
