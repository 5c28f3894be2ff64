"""The brain: hearing (asr/), the conversation and its memory, drafting answers during the
end-of-turn silence (drafts), moderation, the language models (llm/), and the one turn path
every question takes (turns)."""
