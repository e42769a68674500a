"""The callback sender: a loop (``loop.py``) that claims due run-completion
callbacks and posts them (``posting.py``: webhooks and Slack messages). See
docs/server.md, "Run-completion callbacks"."""

from ferryman.engine.callback_sender.loop import CallbackSender

__all__ = ["CallbackSender"]
