"""The file plugin on a real file system: each action, atomicity, and confinement to roots."""

from __future__ import annotations

import base64
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from platybus.plugins.file import (
    FileActionError,
    FileExists,
    FilePlugin,
    NoSuchFile,
    PathOutsideRoots,
)

from platybus.actions import ActionRegistry
from platybus.bus import Bus
from platybus.codec import Codec
from platybus.errors import ArgumentError
from platybus.extensions import NodeContext

Call = Callable[..., Any]


@pytest.fixture
def make_files(tmp_path: Path) -> Iterator[Callable[..., Call]]:
    """Build a started file plugin with the given roots; return a caller of its actions."""
    plugins: list[FilePlugin] = []

    def build(*roots: Path) -> Call:
        ctx = NodeContext(node_id="test", bus=Bus("test"), codec=Codec(),
                          actions=ActionRegistry(), data_dir=tmp_path / "data")
        plugin = FilePlugin("file", FilePlugin.Config(roots=[str(r) for r in roots]), ctx)
        plugin.start()
        plugins.append(plugin)
        ctx.actions.add_plugin(plugin)

        def call(verb: str, **args: Any) -> Any:
            return ctx.actions.call(f"file.{verb}", args)

        return call

    yield build
    for plugin in plugins:
        plugin.stop()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """The first allowed root."""
    path = tmp_path / "root"
    path.mkdir()
    return path


