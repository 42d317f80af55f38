"""docker/build_base_image.sh takes its Debian mirror from the host's apt sources (sample files)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "docker" / "build_base_image.sh"

DEB822 = """\
Types: deb
URIs: http://disabled.example.org/debian
Suites: bookworm
Components: main
Enabled: no

Types: deb-src
URIs: http://sources-only.example.org/debian
Suites: bookworm
Components: main

Types: deb
# a comment inside the stanza
URIs: http://security.example.org/debian-security
Suites: bookworm-security
Components: main

Types: deb deb-src
URIs:
 https://mirror.example.org/debian/
 http://second.example.org/debian
Suites: bookworm bookworm-updates
Components: main contrib
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""

ONE_LINE = """\
# deb http://commented.example.org/debian bookworm main
deb-src http://src.example.org/debian bookworm main
deb [arch=amd64 signed-by=/usr/share/keyrings/x.gpg] http://third-party.example.org/apt stable main
deb [ arch=amd64 ] http://list.example.org/debian bookworm main
"""


def mirror(apt_dir: Path, **env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k != "E2I_DEBIAN_MIRROR"}
    return subprocess.run(["bash", str(SCRIPT), "--print-mirror"], capture_output=True, text=True,
                          env={**environment, "E2I_APT_DIR": str(apt_dir), **env}, timeout=30)


def write(apt_dir: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = apt_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return apt_dir


@pytest.mark.parametrize("files,expected", [
    ({"sources.list.d/debian.sources": DEB822}, "https://mirror.example.org/debian"),
    ({"sources.list": ONE_LINE}, "http://list.example.org/debian"),
    ({"sources.list.d/a.list": ONE_LINE, "sources.list.d/debian.sources": DEB822}, "http://list.example.org/debian"),
    ({"sources.list": "# only comments\n", "sources.list.d/debian.sources": DEB822},
     "https://mirror.example.org/debian"),
    ({"sources.list.d/x.list.disabled": "deb http://ignored.example.org/debian bookworm main\n",
      "sources.list.d/debian.sources": DEB822}, "https://mirror.example.org/debian"),
], ids=["deb822", "one-line", "list-before-sources", "empty-sources-list", "ignores-other-extensions"])
def test_mirror_from_apt_sources(tmp_path: Path, files: dict[str, str], expected: str) -> None:
    result = mirror(write(tmp_path, files))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == expected


def test_override_variable_wins(tmp_path: Path) -> None:
    result = mirror(write(tmp_path, {"sources.list": ONE_LINE}), E2I_DEBIAN_MIRROR="http://override.example.org/d")
    assert result.stdout.strip() == "http://override.example.org/d"


def test_no_bookworm_source_is_a_clear_error(tmp_path: Path) -> None:
    result = mirror(write(tmp_path, {"sources.list": "deb http://old.example.org/debian bullseye main\n"}))
    assert result.returncode == 1 and result.stdout == ""
    assert "no Debian bookworm mirror" in result.stderr and "E2I_DEBIAN_MIRROR" in result.stderr


def test_the_script_names_no_mirror_host() -> None:
    text = SCRIPT.read_text()
    assert "debian.org" not in text and "http://" not in text
