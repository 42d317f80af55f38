"""The data root rule: paths from run parameters resolve under E2I_DATA_ROOT (a client's folder)."""

from __future__ import annotations

from pathlib import Path

import pytest

from e2i_pipelines.core.data_root import (
    DataPathError,
    DataScope,
    allowed_dir,
    data_root,
    resolve_user_path,
)
from e2i_pipelines.core.spec import DataValidationError, load_spec_yaml

CANARY = "CANARY-5f3a9e-secret-line"
SPEC = "treatment: t\noutcome: y\ncommon_causes: [w]\n"


@pytest.fixture()
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A data root with client folders acme/ and beta/ and a secret file outside it."""
    root = tmp_path / "root"
    for client in ("acme", "beta"):
        (root / client).mkdir(parents=True)
        (root / client / "spec.yaml").write_text(SPEC)
    (tmp_path / "secret.yaml").write_text(f"{CANARY}: 1\n")
    monkeypatch.setenv("E2I_DATA_ROOT", str(root))
    return root


def test_default_root_is_under_the_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("E2I_DATA_ROOT", raising=False)
    monkeypatch.setenv("E2I_DATA_DIR", str(tmp_path))
    assert data_root() == (tmp_path / "inputs").resolve()


def test_relative_paths_resolve_in_the_client_folder(root: Path) -> None:
    assert resolve_user_path("spec.yaml", "k", "acme") == (root / "acme" / "spec.yaml").resolve()
    assert resolve_user_path("./sub/../spec.yaml", "k", "acme") == (root / "acme" / "spec.yaml").resolve()
    assert resolve_user_path(str(root / "acme" / "spec.yaml"), "k", "acme").name == "spec.yaml"
    assert resolve_user_path("acme/spec.yaml", "k") == (root / "acme" / "spec.yaml").resolve()


@pytest.mark.parametrize("value", [
    "../beta/spec.yaml", "../../secret.yaml", "/etc/passwd", "..", "sub/../../beta/spec.yaml",
])
def test_paths_out_of_the_client_folder_are_refused(root: Path, value: str) -> None:
    with pytest.raises(DataPathError) as info:
        resolve_user_path(value, "dataset.path", "acme")
    message = str(info.value)
    assert message.startswith("dataset.path must name a file under your data folder (acme/")
    assert f"{value!r} resolves outside it" in message
    assert str(root) not in message and CANARY not in message


def test_root_scope_refuses_what_lies_outside_the_root(root: Path) -> None:
    with pytest.raises(DataPathError, match="under the data root; '../secret.yaml' resolves outside"):
        resolve_user_path("../secret.yaml", "dataset.spec_path")
    with pytest.raises(DataPathError, match="resolves outside"):
        resolve_user_path("/etc/passwd", "dataset.spec_path")


def test_symlinks_are_followed(root: Path, tmp_path: Path) -> None:
    (root / "acme" / "link.yaml").symlink_to(tmp_path / "secret.yaml")
    (root / "acme" / "dir").symlink_to(root / "beta")
    (root / "acme" / "inside.yaml").symlink_to(root / "acme" / "spec.yaml")
    with pytest.raises(DataPathError, match="'link.yaml' resolves outside"):
        resolve_user_path("link.yaml", "dataset.path", "acme")
    with pytest.raises(DataPathError, match="resolves outside"):
        resolve_user_path("dir/spec.yaml", "dataset.path", "acme")
    assert resolve_user_path("inside.yaml", "k", "acme") == (root / "acme" / "spec.yaml").resolve()
    (root / "loop").symlink_to(root / "loop")
    with pytest.raises(DataPathError, match="k is not a usable file path"):
        resolve_user_path("loop", "k")
    with pytest.raises(DataPathError, match="resolves outside"):  # not: "beta has a loop"
        resolve_user_path("../loop", "k", "acme")


def test_the_answer_is_the_same_whether_an_outside_file_exists(root: Path) -> None:
    """An error never tells whether a file outside the folder exists."""
    messages = []
    for name in ("spec.yaml", "nope.yaml"):
        with pytest.raises(DataPathError) as info:
            resolve_user_path(f"../beta/{name}", "dataset.path", "acme")
        messages.append(str(info.value).replace(name, "X"))
    assert messages[0] == messages[1]


@pytest.mark.parametrize("value", ["", "   ", "a\x00b"])
def test_empty_or_nul_paths_are_refused(root: Path, value: str) -> None:
    with pytest.raises(DataPathError, match="dataset.path must be a file path"):
        resolve_user_path(value, "dataset.path")


@pytest.mark.parametrize("value", ["x" * 5000, "a/" + "b" * 300 + "/c", "\ud800.yaml"])
def test_unusable_names_are_clear_errors(root: Path, value: str) -> None:
    """Names too long for the file system or not encodable: a 422 naming the key, never a 500."""
    with pytest.raises(DataValidationError, match=r"^dataset.spec_path"):
        load_spec_yaml(value, key="dataset.spec_path", folder="acme")


@pytest.mark.parametrize("client", ["..", ".", "a/b", "/etc", "", " x", "a\\b"])
def test_unsafe_client_names_are_not_folders(root: Path, client: str) -> None:
    with pytest.raises(DataPathError, match="cannot be used as a data folder name"):
        _ = DataScope(client).folder
    if client:  # "" as a folder means the whole root (admin, UI)
        with pytest.raises(DataPathError):
            resolve_user_path("spec.yaml", "k", client)


def test_scopes(root: Path) -> None:
    assert DataScope("acme").folder == "acme"
    assert DataScope("acme", admin=True).folder == ""
    assert DataScope(None).folder == ""
    assert allowed_dir("acme") == (root / "acme").resolve()


def test_a_client_folder_symlinked_out_of_the_root_is_refused(root: Path, tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    (root / "gamma").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(DataPathError, match="outside the data root"):
        allowed_dir("gamma")


def test_spec_errors_name_the_key_never_the_lines(root: Path) -> None:
    (root / "acme" / "bad.yaml").write_text(f"treatment: t\n  {CANARY}: [\n")
    (root / "acme" / "list.yaml").write_text(f"- {CANARY}\n")
    (root / "acme" / "bin.yaml").write_bytes(b"\xff\xfe" + CANARY.encode())
    cases = {
        "bad.yaml": r"dataset.spec_path: spec file 'bad.yaml' is not valid YAML \(line 2, column \d+\)$",
        "list.yaml": r"spec file 'list.yaml' is not a YAML mapping of spec keys$",
        "bin.yaml": r"spec file 'bin.yaml' is not UTF-8 text$",
        "nope.yaml": r"spec file 'nope.yaml' does not exist$",
        "../../secret.yaml": r"resolves outside it$",
    }
    for name, pattern in cases.items():
        with pytest.raises(DataValidationError, match=pattern) as info:
            load_spec_yaml(name, key="dataset.spec_path", folder="acme")
        assert CANARY not in str(info.value) and str(root) not in str(info.value)
    assert load_spec_yaml("spec.yaml", folder="acme").treatment == "t"


def test_a_spec_files_graph_path_is_confined_and_not_quoted(root: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.yaml"
    (root / "acme" / "g.yaml").write_text(f"treatment: t\noutcome: y\ngraph: {secret}\n")
    (root / "acme" / "g2.yaml").write_text("treatment: t\noutcome: y\ngraph: ../beta/dag.dot\n")
    (root / "acme" / "g3.yaml").write_text("treatment: t\noutcome: y\ngraph: nope.dot\n")
    for name, expected in [("g.yaml", "resolves outside it"), ("g2.yaml", "resolves outside it"),
                           ("g3.yaml", "the graph file does not exist")]:
        with pytest.raises(DataValidationError, match=expected) as info:
            load_spec_yaml(name, key="dataset.spec_path", folder="acme")
        message = str(info.value)
        assert message.startswith("dataset.spec_path (its 'graph')")
        assert str(tmp_path) not in message and "beta" not in message and "nope" not in message


def test_spec_files_over_the_cap_are_not_read(root: Path) -> None:
    (root / "acme" / "big.yaml").write_text("# " + "x" * (1 << 20) + "\n" + SPEC)
    with pytest.raises(DataValidationError, match="is larger than 1024 KiB"):
        load_spec_yaml("big.yaml", folder="acme")
