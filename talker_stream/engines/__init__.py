"""How engines are found (registry: entry points by name), checked before they are trusted
(preflight), kept from taking the stream down (isolation: worker processes) and reached when
they run elsewhere (service: OpenAI-compatible HTTP)."""
