"""The Slack bot: an interface beside ``api/`` and ``cli/``.

It parses what people write in Slack (``grammar``), calls the services
(``commands``, ``forms``) and renders answers (``render``); ``bot`` holds the
slack_bolt app, ``routes`` mounts it at ``/slack/events`` on the app
``create_app`` builds, and ``updater`` is the loop keeping run messages
current. See docs/slack.md.
"""
