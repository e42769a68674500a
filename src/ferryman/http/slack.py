"""The Slack Web API client (slack_sdk): run-completion Slack messages.

Imported on first use (it imports slack_sdk). The destination policy is
asked before every API call with the call's URL. slack_sdk makes its
requests with urllib, which resolves names by itself: the policy's address
hook is not asked (the URL is the operator's ``FERRYMAN_SLACK_API_URL``).
Like before this module existed, slack_sdk honours ``HTTPS_PROXY`` from the
environment (Slack is usually reached through a corporate proxy, if any).
"""

from __future__ import annotations

import math
from typing import Any
from urllib.parse import urljoin

from slack_sdk import WebClient
from slack_sdk.web import SlackResponse

from ferryman.http.base import USER_AGENT, DestinationPolicy


def slack_client(
    token: str, *, base_url: str, timeout: float, policy: DestinationPolicy
) -> WebClient:
    """A Slack WebClient with ferryman's defaults.

    ``timeout`` in seconds (slack_sdk takes whole seconds: rounded up, at
    least 1); no retries of slack_sdk's own (retries are the caller's:
    durable, with backoff); ferryman's user agent before slack_sdk's.
    """
    return PolicyWebClient(
        policy,
        token=token,
        base_url=base_url,
        timeout=max(1, math.ceil(timeout)),
        retry_handlers=[],
        user_agent_prefix=USER_AGENT,
    )


class PolicyWebClient(WebClient):
    """A WebClient that asks the destination policy before every API call."""

    def __init__(self, policy: DestinationPolicy, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._policy = policy

    def api_call(
        self,
        api_method: str,
        *,
        http_verb: str = "POST",
        files: dict[str, Any] | None = None,
        data: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
        json: dict[str, Any] | None = None,
        headers: dict[str, Any] | None = None,
        auth: dict[str, Any] | None = None,
    ) -> SlackResponse:
        # the URL slack_sdk builds for the call (``_get_url``)
        self._policy.check_url(urljoin(self.base_url, api_method.lstrip("/")))
        return super().api_call(
            api_method,
            http_verb=http_verb,
            files=files,
            data=data,
            params=params,
            json=json,
            headers=headers,
            auth=auth,
        )