@pytest.fixture
def other(tmp_path: Path) -> Path:
    """A second allowed root."""
    path = tmp_path / "other"
    path.mkdir()
    return path


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory that is not a root, holding a secret."""
    path = tmp_path / "outside"
    path.mkdir()
    (path / "secret.txt").write_text("secret")
    return path


@pytest.fixture
def call(make_files: Callable[..., Call], root: Path, other: Path) -> Call:
    """File actions confined to ``root`` and ``other``."""
    return make_files(root, other)


# -- read / write / append -----------------------------------------------------------


def test_write_then_read_text(call: Call, root: Path) -> None:
    written = call("write", path="notes/a.txt", content="héllo\n", make_dirs=True)
    assert written == {"path": str(root / "notes" / "a.txt"), "size": 7}
    assert (root / "notes" / "a.txt").read_text("utf-8") == "héllo\n"
    result = call("read", path="notes/a.txt")
    assert result == {"path": str(root / "notes" / "a.txt"), "content": "héllo\n",
                      "size": 7, "binary": False}


def test_read_and_write_other_encodings(call: Call, root: Path) -> None:
    call("write", path="latin.txt", content="café", encoding="latin-1")
    assert (root / "latin.txt").read_bytes() == b"caf\xe9"
    assert call("read", path="latin.txt", encoding="latin-1")["content"] == "café"
    with pytest.raises(FileActionError, match=r"not valid utf-8 text.*binary: true"):
        call("read", path="latin.txt")
    with pytest.raises(ArgumentError, match="unknown encoding 'klingon'"):
        call("read", path="latin.txt", encoding="klingon")
    with pytest.raises(ArgumentError, match="cannot be encoded as ascii"):
        call("write", path="x.txt", content="café", encoding="ascii")


def test_binary_read_and_write_use_base64(call: Call, root: Path) -> None:
    data = bytes(range(256))
    call("write", path="blob.bin", content=base64.b64encode(data).decode(), binary=True)
    assert (root / "blob.bin").read_bytes() == data
    result = call("read", path="blob.bin", binary=True)
    assert base64.b64decode(result["content"]) == data
    assert result["size"] == 256
    with pytest.raises(ArgumentError, match="not valid base64"):
        call("write", path="blob.bin", content="not base64!", binary=True)


def test_read_missing_file_is_clear(call: Call) -> None:
    with pytest.raises(NoSuchFile, match=r"^file\.read: no such file: missing\.txt$"):
        call("read", path="missing.txt")


def test_write_needs_make_dirs_for_missing_directories(call: Call, root: Path) -> None:
    with pytest.raises(NoSuchFile, match="make_dirs: true"):
        call("write", path="a/b/c.txt", content="x")
    assert not (root / "a").exists()
    call("write", path="a/b/c.txt", content="x", make_dirs=True)
    assert (root / "a" / "b" / "c.txt").read_text() == "x"


def test_write_refuses_a_directory(call: Call, root: Path) -> None:
    (root / "dir").mkdir()
    with pytest.raises(FileActionError, match="is a directory"):
        call("write", path="dir", content="x")


def test_write_is_atomic_and_keeps_permissions(call: Call, root: Path) -> None:
    target = root / "config.txt"
    target.write_text("old")
    target.chmod(0o640)
    old_inode = target.stat().st_ino
    call("write", path="config.txt", content="new")
    assert target.read_text() == "new"
    # A rename replaced the file rather than rewriting it in place.
    assert target.stat().st_ino != old_inode
    assert target.stat().st_mode & 0o777 == 0o640
    assert [p.name for p in root.iterdir()] == ["config.txt"]


def test_concurrent_readers_never_see_a_partial_write(call: Call, root: Path) -> None:
    versions = ["a" * 200_000, "b" * 200_000]
    (root / "big.txt").write_text(versions[0])
    seen: set[str] = set()
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            seen.add((root / "big.txt").read_text())

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(30):
            call("write", path="big.txt", content=versions[i % 2])
    finally:
        stop.set()
        thread.join()
    assert seen <= set(versions)


def test_append_creates_and_extends(call: Call, root: Path) -> None:
    assert call("append", path="log.txt", content="one\n") == {
        "path": str(root / "log.txt"), "size": 4}
    assert call("append", path="log.txt", content="two\n")["size"] == 8
    assert (root / "log.txt").read_text() == "one\ntwo\n"


# -- list / stat ------------------------------------------------------------------------


def test_list_directory(call: Call, root: Path) -> None:
    (root / "b.txt").write_text("bb")
    (root / "a.log").write_text("a")
    (root / "sub").mkdir()
    (root / "sub" / "c.txt").write_text("ccc")
    entries = call("list")
    assert [e["name"] for e in entries] == ["a.log", "b.txt", "sub"]
    by_name = {e["name"]: e for e in entries}
    assert by_name["b.txt"]["size"] == 2
    assert by_name["b.txt"]["is_dir"] is False
    assert by_name["sub"]["is_dir"] is True
    assert by_name["b.txt"]["path"] == str(root / "b.txt")
    assert by_name["b.txt"]["mtime"] == pytest.approx((root / "b.txt").stat().st_mtime)


def test_list_pattern_and_recursive(call: Call, root: Path) -> None:
    (root / "b.txt").write_text("bb")
    (root / "a.log").write_text("a")
    (root / "sub" / "deep").mkdir(parents=True)
    (root / "sub" / "c.txt").write_text("ccc")
    (root / "sub" / "deep" / "d.txt").write_text("d")
    assert [e["name"] for e in call("list", pattern="*.txt")] == ["b.txt"]
    found = call("list", pattern="*.txt", recursive=True)
    assert [e["path"] for e in found] == [
        str(root / "b.txt"), str(root / "sub" / "c.txt"), str(root / "sub" / "deep" / "d.txt")]
    assert [e["name"] for e in call("list", path="sub")] == ["c.txt", "deep"]


def test_list_does_not_descend_into_links_leaving_the_roots(
    call: Call, root: Path, outside: Path
) -> None:
    (root / "escape").symlink_to(outside)
    entries = call("list", recursive=True)
    assert [e["name"] for e in entries] == ["escape"]
    # Nothing about the outside target is reported.
    assert entries[0]["is_link"] is True
    assert entries[0]["is_dir"] is False


def test_list_errors(call: Call, root: Path) -> None:
    (root / "f.txt").write_text("x")
    with pytest.raises(NoSuchFile, match="no such directory"):
        call("list", path="nope")
    with pytest.raises(FileActionError, match="not a directory"):
        call("list", path="f.txt")


def test_stat(call: Call, root: Path) -> None:
    (root / "f.txt").write_text("12345")
    (root / "f.txt").chmod(0o600)
    info = call("stat", path="f.txt")
    assert info["name"] == "f.txt"
    assert info["size"] == 5
    assert info["is_dir"] is False
    assert info["is_link"] is False
    assert info["mode"] == "600"
    assert call("stat", path=".")["is_dir"] is True
    with pytest.raises(NoSuchFile, match="no such file: nope"):
        call("stat", path="nope")


# -- copy / move / delete ---------------------------------------------------------------


def test_copy_file(call: Call, root: Path) -> None:
    (root / "a.txt").write_text("a")
    result = call("copy", source="a.txt", target="b.txt")
    assert result == {"source": str(root / "a.txt"), "target": str(root / "b.txt"),
                      "is_dir": False}
    assert (root / "b.txt").read_text() == "a"
    assert (root / "a.txt").read_text() == "a"


def test_copy_refuses_to_overwrite_unless_asked(call: Call, root: Path) -> None:
    (root / "a.txt").write_text("new")
    (root / "b.txt").write_text("old")
    with pytest.raises(FileExists, match="overwrite: true"):
        call("copy", source="a.txt", target="b.txt")
    assert (root / "b.txt").read_text() == "old"
    call("copy", source="a.txt", target="b.txt", overwrite=True)
    assert (root / "b.txt").read_text() == "new"
    assert sorted(p.name for p in root.iterdir()) == ["a.txt", "b.txt"]


def test_copy_directory_recursively_across_roots(call: Call, root: Path, other: Path) -> None:
    (root / "tree" / "sub").mkdir(parents=True)
    (root / "tree" / "x.txt").write_text("x")
    (root / "tree" / "sub" / "y.txt").write_text("y")
    call("copy", source="tree", target=str(other / "tree"))
    assert (other / "tree" / "x.txt").read_text() == "x"
    assert (other / "tree" / "sub" / "y.txt").read_text() == "y"
    # Overwriting a directory replaces it as a whole.
    (root / "tree" / "x.txt").unlink()
    (other / "tree" / "stale.txt").write_text("stale")
    call("copy", source="tree", target=str(other / "tree"), overwrite=True)
    assert sorted(p.name for p in (other / "tree").iterdir()) == ["sub"]
    assert sorted(p.name for p in other.iterdir()) == ["tree"]


def test_copy_refuses_impossible_targets(call: Call, root: Path) -> None:
    (root / "d").mkdir()
    (root / "f.txt").write_text("f")
    with pytest.raises(FileActionError, match="inside itself"):
        call("copy", source="d", target="d/inner")
    with pytest.raises(FileActionError, match="same path"):
        call("copy", source="f.txt", target="f.txt", overwrite=True)
    with pytest.raises(FileActionError, match="cannot replace a directory"):
        call("copy", source="f.txt", target="d", overwrite=True)
    with pytest.raises(NoSuchFile, match="no such file: nope"):
        call("copy", source="nope", target="x")


def test_move_file_and_directory(call: Call, root: Path, other: Path) -> None:
    (root / "a.txt").write_text("a")
    assert call("move", source="a.txt", target="b.txt")["target"] == str(root / "b.txt")
    assert not (root / "a.txt").exists()
    assert (root / "b.txt").read_text() == "a"
    (root / "d").mkdir()
    (root / "d" / "x").write_text("x")
    call("move", source="d", target=str(other / "d"))
    assert (other / "d" / "x").read_text() == "x"
    assert not (root / "d").exists()


def test_move_overwrite(call: Call, root: Path) -> None:
    (root / "a.txt").write_text("a")
    (root / "b.txt").write_text("b")
    with pytest.raises(FileExists):
        call("move", source="a.txt", target="b.txt")
    call("move", source="a.txt", target="b.txt", overwrite=True)
    assert (root / "b.txt").read_text() == "a"
    assert not (root / "a.txt").exists()


def test_move_a_symlink_moves_the_link(call: Call, root: Path) -> None:
    (root / "target.txt").write_text("t")
    (root / "link").symlink_to(root / "target.txt")
    call("move", source="link", target="renamed")
    assert (root / "renamed").is_symlink()
    assert (root / "target.txt").read_text() == "t"


def test_delete(call: Call, root: Path) -> None:
    (root / "f.txt").write_text("f")
    assert call("delete", path="f.txt") == {"path": str(root / "f.txt"), "is_dir": False}
    assert not (root / "f.txt").exists()
    (root / "empty").mkdir()
    call("delete", path="empty")
    assert not (root / "empty").exists()
    (root / "full" / "sub").mkdir(parents=True)
    (root / "full" / "sub" / "x").write_text("x")
    with pytest.raises(FileActionError, match=r"not empty.*recursive: true"):
        call("delete", path="full")
    assert (root / "full" / "sub" / "x").exists()
    call("delete", path="full", recursive=True)
    assert not (root / "full").exists()
    with pytest.raises(NoSuchFile, match=r"^file\.delete: no such file: f\.txt$"):
        call("delete", path="f.txt")


def test_delete_a_symlink_keeps_its_target(call: Call, root: Path) -> None:
    (root / "dir").mkdir()
    (root / "dir" / "keep").write_text("k")
    (root / "link").symlink_to(root / "dir")
    call("delete", path="link", recursive=True)
    assert not (root / "link").exists()
    assert (root / "dir" / "keep").read_text() == "k"


def test_roots_cannot_be_deleted_or_moved(call: Call, root: Path) -> None:
    with pytest.raises(FileActionError, match="root"):
        call("delete", path=".", recursive=True)
    with pytest.raises(FileActionError, match="root"):
        call("move", source=str(root), target="elsewhere")
    assert root.is_dir()


# -- confinement ------------------------------------------------------------------------

ESCAPES = [
    ("read", {"path": "../outside/secret.txt"}),
    ("read", {"path": "sub/../../outside/secret.txt"}),
    ("stat", {"path": ".."}),
    ("list", {"path": ".."}),
    ("write", {"path": "../outside/new.txt", "content": "x"}),
    ("append", {"path": "../outside/secret.txt", "content": "x"}),
    ("copy", {"source": "../outside/secret.txt", "target": "stolen.txt"}),
    ("copy", {"source": "mine.txt", "target": "../outside/leaked.txt"}),
    ("move", {"source": "mine.txt", "target": "../outside/leaked.txt"}),
    ("delete", {"path": "../outside/secret.txt"}),
]


@pytest.mark.parametrize(("verb", "args"), ESCAPES)
def test_dot_dot_escapes_are_refused(
    call: Call, root: Path, outside: Path, verb: str, args: dict[str, Any]
) -> None:
    (root / "mine.txt").write_text("mine")
    (root / "sub").mkdir()
    with pytest.raises(PathOutsideRoots, match="outside the allowed roots"):
        call(verb, **args)
    assert (outside / "secret.txt").read_text() == "secret"
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]
    assert (root / "mine.txt").read_text() == "mine"


@pytest.mark.parametrize("verb", ["read", "stat", "delete"])
def test_absolute_paths_outside_are_refused(call: Call, outside: Path, verb: str) -> None:
    with pytest.raises(PathOutsideRoots, match=f"^file.{verb}: .* is outside the allowed roots"):
        call(verb, path=str(outside / "secret.txt"))
    assert (outside / "secret.txt").exists()


def test_absolute_paths_inside_any_root_are_accepted(call: Call, other: Path) -> None:
    call("write", path=str(other / "x.txt"), content="x")
    assert call("read", path=str(other / "x.txt"))["content"] == "x"


@pytest.mark.parametrize(
    ("verb", "args"),
    [
        ("read", {"path": "link/secret.txt"}),
        ("read", {"path": "filelink"}),
        ("write", {"path": "link/new.txt", "content": "x"}),
        ("write", {"path": "filelink", "content": "x"}),
        ("append", {"path": "filelink", "content": "x"}),
        ("list", {"path": "link"}),
        ("stat", {"path": "filelink"}),
        ("delete", {"path": "link/secret.txt"}),
        ("copy", {"source": "link/secret.txt", "target": "stolen.txt"}),
        ("copy", {"source": "filelink", "target": "stolen.txt"}),
        ("move", {"source": "link/secret.txt", "target": "stolen.txt"}),
    ],
)
def test_symlinks_leading_outside_are_refused(
    call: Call, root: Path, outside: Path, verb: str, args: dict[str, Any]
) -> None:
    (root / "link").symlink_to(outside)
    (root / "filelink").symlink_to(outside / "secret.txt")
    with pytest.raises(PathOutsideRoots, match="outside the allowed roots"):
        call(verb, **args)
    assert (outside / "secret.txt").read_text() == "secret"
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]
    assert not (root / "stolen.txt").exists()


def test_symlink_out_and_back_in_is_refused(call: Call, root: Path, outside: Path) -> None:
    # The final path is inside, but getting there follows a link out of the roots.
    (root / "data").mkdir()
    (root / "data" / "x.txt").write_text("x")
    (outside / "back").symlink_to(root / "data")
    (root / "link").symlink_to(outside)
    with pytest.raises(PathOutsideRoots):
        call("read", path="link/back/x.txt")


def test_symlinks_within_the_roots_are_followed(call: Call, root: Path, other: Path) -> None:
    (other / "real.txt").write_text("real")
    (root / "alias.txt").symlink_to(other / "real.txt")
    assert call("read", path="alias.txt")["content"] == "real"
    info = call("stat", path="alias.txt")
    assert info["is_link"] is True
    assert info["size"] == 4


def test_root_reached_through_a_symlink(make_files: Callable[..., Call], tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "alias").symlink_to(real)
    call = make_files(tmp_path / "alias")
    call("write", path="f.txt", content="x")
    assert (real / "f.txt").read_text() == "x"
    assert call("read", path=str(tmp_path / "alias" / "f.txt"))["content"] == "x"


def test_symlink_loop_is_a_clear_error(call: Call, root: Path) -> None:
    os.symlink("loop_b", root / "loop_a")
    os.symlink("loop_a", root / "loop_b")
    with pytest.raises(FileActionError, match="loop"):
        call("read", path="loop_a")


def test_no_roots_refuses_everything(make_files: Callable[..., Call], tmp_path: Path) -> None:
    call = make_files()
    (tmp_path / "f.txt").write_text("x")
    for verb, args in [("read", {"path": str(tmp_path / "f.txt")}), ("list", {}),
                       ("write", {"path": "x", "content": "y"})]:
        with pytest.raises(FileActionError, match="no roots are configured"):
            call(verb, **args)


def test_wrong_argument_types(call: Call) -> None:
    with pytest.raises(ArgumentError, match="argument 'path'"):
        call("read", path=["a"])
    with pytest.raises(ArgumentError, match="unknown argument 'overwrit'"):
        call("copy", source="a", target="b", overwrit=True)


def test_create_roots_makes_missing_roots(tmp_path: Path) -> None:
    from platybus.plugins.file import FilePlugin

    from platybus.actions import ActionRegistry
    from platybus.bus import Bus
    from platybus.codec import Codec
    from platybus.extensions import NodeContext

    root = tmp_path / "drop" / "in"
    ctx = NodeContext(node_id="t", bus=Bus("t"), codec=Codec(), actions=ActionRegistry(),
                      data_dir=tmp_path)
    plugin = FilePlugin("file", FilePlugin.Config(roots=[str(root)], create_roots=True), ctx)
    plugin.start()
    assert root.is_dir()
    plugin.stop()
