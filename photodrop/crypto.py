"""Secrets at rest: credentials and signing secrets are sealed with a key derived from SECRET_KEY."""

from __future__ import annotations

import base64
import functools
import json
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from photodrop.config import Settings

_CHANGED_KEY = "stored secrets cannot be opened: was PHOTODROP_SECRET_KEY changed?"


@functools.lru_cache(maxsize=4)
def _fernet_for(secret_key: str) -> Fernet:
    # Derived once per SECRET_KEY: webhook signing unseals on every delivery.
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"photodrop destination credentials").derive(
        secret_key.encode()
    )
    return Fernet(base64.urlsafe_b64encode(key))


def _fernet(settings: Settings) -> Fernet:
    return _fernet_for(settings.resolved_secret_key)


def seal(settings: Settings, document: dict[str, Any]) -> str:
    return seal_text(settings, json.dumps(document))


def unseal(settings: Settings, token: str) -> dict[str, Any]:
    """The sealed document; ValueError when it was sealed under another SECRET_KEY or tampered with."""
    document: dict[str, Any] = json.loads(unseal_text(settings, token))
    return document


def seal_text(settings: Settings, text: str) -> str:
    return _fernet(settings).encrypt(text.encode()).decode()


def unseal_text(settings: Settings, token: str) -> str:
    """The sealed text; ValueError when it was sealed under another SECRET_KEY or tampered with."""
    try:
        return _fernet(settings).decrypt(token.encode()).decode()
    except InvalidToken as exc:
        raise ValueError(_CHANGED_KEY) from exc
