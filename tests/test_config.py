"""Settings from the environment: an empty variable means the default, and former names still work."""

from __future__ import annotations

from pathlib import Path

import pytest

from photodrop.config import Settings
from tests.live import photodrop_cli

BOOLEANS = sorted(name for name, field in Settings.model_fields.items() if field.annotation in (bool, "bool"))


def test_there_are_boolean_settings_to_check() -> None:
    assert {"run_worker", "allow_private_targets", "graphql_introspection"} <= set(BOOLEANS)


@pytest.mark.parametrize("name", BOOLEANS)
def test_an_empty_boolean_setting_means_its_default(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(f"PHOTODROP_{name.upper()}", "")
    assert getattr(Settings(_env_file=None), name) == Settings.model_fields[name].default


def test_an_empty_former_name_stops_nothing(tmp_path: Path) -> None:
    """``PHOTODROP_WEBHOOK_ALLOW_PRIVATE=`` used to stop every command with a parse error."""
    done = photodrop_cli(tmp_path / "data", "keys", "create", PHOTODROP_WEBHOOK_ALLOW_PRIVATE="")
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    ("env", "allowed"),
    [
        ({}, False),
        ({"PHOTODROP_WEBHOOK_ALLOW_PRIVATE": "true"}, True),
        ({"PHOTODROP_ALLOW_PRIVATE_TARGETS": "1"}, True),
        ({"PHOTODROP_ALLOW_PRIVATE_TARGETS": "false", "PHOTODROP_WEBHOOK_ALLOW_PRIVATE": "true"}, False),
    ],
)
def test_one_setting_allows_private_targets_and_the_former_name_still_works(
    env: dict[str, str], allowed: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert Settings(_env_file=None).allow_private_targets is allowed


def test_allowed_networks_are_a_comma_separated_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PHOTODROP_ALLOWED_TARGET_NETWORKS", "192.168.10.0/24, fd00::/8")
    assert [str(n) for n in Settings(_env_file=None).allowed_target_networks] == ["192.168.10.0/24", "fd00::/8"]
