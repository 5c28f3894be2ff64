"""Discord as a chat adapter: @mentions and /ask in text, /join and /leave for voice.

discord.py runs its asyncio client inside ``run()``'s thread; ``reply()`` and ``stop()``
hand work to that loop with ``run_coroutine_threadsafe`` / ``call_soon_threadsafe``, so
any thread may call them. discord.py itself resumes a dropped gateway session (RESUME
with the last sequence number) and reconnects with backoff; a client that gives up
altogether (the gateway unreachable at start-up, say) is rebuilt here with backoff.

A /ask question the core accepted but will not answer (``dropped()``) has its "is
thinking…" response edited into a short apology; a dropped @mention is left alone (no
noise in the channel).

Spoken questions carry a ``VoiceOrigin`` handle. The audience runner asks
``speak_along(message)`` for them, so their answer is said in the voice channel it came
from as the model writes it, while the avatar says it on stream; ``reply()`` speaks it
there (whole) only when that did not happen. ``speak(message, pieces)`` says any answer.
"""
from __future__ import annotations

import asyncio
import logging
import os
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import discord
from discord import app_commands

from talker_stream.plugin import ChatMessage
from talker_stream.plugin import opt
from talker_stream.plugin import EngineUnavailable

from .text import split_message, strip_mentions
from .voice import VoiceOrigin, VoiceSession, voice_problem

log = logging.getLogger(__name__)

NO_PINGS = discord.AllowedMentions.none()  # a model's answer must never ping @everyone or a role
HEALTHY_S = 60.0  # a client that was ready this long before giving up starts its backoff afresh

# /ask when the question will not be answered: what on_message said happened to it (the core's
# QuestionQueue.offer outcomes), told only to the asker
ASK_NOTES = {
    "rate_limited": "You asked recently: try again in a bit.",
    "merged": "Someone asked that already: listen for the answer.",
    "refused": "Sorry, I can't take that question.",
    "expired": "That question came too late to be answered: try again.",
    "dropped_full": "Too many questions are waiting: try again in a bit.",
    "error": "Sorry, that question could not be queued: try again in a bit.",
}
QUEUED = "Queued: the avatar will answer on stream."
# /ask accepted (deferred: "is thinking…") but never answered: dropped(message, why) says so instead
DROPPED_NOTES = {
    "expired": "Sorry, I couldn't get to your question in time.",
    "dropped_full": "Sorry, I couldn't get to your question in time.",
    "unheard": "Sorry, my answer didn't make it out. Please ask again.",
    "failed": "Sorry, my language model failed while answering. Please ask again in a minute.",
}


@dataclass
class Options:
    token_env: str = "DISCORD_BOT_TOKEN"  # environment variable holding the bot token
    guilds: list = opt([])  # server (guild) ids where /ask, /join and /leave are registered; [] = everywhere (global commands take up to an hour to appear)
    mentions: bool = True  # answer messages that @mention the bot
    reply_in_chat: bool = True  # post answers (and speak voice answers); off = questions only, answered on stream
    voice: bool = True  # offer /join and /leave (needs PyNaCl, davey, libopus)
    reconnect_seconds: float = opt(2.0, 0.1, 300.0)  # first retry when the client gives up; doubles up to 5 minutes
    reply_timeout: float = opt(30.0, 1.0, 600.0)  # reply() waits this long for Discord before returning False


@dataclass
class AskHandle:
    """The handle of a /ask question: the deferred interaction to follow up."""

    interaction: discord.Interaction
    responded: asyncio.Event = field(default_factory=asyncio.Event)  # set once the deferral went out (or failed)
    deferred: bool = False  # the response is "is thinking…": an answer (or a dropped() note) is awaited

    async def response_sent(self, timeout: float = 10.0) -> None:
        """Wait (bounded) until /ask's own response has gone out: a follow-up must come after it."""
        try:
            await asyncio.wait_for(self.responded.wait(), timeout)
        except TimeoutError:
            pass


