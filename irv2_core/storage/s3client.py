"""One boto3 S3 client setup and one way to explain its failures, for staging and publishing.

Works with AWS S3, MinIO and Huawei OBS (S3 API): endpoint from the argument or
``AWS_ENDPOINT_URL``; credentials and region from the standard AWS chain. Transient failures
(5xx, throttling, dropped connections) are retried by botocore's ``standard`` mode with bounded
attempts; what still fails after them is explained as a TransientError (an Irv2Error), so the
Prefect task around it retries it later, unlike bad credentials or a missing bucket. Every message
is scrubbed of the secret key and session token before it can reach a log or the user.
"""

from __future__ import annotations

import os
from datetime import datetime
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit, urlunsplit

import boto3
import botocore.session
import botocore.utils
from botocore.config import Config
from botocore.exceptions import (
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
)

from irv2_core.errors import Irv2Error, TransientError

__all__ = [
    "ATTEMPTS_ENV",
    "MAX_ATTEMPTS",
    "S3Client",
    "check_endpoint_url",
    "is_transient",
    "max_attempts",
    "parse_timestamp",
    "redact_url",
]

MAX_ATTEMPTS = 6  # botocore standard mode: exponential backoff with jitter, capped at 20 s
ATTEMPTS_ENV = "IRV2_S3_MAX_ATTEMPTS"  # more for a flaky link, 1 to fail at once (tests)


def check_endpoint_url(value: str | None) -> str | None:
    """*value* when it is an S3 endpoint URL (or None); raises ValueError saying what it must be.
    The one rule for every ``endpoint_url`` a flow or deployment takes."""
    if value is not None and not value.startswith(("http://", "https://")):
        raise ValueError(f"must start with http:// or https://, got {value!r}")
    return value


def max_attempts() -> int:
    """Attempts per S3 request: ``IRV2_S3_MAX_ATTEMPTS``, else MAX_ATTEMPTS."""
    raw = os.environ.get(ATTEMPTS_ENV, "").strip()
    if not raw:
        return MAX_ATTEMPTS
    if not raw.isdigit() or int(raw) < 1:
        raise Irv2Error(
            f"{ATTEMPTS_ENV}={raw!r} is not a whole number of attempts >= 1 "
            f"(unset it for the default, {MAX_ATTEMPTS})"
        )
    return int(raw)


_CRED_HINTS = {
    "InvalidAccessKeyId": "the access key id is not known to this endpoint",
    "SignatureDoesNotMatch": "the secret access key does not match the access key id",
    "InvalidClientTokenId": "the access key id is not known to this endpoint",
    "ExpiredToken": "the session token has expired",
    "InvalidToken": "the session token is invalid",
    "TokenRefreshRequired": "the session token must be refreshed",
}
_TRANSIENT_CODES = {
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "InternalError",
    "ServiceUnavailable",
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "500",
    "502",
    "503",
    "504",
}
_TRANSIENT_NAMES = {
    "EndpointConnectionError",
    "ConnectTimeoutError",
    "ReadTimeoutError",
    "ConnectionClosedError",
    "ProtocolError",
    "IncompleteReadError",
    "ResponseStreamingError",
}


