"""Word error rate, for tests and benchmarks of speech recognition.

Text is compared after normalising case and punctuation ("What's the time?" and "what's
the time" are the same words), because a missing question mark is not a misheard word.
"""
from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence


def normalize(text: str) -> list[str]:
    """Lower-case words without punctuation; apostrophes inside words are kept."""
    text = unicodedata.normalize("NFKC", text).lower().replace("\u2019", "'")
    text = re.sub(r"[^\w\s']", " ", text)
    return [w.strip("'") for w in text.split() if w.strip("'")]


def edit_distance(ref: Sequence[str], hyp: Sequence[str]) -> int:
    """Word-level Levenshtein distance: substitutions + deletions + insertions."""
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1]


def wer(references: str | Sequence[str], hypotheses: str | Sequence[str]) -> float:
    """Corpus word error rate: total edits over total reference words (pairs in order)."""
    refs = [references] if isinstance(references, str) else list(references)
    hyps = [hypotheses] if isinstance(hypotheses, str) else list(hypotheses)
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    edits = words = 0
    for ref, hyp in zip(refs, hyps):
        r, h = normalize(ref), normalize(hyp)
        edits += edit_distance(r, h)
        words += len(r)
    if words == 0:
        return 0.0 if edits == 0 else float("inf")
    return edits / words


def cer(references: str | Sequence[str], hypotheses: str | Sequence[str]) -> float:
    """Corpus character error rate, for languages written without spaces (Chinese, Japanese):
    every character outside punctuation and spaces counts as one "word"."""
    refs = [references] if isinstance(references, str) else list(references)
    hyps = [hypotheses] if isinstance(hypotheses, str) else list(hypotheses)
    return wer([" ".join("".join(normalize(r))) for r in refs], [" ".join("".join(normalize(h))) for h in hyps])
