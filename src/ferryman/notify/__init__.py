"""Outbound notifications: Standard Webhooks signing, run-completion reports
and their renderings (JSON for webhooks, short text for Slack).

Delivery itself (claiming due callbacks, retries, dead-lettering) is the
callback sender's job: ``ferryman.engine.callback_sender``.
"""
