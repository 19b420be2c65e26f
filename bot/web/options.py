"""How the web API behaves: origins, limits, sessions, keys. Plain data; the CLI fills it."""

from __future__ import annotations

from pydantic import BaseModel, Field


class WebOptions(BaseModel):
    allowed_origins: list[str] = Field(
        default_factory=lambda: ["*"],
        description="Origins whose pages may call the API (CORS). `*`: any site may embed the "
        "widget; auth is a bearer token, never a cookie, so no site can act for another's visitor.",
    )
    session_secret: str = Field(min_length=16, description="Signs anonymous session tokens.")
    session_ttl_s: int = Field(default=30 * 86400, ge=60)
    api_keys: dict[str, str] = Field(
        default_factory=dict, description="name → secret, for server-to-server callers."
    )
    requests_per_minute_ip: float = Field(default=600, gt=0)
    requests_per_minute_session: float = Field(default=240, gt=0)
    turns_per_minute_session: float = Field(default=20, gt=0)
    sessions_per_minute_ip: float = Field(default=30, gt=0)
    max_body_bytes: int = Field(default=64_000, ge=1_024)
    max_message_chars: int = Field(default=4_000, ge=1)
    concurrent_turns_per_owner: int = Field(default=2, ge=1)
    # Behind a reverse proxy the client's address is in X-Forwarded-For; trust it only then.
    trust_forwarded_for: bool = False
