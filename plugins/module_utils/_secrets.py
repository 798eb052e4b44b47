# -*- coding: utf-8 -*-
# Copyright (c) 2026, vpsops.deploy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""What counts as a secret in a stack, and how it is hidden, in one place (ground floor: standard
library only). Private to this collection.

A secret hides in four shapes: a value under a secret key (a check's `login_password`, `password`,
`headers`), an env variable whose name looks secret, the credentials or a secret-named query
parameter of a URL (`https://user:pw@host/?token=x`), and a command line's argument after a secret
flag (`redis-cli -a pw`, `--password=pw`, `curl -u user:pw`, `-H 'Authorization: Bearer x'`) or an
argument `NAME=value` whose name looks secret. The functions below find the values (for masking
everywhere a result goes) and redact the text that names a check or a URL."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

from urllib.parse import parse_qsl, urlsplit, urlunsplit

# A variable, query parameter or flag whose name matches holds a secret.
SECRET_NAME_RE = re.compile(r"(?i)(pass|pwd|secret|token|key|credential|auth|cookie|session|dsn|hook|private)")
SECRET_PARAMS = ("sig", "signature", "apikey", "code")
# Keys of a health check whose values are secrets: a manifest never holds them in clear.
SECRET_CHECK_KEYS = ("login_password", "password", "headers")
# Flags whose next argument is a secret (redis-cli -a, mysql-style -p is not: psql -p is a port).
SECRET_FLAGS = ("-a", "--pass", "--password", "--passwd", "--token", "--auth", "--secret", "--api-key",
                "--apikey", "--key", "--client-secret", "--access-token", "--user-password")
# Flags whose next argument holds a secret after a separator: curl -u user:pw, -H 'Authorization: x'.
USER_FLAGS = ("-u", "--user")
HEADER_FLAGS = ("-H", "--header")
MASK = "***"
MIN_LENGTH = 3  # shorter values are not masked (they would mask every "on" or "1" of a text)


# A name ending in one of these names what is not a secret (AUTH_PORT, AUTH_DB, PASSWORD_FILE,
# TOKEN_TTL). Not URL: a webhook URL holds its token in its path.
PLAIN_SUFFIXES = ("port", "host", "hostname", "user", "username", "name", "tag", "image", "version", "path",
                  "dir", "file", "enabled", "timeout", "ttl", "mode", "type", "level", "count", "size", "db",
                  "database", "schema", "replicas", "workers", "id", "region", "topic", "queue")


def is_secret_name(name):
    name = str(name)
    last = re.split(r"[_.-]", name.lower())[-1]
    if last in PLAIN_SUFFIXES and last != name.lower():
        return False
    return bool(SECRET_NAME_RE.search(name)) or name.lower() in SECRET_PARAMS


def _usable(value):
    return isinstance(value, str) and len(value) >= MIN_LENGTH


def url_secrets(url):
    """The secret values of a URL: its password (or a lone user, a token in `https://tok@host`) and
    the values of its secret-named query parameters."""
    found = set()
    if not isinstance(url, str) or "://" not in url:
        return found
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return found
    netloc = parts.netloc
    if "@" in netloc:
        userinfo = netloc.rsplit("@", 1)[0]
        user, colon, password = userinfo.partition(":")
        for value in ((password,) if colon else (user,)):
            if _usable(value):
                found.add(value)
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if is_secret_name(name) and _usable(value):
            found.add(value)
    return found


