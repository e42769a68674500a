"""ferryman's own secret variables are forgotten by the processes that run steps."""

from __future__ import annotations

from ferryman.process_secrets import SECRET_VARIABLES, forget_secret_environ
from ferryman.settings import Settings


def test_every_secret_setting_is_forgotten() -> None:
    environ = {name: "s3cr3t" for name in SECRET_VARIABLES}
    environ["FERRYMAN_SLACK_SIGNING_SECRET"] = "signing"
    environ["HOME"] = "/root"
    gone = forget_secret_environ(environ)
    assert "FERRYMAN_SLACK_SIGNING_SECRET" in gone
    assert "FERRYMAN_SLACK_BOT_TOKEN" in gone and "FERRYMAN_JWT_SECRET" in gone
    assert environ == {"HOME": "/root"}


def test_the_list_names_every_secret_like_setting() -> None:
    # A new setting whose name says it holds a secret must be on the list.
    names = list(Settings.variables())
    secretish = [
        n
        for n in names
        if any(w in n for w in ("SECRET", "TOKEN", "PASSWORD"))
        and not n.startswith("FERRYMAN_SECRETS_")  # where resolvers look, not values
    ]
    assert secretish, "Settings.variables() lists the settings"
    assert set(secretish) <= set(SECRET_VARIABLES), set(secretish) - set(SECRET_VARIABLES)
