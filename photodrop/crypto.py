"""Credentials at rest: destination configurations are sealed with a key derived from SECRET_KEY."""

from __future__ import annotations

import base64
import json
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from photodrop.config import Settings


def _fernet(settings: Settings) -> Fernet:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"photodrop destination credentials").derive(
        settings.resolved_secret_key.encode()
    )
    return Fernet(base64.urlsafe_b64encode(key))


def seal(settings: Settings, document: dict[str, Any]) -> str:
    return _fernet(settings).encrypt(json.dumps(document).encode()).decode()


def unseal(settings: Settings, token: str) -> dict[str, Any]:
    """The sealed document; ValueError when it was sealed under another SECRET_KEY or tampered with."""
    try:
        document: dict[str, Any] = json.loads(_fernet(settings).decrypt(token.encode()))
    except InvalidToken as exc:
        raise ValueError("stored credentials cannot be opened: was PHOTODROP_SECRET_KEY changed?") from exc
    return document
