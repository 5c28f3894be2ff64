"""The audience: chat platforms in (the adapter contract, adapters/), one fair question queue
(queue), and the runner that answers them one at a time through the turn service (runner)."""