class DiscordAdapter:
    name = "discord"
    Options = Options

    def __init__(self, options: Options | None = None, base_dir: Path | None = None, *, settings=None,
                 client_options: dict | Callable[[], dict] | None = None, reply_in_chat: bool = False) -> None:
        self.options = options or Options()
        # whether the core will call reply() with the answer: [chat] reply_in_chat turns it on too
        self.replying = self.options.reply_in_chat or reply_in_chat
        self.base_dir = base_dir
        self.settings = settings  # for voice: [tts] and [asr]; the defaults when None
        # extra discord.Client keyword arguments, or a function returning them, called on the
        # client's loop (an aiohttp connector must be made there)
        self.client_options = client_options or {}
        self.loop: asyncio.AbstractEventLoop | None = None
        self.client: discord.Client | None = None
        self.sessions: dict[int, VoiceSession] = {}  # guild id -> voice session
        self.tts = self.asr = None  # opened at the first /join
        self._tts_lock = threading.Lock()
        self._stopping: asyncio.Event | None = None
        self._stop_requested = threading.Event()
        self._on_message: Callable[[ChatMessage], object] = lambda m: None
        self.ready = threading.Event()  # set each time the gateway session is ready
        self._ready_at: float | None = None  # loop time of the current client's first READY

    # -- the contract --------------------------------------------------------------------
    def run(self, on_message: Callable[[ChatMessage], object]) -> None:
        token = os.environ.get(self.options.token_env, "").strip()
        if not token:
            raise EngineUnavailable(f"Discord needs a bot token in the environment variable "
                                    f"{self.options.token_env} (see plugins/discord/README.md)")
        self._on_message = on_message
        asyncio.run(self._main(token))

    def reply(self, message: ChatMessage, text: str) -> bool:
        if isinstance(message.handle, VoiceOrigin):
            return message.handle.spoken_along or self.speak(message, [text])
        if not text.strip():
            return False
        return self._call(self._send(message.handle, split_message(text)))

    def dropped(self, message: ChatMessage, why: str) -> bool:
        """The core will not answer *message* after all (why: expired, dropped_full, unheard).
        A deferred /ask stops "thinking": its response becomes a short note. Anything else
        (an @mention, a spoken question) is left alone. True when a note went out."""
        handle = message.handle
        if not isinstance(handle, AskHandle):
            return False
        note = DROPPED_NOTES.get(why, DROPPED_NOTES["expired"])
        return self._call(self._take_back(handle, note))

    def speak(self, message: ChatMessage, pieces: str | Iterable[str]) -> bool:
        """Say an answer in the voice channel *message* was heard in; False when the bot has
        left it. *pieces* may be a generator of sentences still being written."""
        origin = message.handle
        session = self.sessions.get(origin.guild_id) if isinstance(origin, VoiceOrigin) else None
        if session is None or session.channel.id != origin.channel_id:
            return False
        return session.say([pieces] if isinstance(pieces, str) else pieces)

    def speak_along(self, message: ChatMessage) -> Callable[[Iterator[str]], Iterator[str]] | None:
        """For a spoken question: a pass-through for the answer's pieces on their way to the
        avatar that also says each one in the voice channel as the model writes it, so the
        asker hears the answer while the stream does, not after it (``reply`` then says
        nothing more). None for a typed question."""
        if not isinstance(message.handle, VoiceOrigin):
            return None

        def along(pieces: Iterator[str]) -> Iterator[str]:
            side: queue.SimpleQueue[str | None] = queue.SimpleQueue()

            def written() -> Iterator[str]:
                while (piece := side.get()) is not None:
                    yield piece

            if not self.speak(message, written()):  # the bot left the channel: the stream answers alone
                yield from pieces
                return
            message.handle.spoken_along = True
            try:
                for piece in pieces:
                    side.put(piece)
                    yield piece
            finally:  # the answer ended, or the avatar was cut off: the voice says what it got
                side.put(None)

        return along

    def stop(self) -> None:
        self._stop_requested.set()
        loop, stopping = self.loop, self._stopping
        if loop is not None and stopping is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(stopping.set)
            except RuntimeError:
                pass  # the loop closed meanwhile

    # -- the client ----------------------------------------------------------------------
    async def _main(self, token: str) -> None:
        self.loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        if self._stop_requested.is_set():
            return
        delay = self.options.reconnect_seconds
        state = ""
        while not self._stopping.is_set():
            self._ready_at = None
            self.client = client = self._make_client()
            task = asyncio.create_task(client.start(token, reconnect=True))
            stop = asyncio.create_task(self._stopping.wait())
            await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
            if stop.done():
                await self._shutdown(client, task)
                return
            stop.cancel()
            exc = task.exception()
            await client.close()
            if isinstance(exc, discord.LoginFailure):
                log.error("discord: the token in %s was rejected; fix it and restart", self.options.token_env)
                await self._stopping.wait()
                return
            if isinstance(exc, discord.PrivilegedIntentsRequired):
                log.error("discord: enable the Message Content intent for this bot (Developer Portal > "
                          "Bot > Privileged Gateway Intents), then restart")
                await self._stopping.wait()
                return
            if self._ready_at is not None and self.loop.time() - self._ready_at >= HEALTHY_S:
                delay, state = self.options.reconnect_seconds, ""  # it was up a while: a fresh failure
            why = f"{type(exc).__name__}: {exc}" if exc else "closed"
            if why != state:
                unexpected = exc is not None and not isinstance(exc, (OSError, discord.ConnectionClosed,
                                                                      discord.GatewayNotFound, asyncio.TimeoutError))
                log.warning("discord: disconnected (%s); retrying with backoff", why,
                            exc_info=exc if unexpected else None)
                state = why
            try:
                await asyncio.wait_for(self._stopping.wait(), delay)
            except TimeoutError:
                pass
            delay = min(delay * 2, 300.0)

    async def _shutdown(self, client: discord.Client, task: asyncio.Task) -> None:
        for guild_id in list(self.sessions):
            await self._leave(guild_id)
        await client.close()
        try:
            await asyncio.wait_for(task, 5)
        except (Exception, asyncio.CancelledError):  # noqa: BLE001 - closing: how it ended no longer matters
            pass
        log.info("discord: stopped")

    def _make_client(self) -> discord.Client:
        intents = discord.Intents.default()
        intents.message_content = self.options.mentions
        extra = self.client_options() if callable(self.client_options) else self.client_options
        client = discord.Client(intents=intents, **extra)
        tree = app_commands.CommandTree(client)
        self._add_commands(tree)

        @client.event
        async def setup_hook() -> None:
            await self._sync(client, tree)

        @client.event
        async def on_ready() -> None:
            log.info("discord: connected as %s to %d server(s)", client.user, len(client.guilds))
            self._connected()

        @client.event
        async def on_resumed() -> None:
            log.info("discord: session resumed")
            self.ready.set()

        @client.event
        async def on_disconnect() -> None:
            self.ready.clear()

        @client.event
        async def on_message(msg: discord.Message) -> None:
            self._mentioned(client, msg)

        @client.event
        async def on_voice_state_update(member, before, after) -> None:
            if member.id == client.user.id and after.channel is None and member.guild.id in self.sessions:
                session = self.sessions.pop(member.guild.id)  # disconnected by someone else
                log.info("discord voice: disconnected from %s", before.channel)
                await asyncio.to_thread(session.close)  # joins its threads: never on the gateway's loop

        return client

    def _connected(self) -> None:
        if self._ready_at is None:
            self._ready_at = asyncio.get_running_loop().time()
        self.ready.set()

    async def _sync(self, client: discord.Client, tree: app_commands.CommandTree) -> None:
        """Register the slash commands: per configured server (instant), else globally."""
        try:
            for gid in self.options.guilds:
                guild = discord.Object(id=int(gid))
                tree.copy_global_to(guild=guild)
                await tree.sync(guild=guild)
            if not self.options.guilds:
                await tree.sync()
        except (discord.HTTPException, ValueError) as exc:
            log.error("discord: cannot register the slash commands (%s); mentions still work. "
                      "Was the bot invited with the applications.commands scope?", exc)

    def _add_commands(self, tree: app_commands.CommandTree) -> None:
        @tree.command(name="ask", description="Ask the avatar a question")
        @app_commands.describe(question="What you want to ask")
        async def ask(interaction: discord.Interaction, question: app_commands.Range[str, 1, 1500]) -> None:
            handle = AskHandle(interaction)
            outcome = self._emit(interaction.user, interaction.channel, question, handle)  # only enqueues
            try:
                handle.deferred = await self._respond_ask(interaction, outcome)
            finally:
                handle.responded.set()

        if not self.options.voice:
            return

        @tree.command(name="join", description="The avatar joins your voice channel to listen and answer")
        async def join(interaction: discord.Interaction) -> None:
            await interaction.response.defer(thinking=True)
            await interaction.followup.send(await self._join(interaction), allowed_mentions=NO_PINGS)

        @tree.command(name="leave", description="The avatar leaves the voice channel")
        async def leave(interaction: discord.Interaction) -> None:
            await interaction.response.defer(thinking=True)  # leaving waits for speech recognition: past 3 s
            left = interaction.guild is not None and await self._leave(interaction.guild.id)
            await interaction.followup.send("Left the voice channel." if left else "I'm not in a voice channel.")

    async def _respond_ask(self, interaction: discord.Interaction, outcome) -> bool:
        """Answer /ask at once: a note to the asker alone when the question will not be
        answered, "queued" when the answer is only spoken on stream, else "is thinking…" until
        reply() follows up (or dropped() takes it back). (A deferral cannot be followed by a
        message only the asker sees: Discord turns the first follow-up into the deferred,
        public, message.) True when it deferred."""
        note = ASK_NOTES.get(outcome.replace("-", "_")) if isinstance(outcome, str) else None
        if note is not None:
            await interaction.response.send_message(note, ephemeral=True)
        elif not self.replying:
            await interaction.response.send_message(QUEUED, allowed_mentions=NO_PINGS)
        else:
            await interaction.response.defer(thinking=True)  # the answer comes later, as a follow-up
            return True
        return False

    # -- text ----------------------------------------------------------------------------
    def _mentioned(self, client: discord.Client, msg: discord.Message) -> None:
        if not self.options.mentions or msg.author.bot or client.user is None:
            return
        me = msg.guild.me if msg.guild else client.user
        role_ids = {r.id for r in getattr(me, "roles", []) if r.managed}  # the bot's own role, if mentioned
        if client.user not in msg.mentions and not role_ids & {r.id for r in msg.role_mentions}:
            return
        text = strip_mentions(msg.content, {client.user.id} | role_ids)
        if text:
            self._emit(msg.author, msg.channel, text, msg)

    def _emit(self, author, channel, text: str, handle):
        """Hand a question to the core; what on_message returned (the queue's outcome, such as
        "accepted" or "rate_limited", where the core says), or "error" when it raised."""
        try:
            perms = (channel.permissions_for(author) if hasattr(channel, "permissions_for") and hasattr(author, "roles")
                     else None)
            guild = getattr(channel, "guild", None)
            moderator = bool(perms and perms.manage_messages) or (guild is not None and guild.owner_id == author.id)
            return self._on_message(ChatMessage(
                platform="discord", channel=str(channel.id), author=author.display_name, text=text,
                author_id=str(author.id), moderator=moderator, handle=handle))
        except Exception:  # noqa: BLE001 - the core's queue must not take the gateway down
            log.exception("discord: on_message failed")
            return "error"

    async def _send(self, handle, chunks: list[str]) -> None:
        if isinstance(handle, AskHandle):
            await handle.response_sent()  # an answer quicker than the deferral must not follow up before it
            try:
                for chunk in chunks:
                    await handle.interaction.followup.send(chunk, allowed_mentions=NO_PINGS)
                return
            except discord.HTTPException as exc:  # the interaction token lasts 15 minutes
                log.info("discord: /ask follow-up failed (%s); answering in the channel", exc.status)
                handle = handle.interaction.channel
        if isinstance(handle, discord.Message):
            ref = handle.to_reference(fail_if_not_exists=False)
            await handle.channel.send(chunks[0], reference=ref, mention_author=False, allowed_mentions=NO_PINGS)
            chunks, handle = chunks[1:], handle.channel
        for chunk in chunks:
            await handle.send(chunk, allowed_mentions=NO_PINGS)

    async def _take_back(self, handle: AskHandle, note: str) -> bool:
        """Turn a deferred /ask's "is thinking…" into *note*: the answer is not coming."""
        await handle.response_sent()  # a question dropped at once (a full queue) must not race its own deferral
        if not handle.deferred:
            return False  # answered at once with a note (or "queued"): nothing is waiting
        try:
            await handle.interaction.edit_original_response(content=note, allowed_mentions=NO_PINGS)
            return True
        except discord.HTTPException as exc:  # the interaction token lasts 15 minutes
            log.info("discord: could not take back a /ask that will not be answered (%s)", exc.status)
            return False

    def _call(self, coro) -> bool:
        """Run *coro* on the client's loop from any thread; True when it completed (and did not
        itself return False)."""
        loop = self.loop
        if loop is None or loop.is_closed() or self.client is None:
            coro.close()
            return False
        try:
            if asyncio.get_running_loop() is loop:  # called from a handler: cannot wait on ourselves
                loop.create_task(coro)
                return True
        except RuntimeError:
            pass
        fut = asyncio.run_coroutine_threadsafe(coro, loop)
        try:
            return fut.result(self.options.reply_timeout) is not False
        except Exception as exc:  # noqa: BLE001 - HTTP errors, timeouts, a closing loop: all mean "not sent"
            fut.cancel()
            log.warning("discord: reply not sent: %s: %s", type(exc).__name__, exc)
            return False

    # -- voice ---------------------------------------------------------------------------
    async def _join(self, interaction: discord.Interaction) -> str:
        member, guild = interaction.user, interaction.guild
        channel = getattr(getattr(member, "voice", None), "channel", None)
        if guild is None or channel is None:
            return "Join a voice channel first, then use /join."
        why = await asyncio.to_thread(voice_problem)  # may look for libopus (ldconfig)
        if why is None:
            try:
                await asyncio.to_thread(self._open_engines)
            except EngineUnavailable as exc:
                why = str(exc)
        if why is not None:
            log.error("discord voice: cannot listen: %s", why)
            return f"I can't join voice here: {why}."
        await self._leave(guild.id)
        from discord.ext.voice_recv import VoiceRecvClient

        try:
            vc = await channel.connect(cls=VoiceRecvClient, timeout=20.0, reconnect=True, self_deaf=False)
        except (asyncio.TimeoutError, discord.ClientException, OSError) as exc:
            log.error("discord voice: cannot connect to %s: %s", channel, exc)
            return f"I couldn't connect to {channel.name}: {exc or type(exc).__name__}."
        text_channel = interaction.channel
        try:  # loads Silero VAD: off the loop
            session = await asyncio.to_thread(partial(
                VoiceSession, vc, loop=asyncio.get_running_loop(), on_message=self._on_message, tts=self.tts,
                asr=self.asr, settings=self._settings(),
                report=lambda text: self._report(text_channel, text), tts_lock=self._tts_lock))
        except Exception as exc:  # noqa: BLE001 - the VAD model missing, say: tell the user, leave the channel
            log.exception("discord voice: cannot listen in %s", channel)
            await vc.disconnect(force=True)
            return f"I can't listen in {channel.name}: {exc or type(exc).__name__}."
        self.sessions[guild.id] = session
        session.start()
        return f"Listening in {channel.name}. Ask me anything; talk over me to interrupt. /leave when done."

    async def _leave(self, guild_id: int) -> bool:
        session = self.sessions.pop(guild_id, None)
        if session is None:
            return False
        await asyncio.to_thread(session.close)
        await session.vc.disconnect(force=True)
        log.info("discord voice: left %s", session.channel)
        return True

    def _report(self, channel, text: str) -> None:
        """Say a voice problem in the text channel (from any thread; logged by the caller)."""
        if channel is None or self.loop is None or self.loop.is_closed():
            return
        asyncio.run_coroutine_threadsafe(channel.send(text, allowed_mentions=NO_PINGS), self.loop)

    def _settings(self):
        if self.settings is None:
            from talker_stream.plugin import load_settings

            self.settings = load_settings(None)
        return self.settings

    def _open_engines(self) -> None:
        """TTS and Whisper, once, at the first /join (a text-only bot never loads them)."""
        from talker_stream.plugin import open_asr
        from talker_stream.plugin import open_tts

        if self.tts is None:
            self.tts = open_tts(self._settings(), live=True)
        if self.asr is None:
            self.asr = open_asr(self._settings(), threads=1)