def redact_url(url):
    """A URL as it may be shown: no user:password@, and the values of secret query parameters masked."""
    try:
        parts = urlsplit(url)
    except (ValueError, TypeError, AttributeError):
        return "<malformed url>"
    netloc = parts.netloc
    if parts.username is not None or parts.password is not None:
        host = parts.hostname or ""
        if parts.port:
            host = "%s:%d" % (host, parts.port)
        netloc = MASK + "@" + host
    query = parts.query
    if query:
        pairs = []
        for pair in query.split("&"):
            name, eq, value = pair.partition("=")
            pairs.append("%s=%s" % (name, MASK) if eq and value and is_secret_name(name) else pair)
        query = "&".join(pairs)
    if netloc == parts.netloc and query == parts.query:
        return url
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def argv_secrets(argv):
    """The secret values of a command line (a list of arguments; a string is split on blanks, and so
    is each argument: `sh -c "redis-cli -a pw ping"` hides its password in one argument)."""
    args = [argv] if isinstance(argv, str) else [str(a) for a in argv or []]
    found = set()
    _scan(args, found)
    _scan([w for a in args for w in a.split()], found)
    return found


def _scan(words, found):
    for index, word in enumerate(words):
        following = words[index + 1] if index + 1 < len(words) else None
        flag, eq, inline = word.partition("=")
        inline = inline.split()[0] if inline.split() else ""  # NAME=value in a longer argument
        value = inline if eq else following
        if word.startswith("-"):
            if flag in SECRET_FLAGS or (flag.startswith("--") and is_secret_name(flag)):
                if _usable(value):
                    found.add(value)
            elif flag in USER_FLAGS:
                if value and ":" in value and _usable(value.partition(":")[2]):
                    found.add(value.partition(":")[2])
            elif flag in HEADER_FLAGS and value and ":" in value and is_secret_name(value.partition(":")[0]):
                _add_header_value(value.partition(":")[2], found)
        elif eq and re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", flag) and is_secret_name(flag) and _usable(inline):
            found.add(inline)
        elif word.endswith(":") and is_secret_name(word[:-1]) and following:
            # A header split into words: "Authorization:" "Bearer" "x".
            _add_header_value(" ".join(words[index + 1:index + 3]), found)
        elif ":" in word and not word.startswith(("http:", "https:")) and is_secret_name(word.partition(":")[0]):
            _add_header_value(word.partition(":")[2], found)
        found.update(url_secrets(word))


def _add_header_value(value, found):
    value = value.strip()
    words = value.split()
    if words and words[0].lower() in ("bearer", "basic", "token"):
        words = words[1:]
    for word in words[:1]:
        if _usable(word):
            found.add(word)
    if len(words) > 1 and _usable(" ".join(words)):
        found.add(" ".join(words))


def secret_parts(text):
    """A secret and, when it spans lines (a PEM key), each of its lines of 8 characters or more: a
    message may quote one line."""
    found = set([text.strip()]) if len(text.strip()) >= MIN_LENGTH else set()
    if "\n" in text:
        found.update(line.strip() for line in text.splitlines() if len(line.strip()) >= 8)
    return found


def redact_text(text, secrets):
    """Text with every occurrence of a secret replaced by ***, the longest first."""
    if not isinstance(text, str):
        return text
    for secret in sorted((s for s in secrets if _usable(s)), key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


def redact_argv(argv):
    """A command line as it may be shown: its secret arguments masked."""
    words = [str(a) for a in argv] if isinstance(argv, (list, tuple)) else str(argv).split()
    secrets = argv_secrets(words)
    for word in words:
        secrets.update(url_secrets(word))
    return " ".join(redact_url(redact_text(word, secrets)) if "://" in word else redact_text(word, secrets)
                    for word in words)


def check_secrets(check):
    """Every secret value of one health check, smoke test or SLO endpoint."""
    found = set()
    if not isinstance(check, dict):
        return found
    for key in SECRET_CHECK_KEYS:
        value = check.get(key)
        for item in (value.values() if isinstance(value, dict) else [value]):
            if isinstance(item, (str, int, float)) and not isinstance(item, bool) and _usable(str(item)):
                found.add(str(item))
    found.update(url_secrets(check.get("url")))
    if isinstance(check.get("argv"), (list, str)):
        found.update(argv_secrets(check["argv"]))
    return found
