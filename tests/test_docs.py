"""The documents that promise things about the code keep their promises."""

from __future__ import annotations

import re
from pathlib import Path

from photodrop.config import Settings

ROOT = Path(__file__).parent.parent


def test_the_deployment_guide_lists_every_setting() -> None:
    guide = (ROOT / "docs" / "deploy.md").read_text()
    documented = set(re.findall(r"^\| `PHOTODROP_(\w+)`", guide, flags=re.MULTILINE))
    assert documented == {name.upper() for name in Settings.model_fields}


def test_every_local_link_in_the_readme_and_docs_leads_somewhere() -> None:
    for document in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", document.read_text()):
            if "://" not in target:
                assert (document.parent / target).exists(), f"{document.name} links to missing {target}"
