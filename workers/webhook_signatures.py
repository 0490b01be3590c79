"""Which deliveries are Replicate's: the Standard Webhooks signature, checked before anything else.

Replicate signs each delivery with the account's secret (`whsec_<base64 key>`): header
`webhook-signature` holds space-separated `v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>.<body>")>`
entries, `webhook-id` names the message (the same on every retry of it) and `webhook-timestamp`
is when it was sent (Unix seconds). The official client's validator does the HMAC and the
timestamp tolerance; this module first makes sure the headers have that shape, because the
validator raises plain ValueErrors (not its own errors) on a timestamp that is not a number or a
signature that is not base64, and answers "malformed" (400) apart from "forged or stale" (401).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping

from shared.errors import ConfigError, WebhookRejectedError
from shared.settings import Settings

TOLERANCE_SECONDS = 300  # the official client's (and Standard Webhooks') default
HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")
MAX_ID_LENGTH = 256
_PRINTABLE = re.compile(r"[\x21-\x7e]+")  # visible ASCII: what a message id is made of
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
SIGNATURE_BYTES = 32  # HMAC-SHA256


def malformed(headers: Mapping[str, str]) -> str | None:
    """What is wrong with the shape of a delivery's signature headers (names in lower case), or None."""
    for name in HEADERS:
        if not headers.get(name, "").strip():
            return f"missing {name} header"
    webhook_id = headers["webhook-id"].strip()
    if len(webhook_id) > MAX_ID_LENGTH or not _PRINTABLE.fullmatch(webhook_id):
        return "malformed webhook-id header"
    if not _TIMESTAMP.fullmatch(headers["webhook-timestamp"].strip()):
        return "malformed webhook-timestamp header (Unix seconds expected)"
    if not v1_signatures(headers["webhook-signature"]):
        return "malformed webhook-signature header (no v1,<base64 HMAC-SHA256> entry)"
    return None


def v1_signatures(header: str) -> list[str]:
    """The well-formed `v1,<base64>` entries of a webhook-signature header (other versions are
    another scheme's, e.g. v1a for asymmetric keys, which Replicate does not use)."""
    entries = []
    for entry in header.split():
        version, _, signature = entry.partition(",")
        if version != "v1":
            continue
        try:
            if len(base64.b64decode(signature, validate=True)) == SIGNATURE_BYTES:
                entries.append(entry)
        except (binascii.Error, ValueError):
            continue
    return entries


class WebhookVerifier:
    """Checks a delivery's signature; the secret never leaves this object."""

    def __init__(self, secret: str):
        from replicate.webhook import WebhookSigningSecret

        key = secret.removeprefix("whsec_")
        try:  # decoded as the validator will decode it, so that it cannot fail on every delivery
            valid = secret.startswith("whsec_") and "_" not in key and len(base64.b64decode(key)) > 0
        except (binascii.Error, ValueError):
            valid = False
        if not valid:  # never name the secret itself
            raise ConfigError("the webhook signing secret must be 'whsec_' followed by base64")
        self._secret = WebhookSigningSecret(key=secret)

    def check(self, headers: Mapping[str, str], body: str) -> None:
        """Return if the delivery is signed with our secret within the tolerance; else raise
        WebhookRejectedError, status 400 (malformed) or 401 (forged, or too old or new)."""
        from replicate.webhook import MissingWebhookBodyError, Webhooks, WebhookValidationError

        problem = malformed(headers)
        if problem:
            raise WebhookRejectedError(problem, status=400)
        signed = {name: headers[name].strip() for name in HEADERS}
        signed["webhook-signature"] = " ".join(v1_signatures(headers["webhook-signature"]))
        try:
            Webhooks.validate(headers=signed, body=body, secret=self._secret, tolerance=TOLERANCE_SECONDS)
        except MissingWebhookBodyError:
            raise WebhookRejectedError("empty body", status=400) from None
        except WebhookValidationError as exc:  # its messages name no secret except InvalidSecretKey's
            reason = "stale or future timestamp" if "tolerance" in str(exc) else "bad signature"
            raise WebhookRejectedError(reason, status=401) from None


def signing_secret(settings: Settings) -> str:
    """REPLICATE_WEBHOOK_SECRET, else the account's default secret from the API."""
    if settings.webhook_secret:
        return settings.webhook_secret
    if not settings.replicate_api_token:
        raise ConfigError("set REPLICATE_WEBHOOK_SECRET, or REPLICATE_API_TOKEN to fetch it from Replicate")
    import replicate

    client = replicate.Client(
        api_token=settings.replicate_api_token, base_url=settings.replicate_base_url or None
    )
    try:
        return client.webhooks.default.secret().key
    except Exception as exc:  # noqa: BLE001 - any failure here means we cannot start
        raise ConfigError(
            f"cannot fetch the webhook signing secret from Replicate: {type(exc).__name__}"
        ) from None