def is_transient(exc: BaseException) -> bool:
    """True when *exc* itself (not its cause) may pass on retry: a dropped or timed-out
    connection, S3 throttling or a 5xx; never bad credentials or a missing bucket/key."""
    if isinstance(exc, TransientError | ConnectionError | TimeoutError):
        return True
    if type(exc).__name__ in _TRANSIENT_NAMES:
        return True
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = str(response.get("Error", {}).get("Code", ""))
        status = str(response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
        return code in _TRANSIENT_CODES or status in _TRANSIENT_CODES
    return False


def redact_url(url: str | None) -> str | None:
    """*url* without any ``user:password@`` part (safe to log and record)."""
    if not url:
        return url
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def parse_timestamp(value: str | int | float) -> datetime:
    """The timestamps S3 sends, parsed without dateutil: HTTP dates (``Last-Modified`` on
    every GET) and ISO 8601 (listings). dateutil's parser was ~10 % of staging's client CPU
    per small object (issue 24); any other form goes to botocore's own parser."""
    if isinstance(value, str):
        try:
            parse = datetime.fromisoformat if value[:1].isdigit() else parsedate_to_datetime
            parsed = parse(value)
            if parsed.tzinfo is not None:  # naive: let botocore apply its rule
                return parsed
        except (ValueError, TypeError):
            pass
    return botocore.utils.parse_timestamp(value)


def _botocore_session() -> botocore.session.Session:
    session = botocore.session.get_session()
    factory = session.get_component("response_parser_factory")
    factory.set_parser_defaults(timestamp_parser=parse_timestamp)
    return session


class S3Client:
    """A boto3 session and S3 client for one endpoint, with secret-free error messages."""

    def __init__(self, endpoint_url: str | None = None, workers: int = 8) -> None:
        self.endpoint = endpoint_url or os.environ.get("AWS_ENDPOINT_URL")
        self.session = boto3.session.Session(botocore_session=_botocore_session())
        cfg = Config(
            retries={"mode": "standard", "total_max_attempts": max_attempts()},
            max_pool_connections=workers + 4,
            connect_timeout=10,
            read_timeout=60,
        )
        self.client = self.session.client("s3", endpoint_url=self.endpoint, config=cfg)

    def _secrets(self) -> list[str]:
        creds = self.session.get_credentials()
        if creds is None:
            return []
        frozen = creds.get_frozen_credentials()
        return [s for s in (frozen.secret_key, frozen.token) if s]

    def scrub(self, text: str) -> str:
        """*text* with the secret key and session token replaced by ``***``."""
        for secret in self._secrets():
            if len(secret) >= 4:  # a 1-3 character "secret" would shred the message instead
                text = text.replace(secret, "***")
        return text

    def explain(self, exc: Exception, what: str, uri: str, bucket: str) -> Irv2Error:
        """A user-facing error for a boto3 failure while doing *what* on *uri*; names the cause."""
        where = f"{uri} (endpoint {redact_url(self.endpoint) or 'AWS default'})"
        if isinstance(exc, NoCredentialsError | PartialCredentialsError):
            msg = (
                f"no usable S3 credentials for {where}: set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or run where an instance role is available"
            )
        elif isinstance(exc, EndpointConnectionError):
            msg = f"cannot reach the S3 endpoint for {where}: check --endpoint-url and the network"
        elif isinstance(exc, ClientError):
            err = exc.response.get("Error", {})
            code = str(err.get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in _CRED_HINTS:
                msg = (
                    f"S3 rejected the credentials while {what} {where}: {_CRED_HINTS[code]} "
                    f"({code}); check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or the profile"
                )
            elif code == "NoSuchBucket" or (status == 404 and what == "listing"):
                msg = f"bucket {bucket!r} does not exist at {where}; check the bucket name"
            elif code in ("AccessDenied", "AllAccessDisabled", "403") or status == 403:
                msg = (
                    f"access denied while {what} {where}: the credentials were accepted but lack "
                    "permission (s3:ListBucket on the bucket, s3:GetObject/PutObject on the keys)"
                )
            elif code in ("PermanentRedirect", "AuthorizationHeaderMalformed", "301"):
                msg = f"bucket {bucket!r} is in another region: set AWS_DEFAULT_REGION"
            else:
                msg = f"S3 error while {what} {where}: {code or status} {err.get('Message', '')}"
        else:
            msg = f"failed while {what} {where}: {type(exc).__name__}: {exc}"
        # the cause is not chained (its text is not scrubbed): the type says whether to retry
        kind = TransientError if is_transient(exc) else Irv2Error
        return kind(self.scrub(msg))
