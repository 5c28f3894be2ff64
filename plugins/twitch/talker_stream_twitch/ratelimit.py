"""Twitch's send limits, kept on the client so the bot is never muted for 30 minutes.

Twitch refills its buckets on a schedule the client cannot see, so this is a sliding
window (a token comes back exactly one window after it was spent): at no instant can the
last window hold more sends than the budget, wherever Twitch's refill falls.

Two budgets, as Twitch counts them: every PRIVMSG spends from the privileged budget (100
per 30 s); one to a channel where the bot is not moderator, VIP or broadcaster also spends
from the user budget (20 per 30 s) and waits out the channel's slow mode (at least 1 s).
"""
from __future__ import annotations

from collections import deque


class _Window:
    def __init__(self, budget: int, seconds: float) -> None:
        self.budget = budget
        self.seconds = seconds
        self.sent: deque[float] = deque(maxlen=budget)

    def wait(self, now: float) -> float:
        if len(self.sent) < self.budget:
            return 0.0
        return max(0.0, self.sent[0] + self.seconds - now)


class SendBudget:
    def __init__(self, budget: int, privileged_budget: int, window: float, channel_gap: float) -> None:
        self.user = _Window(budget, window)
        self.privileged = _Window(privileged_budget, window)
        self.channel_gap = channel_gap
        self.slow: dict[str, float] = {}  # channel -> slow-mode seconds from ROOMSTATE
        self.last: dict[str, float] = {}  # channel -> when the bot last spoke there

    def wait(self, channel: str, privileged: bool, now: float) -> float:
        """Seconds until a message to *channel* may go out (0: now)."""
        delay = self.privileged.wait(now)
        if not privileged:
            gap = max(self.channel_gap, self.slow.get(channel, 0.0))
            since = now - self.last.get(channel, float("-inf"))
            delay = max(delay, self.user.wait(now), gap - since)
        return max(0.0, delay)

    def spend(self, channel: str, privileged: bool, now: float) -> None:
        self.privileged.sent.append(now)
        if not privileged:
            self.user.sent.append(now)
        self.last[channel] = now
