"""Secrets in text: find credentials in manifest data, and scrub them from messages and logs.

Two jobs, one list of patterns. The manifest loader refuses inline credentials
(``find_secrets``) and scrubs every message it prints (``scrub``); anything else
that echoes user text can scrub it the same way. Patterns cover what users paste
by mistake: cloud keys, age secret keys, PEM keys, Azure connection strings,
passwords in URLs and signed query parameters. Scrubbing also covers what HTTP
clients log at debug level: request headers in the dict, repr and wire forms
botocore, aiohttp, azure-core and google libraries use (``Authorization``,
``x-amz-security-token``, customer encryption keys, cookies), credential fields
of response bodies (STS, IMDS, KMS, OAuth), AWS signatures, bearer and SharedKey
values, SAS tokens; and the values of credential-named environment variables,
whatever form they turn up in. ``install_log_scrubber`` applies it to every log
record the process creates, whichever thread or library emits it.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import parse_qsl, quote

Path_ = tuple[str | int, ...]
REDACTED = "<redacted>"

# Option keys that carry credentials in fsspec backends (s3fs: key/secret/token,
# adlfs: account_key/sas_token/connection_string/client_secret, gcsfs: token, s3fs
# s3_additional_kwargs: SSECustomerKey, HTTP headers: Authorization, Cookie, ...).
# They belong in the environment or the provider chain, never in a manifest that
# gets committed. Names are compared after camelCase and '-' are folded to
# snake_case ("SSECustomerKey" -> "sse_customer_key").
_SECRET_KEY_RE = re.compile(
    r"(^|_)(key|secret|token|password|passwd|passphrase|pwd|pass|credential|credentials|"
    r"sas|signature|connection_string|private|bearer|cookie|apikey)(_|$)"
    # ...a name that ends in auth or authorization (auth, basic_auth, Authorization,
    # Proxy-Authorization), and credential words glued to others (clientsecret).
    r"|(^|_)(auth|authorization)$|secret|passw|credential|apikey|accesskey|privatekey"
)
# Names the rule above would catch that hold no secret.
_NOT_SECRET_KEYS = {"region_name", "key_prefix", "signature_version", "kms_key_id",
                    "ssekms_key_id", "sse_kms_key_id"}
# gcsfs `token` also selects an authentication mode by name; those words are not secrets.
_TOKEN_MODES = {"anon", "google_default", "cloud", "cache", "browser"}
_SECRET_VALUE_RES = [
    (re.compile(r"\b(AKIA|ASIA)[A-Z0-9]{16}\b"), "an AWS access key id"),
    (re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"), "a PEM private key"),
    (re.compile(r"AGE-SECRET-KEY-1[0-9A-Z]+"), "an age secret key"),
    (re.compile(r"PRIVATE\+KEY\+[^+\s]+\+[0-9a-f]{8}\+"), "an audit signing key"),
    (re.compile(r"AccountKey=|SharedAccessSignature=", re.IGNORECASE), "an Azure credential"),
    (re.compile(r"\bya29\.[0-9A-Za-z_-]{20,}"), "a Google OAuth access token"),
    (re.compile(r"\bAIza[0-9A-Za-z_-]{35}"), "a Google API key"),
]
# An HTTP Authorization value, judged only under options (a tag may say "Basic tier").
_AUTH_VALUE_RE = re.compile(
    r"^\s*(Bearer|Basic|Digest|SharedKey|SharedKeyLite|AWS4-HMAC-SHA256)\s+\S", re.IGNORECASE)
_SECRET_QUERY_PARAMS = {"sig", "signature", "x-amz-signature", "x-amz-credential",
                        "x-amz-security-token", "x-goog-signature", "x-goog-credential",
                        "token", "access_token", "sv", "password", "api_key", "apikey",
                        "client_secret", "refresh_token", "id_token"}
# scheme://user:password@host — judged on the raw text, so odd schemes cannot hide it.
_URL_PASSWORD_RE = re.compile(r"^[^:/?#]+://[^/?#@\s]*:[^/?#@\s]*@")

# Header names and body fields whose value is a credential, however they are logged.
_SECRET_FIELDS = (
    "authorization", "proxy-authorization", "x-amz-security-token",
    "x-amz-server-side-encryption-customer-key",
    "x-amz-copy-source-server-side-encryption-customer-key", "x-goog-encryption-key",
    "x-goog-copy-source-encryption-key", "x-ms-encryption-key",
    "x-ms-copy-source-authorization", "cookie", "set-cookie", "x-api-key", "x-goog-api-key",
    "x-auth-token", "x-vault-token", "x-amz-federation-token",
    # response bodies and client reprs: STS, IMDS/ECS, KMS Decrypt, OAuth, botocore
    "SecretAccessKey", "SessionToken", "Token", "Plaintext", "access_token", "refresh_token",
    "id_token", "client_secret", "private_key", "secret_key", "secret_access_key",
    "aws_secret_access_key", "session_token", "aws_session_token", "security_token",
    "sas_token", "account_key", "password", "passphrase", "SSECustomerKey",
    "CopySourceSSECustomerKey",
)
_FIELD_NAMES = {f.lower() for f in _SECRET_FIELDS}
_QUERY = "|".join(re.escape(k) for k in sorted(_SECRET_QUERY_PARAMS, key=len, reverse=True))
_R = REDACTED
# Last line of defence: whatever a message echoes, these never reach the user. Each
# pattern runs only when one of its words (lowercase) is in the text: at -vv a
# listing page is some 200 KB, and most patterns have nothing to find in it.
_SCRUB_RES = [
    (("akia", "asia"), re.compile(r"\b(AKIA|ASIA)[A-Z0-9]{16}\b"), _R),
    (("age-secret-key-1",), re.compile(r"AGE-SECRET-KEY-1[0-9A-Z]+", re.IGNORECASE), _R),
    (("private+key+",), re.compile(r"PRIVATE\+KEY\+[^+\s]+\+[0-9a-f]{8}\+\S+"), _R),
    (("private key-----",), re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*", re.DOTALL), _R),
    (("ya29.",), re.compile(r"ya29\.[0-9A-Za-z_-]{20,}"), _R),
    (("aiza",), re.compile(r"AIza[0-9A-Za-z_-]{35}"), _R),
    (("accountkey=", "sharedaccesssignature="),
     re.compile(r"((?:AccountKey|SharedAccessSignature)=)[^;\s'\"]+", re.IGNORECASE),
     rf"\1{_R}"),
    (("@",), re.compile(r"(://[^/?#@\s:]*:)[^/?#@\s]*@"), rf"\1{_R}@"),
    # <SessionToken>...</SessionToken> (STS and other XML bodies)
    (("</",), re.compile(r"<([A-Za-z][\w-]*)>([^<]*)"),
     lambda m: f"<{m[1]}>{_R}" if m[1].lower() in _FIELD_NAMES and m[2] else m[0]),
    # ?sig=...&X-Amz-Signature=..., a bare SAS token (sv=...&sig=...), and URL-encoded
    (("=",), re.compile(rf"((?:^|[?&;\s'\"(,])(?:{_QUERY})=)[^&\s'\"]+", re.IGNORECASE),
     rf"\1{_R}"),
    (("%3d",), re.compile(rf"((?:%3F|%26)(?:{_QUERY})%3D)(?:(?!%26)[^&\s'\"])+",
                          re.IGNORECASE), rf"\1{_R}"),
    # AWS SigV4 anywhere: Credential=AKID/scope, Signature=hex; botocore's "Signature:\n<hex>"
    (("credential=", "signature="),
     re.compile(r"((?:Credential|Signature)(?<![\w-]Credential)(?<![\w-]Signature)=)"
                r"[^,&\s'\"]+"), rf"\1{_R}"),
    (("signature:",), re.compile(r"(Signature:\s*)[0-9a-f]{64}\b"), rf"\1{_R}"),
    (("bearer",), re.compile(r"(\bBearer\s+)[A-Za-z0-9._~+/=-]+", re.IGNORECASE), rf"\1{_R}"),
    (("basic",), re.compile(r"(\bBasic\s+)(?=[A-Za-z0-9+/]*[0-9+/=])[A-Za-z0-9+/]{8,}={0,2}"),
     rf"\1{_R}"),
    (("sharedkey",), re.compile(r"(\bSharedKey(?:Lite)?\s+[^:\s'\"]+:)[A-Za-z0-9+/=]+"),
     rf"\1{_R}"),
]
_SEPARATOR = re.compile(r"[:=]")
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")
# Values of the environment's credential variables (AWS_SESSION_TOKEN, ...), longest
# first, as written and URL-encoded: set by install_log_scrubber / remember_secrets.
_known_values: list[str] = []
_MIN_KNOWN = 12  # shorter values ("testing") would redact ordinary words


def scrub(text: str) -> str:
    """``text`` with anything that looks like a credential replaced by <redacted>."""
    for value in _known_values:
        if value in text:
            text = text.replace(value, REDACTED)
    text = _scrub_fields(text)
    low = text.lower()
    for words, pattern, replacement in _SCRUB_RES:
        if any(word in low for word in words):
            text = pattern.sub(replacement, text)
    return text


def _scrub_fields(text: str) -> str:
    """The values of credential headers and fields, in the forms clients log them:
    ``'Authorization': b'...'``, ``"SessionToken": "..."``, ``token='...'``,
    ``Authorization: Bearer ...`` and ``x-amz-security-token:...`` lines (HTTP and
    SigV4 canonical requests), ``sas_token=...``.

    Found from each ``:`` or ``=`` by reading the name before it, rather than by a
    regular expression of every name tried at every position (100 times slower).
    """
    out: list[str] = []
    done = 0
    for match in _SEPARATOR.finditer(text):
        sep = match.start()
        if sep < done:
            continue
        # The name: letters, digits, '_' and '-' before the separator, maybe quoted.
        end = sep
        while end > 0 and text[end - 1] in " \t":
            end -= 1
        quote_char = text[end - 1] if end > 0 and text[end - 1] in "'\"" else ""
        end -= len(quote_char)
        start = end
        while start > 0 and text[start - 1] in _NAME_CHARS:
            start -= 1
        if start == end or text[start:end].lower() not in _FIELD_NAMES:
            continue
        before = text[start - 1 - len(quote_char)] if start - len(quote_char) > 0 else "\n"
        if quote_char and (start == 0 or text[start - 1] != quote_char):
            continue
        # The value: quoted (to its closing quote), else to the end of the line (after
        # ':') or of the word (after '='), only where a name starts a field.
        at = match.end()
        while at < len(text) and text[at] in " \t":
            at += 1
        if text.startswith(("b'", 'b"'), at):
            at += 1
        if at < len(text) and text[at] in "'\"":
            close = text.find(text[at], at + 1)
            value = (at + 1, close) if close != -1 and "\n" not in text[at:close] else None
        elif before in " \t\r\n{,;(&?":
            stop = "\r\n" if match[0] == ":" else " \t\r\n,;)'\"&"
            close = at
            while close < len(text) and text[close] not in stop:
                close += 1
            value = (at, close)
        else:
            value = None
        if value and value[1] > value[0]:
            out += [text[done:value[0]], REDACTED]
            done = value[1]
    return "".join(out) + text[done:] if out else text


def remember_secrets(environ: Mapping[str, str]) -> None:
    """Scrub the values of ``environ``'s credential variables wherever they appear.

    Names are judged like manifest option names (AWS_SESSION_TOKEN,
    AZURE_STORAGE_ACCOUNT_KEY, DATAMOVE_PASSPHRASE, ...); variables that name a
    file, a path or an address (GOOGLE_APPLICATION_CREDENTIALS,
    AWS_WEB_IDENTITY_TOKEN_FILE) hold no secret and are left alone.
    """
    found = set(_known_values)
    for name, value in environ.items():
        snake = name.lower()
        if len(value) < _MIN_KNOWN or snake in ("pwd", "oldpwd") or snake.endswith(
                ("_file", "_path", "_dir", "_uri", "_url", "_credentials", "_env")):
            continue  # PWD: the shell's working directory, not a password
        if value.startswith(("/", "~", ".")) and os.path.exists(os.path.expanduser(value)):
            continue  # a path, whatever the variable is called
        if _secret_key_name(name, value):
            found.update({value, quote(value, safe="")})
    _known_values[:] = sorted(found, key=len, reverse=True)


def scrub_record(record: logging.LogRecord) -> None:
    """Scrub a log record in place: its message, exception text and stack."""
    if getattr(record, "datamove_scrubbed", None) == (id(record.msg), id(record.args)):
        return
    try:
        message = record.getMessage()
    except Exception:  # a malformed record: the handler reports it
        return
    cleaned = scrub(message)
    if cleaned != message:
        record.msg, record.args = cleaned, None
    if record.exc_info and not record.exc_text:
        record.exc_text = logging.Formatter().formatException(record.exc_info)
    if record.exc_text:
        record.exc_text = scrub(record.exc_text)
    if record.stack_info:
        record.stack_info = scrub(record.stack_info)
    record.datamove_scrubbed = (id(record.msg), id(record.args))


def install_log_scrubber(environ: Mapping[str, str] | None = None) -> None:
    """Scrub every log record this process creates, from any thread or library.

    A record factory, not only a handler filter: libraries that bring their own
    handlers (distributed, tornado) or add them later still log records made by
    the factory. Idempotent.
    """
    remember_secrets(os.environ if environ is None else environ)
    current = logging.getLogRecordFactory()
    if getattr(current, "datamove_scrubs", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = current(*args, **kwargs)
        scrub_record(record)
        return record

    factory.datamove_scrubs = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


def _walk(value: Any, path: Path_) -> Iterator[tuple[Path_, Any]]:
    yield path, value
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _walk(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _walk(v, (*path, i))


def _secret_key_name(name: str, value: Any) -> bool:
    """Is ``name`` (an option key) one that carries a credential?"""
    if value is None or isinstance(value, bool):
        return False  # `token: null`, `anon: true`: nothing secret in it
    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name)
    snake = snake.replace("-", "_").lower()
    if snake in _NOT_SECRET_KEYS:
        return False
    if snake == "token" and isinstance(value, str) and value in _TOKEN_MODES:
        return False
    return bool(_SECRET_KEY_RE.search(snake))


def _secret_value_kind(text: str) -> str | None:
    for pattern, what in _SECRET_VALUE_RES:
        if pattern.search(text):
            return what
    return None


def find_secrets(data: dict[str, Any]) -> Iterator[tuple[Path_, str]]:
    """Inline credentials are refused wherever they appear; the value is never echoed."""
    advice = ("inline secrets are refused; supply credentials through the environment or "
              "the store's standard provider chain (docs/MANIFEST.md, \"Credentials\")")
    for path, value in _walk(data, ()):
        if isinstance(value, dict):
            for key in value:
                what = _secret_value_kind(key) if isinstance(key, str) else None
                if what:
                    yield (*path, key), f"the key contains {what}; {advice}"
        if not path:
            continue
        name = path[-1]
        in_options = any(isinstance(p, str) and (p == "options" or p.endswith("_options"))
                         for p in path)
        if in_options and isinstance(name, str) and _secret_key_name(name, value):
            yield path, f"looks like a credential ({name!r}); {advice}"
            continue
        if in_options and isinstance(value, str) and _AUTH_VALUE_RE.search(value):
            yield path, f"contains an HTTP Authorization value; {advice}"
            continue
        if isinstance(value, str):
            what = _secret_value_kind(value)
            if what:
                yield path, f"contains {what}; {advice}"
            elif "://" in value:  # url, ledger, scheduler, endpoint_url, ...
                yield from ((path, f"{m}; {advice}") for m in _url_secret_problems(value))


def _url_secret_problems(url: str) -> Iterator[str]:
    if _URL_PASSWORD_RE.search(url):
        yield "the URL embeds a password"
    query = url.split("?", 1)[1].split("#", 1)[0] if "?" in url else ""
    for key, _ in parse_qsl(query, keep_blank_values=True):
        if key.lower() in _SECRET_QUERY_PARAMS:
            yield f"the URL carries a signed or secret query parameter ({key!r})"

