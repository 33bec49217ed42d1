"""Principals, roles, data scopes and token hashing.

``SALESML_HOME/access.yaml`` lists principals: a name, a role, a data scope and the scrypt hash of their token
(never the token itself). Tokens are shown once, when created. This module imports none of the stages.
"""

from __future__ import annotations

import getpass
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

import yaml

ROLES = ("sales_rep", "sales_manager", "executive", "application", "data_scientist", "model_validator")
# Ids come from the organisation's own exports, where a rep is often known by name ("rep:Moses Frase"): any text
# without a colon or line break, not starting or ending with a space.
SCOPE_PATTERN = re.compile(r"^(all|(rep|team):[^\s:](?:[^:\n\r]*[^\s:])?)$")
_SCRYPT = {"n": 2**14, "r": 8, "p": 1, "dklen": 32}


class AccessError(PermissionError):
    """A missing, unknown or insufficient identity."""


@dataclass(frozen=True)
class Principal:
    """Someone (or some application) salesml knows.

    Attributes:
        name: unique name.
        role: one of ``ROLES``.
        scope: ``all``, ``rep:<rep_id>`` or ``team:<team_id>``.
        token_hash: ``scrypt$<salt hex>$<hash hex>``.
    """

    name: str
    role: str
    scope: str
    token_hash: str


def hash_token(token: str, salt: bytes | None = None) -> str:
    """The scrypt hash of a token, with a random salt."""
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(token.encode(), salt=salt, maxmem=64 * 1024 * 1024, **_SCRYPT)
    return f"scrypt${salt.hex()}${digest.hex()}"


def verify_token(token: str, token_hash: str) -> bool:
    """Whether ``token`` matches ``token_hash`` (constant-time comparison)."""
    try:
        kind, salt_hex, digest_hex = token_hash.split("$")
    except ValueError:
        return False
    if kind != "scrypt":
        return False
    expected = hash_token(token, bytes.fromhex(salt_hex)).split("$")[2]
    return hmac.compare_digest(expected, digest_hex)


def load_principals(path: Path) -> list[Principal]:
    """The principals in an access file (none when it does not exist)."""
    if not Path(path).is_file():
        return []
    data = yaml.safe_load(Path(path).read_text()) or {}
    return [Principal(**p) for p in data.get("principals", [])]


def save_principals(path: Path, principals: list[Principal]) -> None:
    """Write the access file (owner-readable only)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump({"principals": [p.__dict__ for p in principals]}, sort_keys=False))
    tmp.chmod(0o600)
    tmp.replace(path)


def issue_token(path: Path, name: str, role: str, scope: str = "all", replace: bool = False) -> str:
    """Add a principal to an access file and return its new token (only the hash is stored).

    Args:
        path: the access file.
        name: unique principal name.
        role: one of ``ROLES``.
        scope: ``all``, ``rep:<rep_id>`` or ``team:<team_id>``.
        replace: replace a principal of that name (its old token stops working) instead of refusing.

    Raises:
        ValueError: for an unknown role, a malformed scope, or a name in use (without ``replace``).
    """
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    if not SCOPE_PATTERN.match(scope):
        raise ValueError(f"scope must be all, rep:ID or team:ID, not {scope!r}")
    principals = load_principals(path)
    if not replace and any(p.name == name for p in principals):
        raise ValueError(f"a principal named {name!r} exists; revoke it first")
    token = secrets.token_urlsafe(32)
    kept = [p for p in principals if p.name != name]
    save_principals(path, [*kept, Principal(name, role, scope, hash_token(token))])
    return token


def authenticate(path: Path, token: str | None) -> Principal:
    """The principal a token belongs to.

    Raises:
        AccessError: when the token is missing or matches no principal.
    """
    if not token:
        raise AccessError("no token: set SALESML_TOKEN (or send a bearer token)")
    for principal in load_principals(path):
        if verify_token(token, principal.token_hash):
            return principal
    raise AccessError("invalid token")


def local_identity() -> str:
    """The identity of a local user without a token: ``local:<os user>``."""
    try:
        return f"local:{getpass.getuser()}"
    except (KeyError, OSError):
        return "local:unknown"
