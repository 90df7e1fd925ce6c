"""The ``file`` plugin: read, write and manage files inside configured root directories.

Every path an action touches must lie inside one of the ``roots`` once symlinks
are resolved, and no symlink inside a root may lead out of the roots. Writes and
copies go to a temporary file in the target's directory and are renamed into
place, so readers never see a half-written file.
"""

from __future__ import annotations

import base64
import binascii
import builtins
import codecs
import contextlib
import errno
import fnmatch
import os
import shutil
import stat as stat_
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec

from platybus.atomic import TEMP_NAME, temp_name, write_atomic
from platybus.errors import ActionError, ArgumentError
from platybus.extensions import Plugin, action


class FileActionError(ActionError):
    """A file action could not do what was asked."""


class PathOutsideRoots(FileActionError):
    """A path resolves outside the configured roots, or through a symlink that leaves them."""


class NoSuchFile(FileActionError):
    """The file or directory does not exist."""


class FileExists(FileActionError):
    """The target exists and overwriting was not asked for."""


class FilePlugin(Plugin):
    """Reads and writes files, confined to the configured root directories."""

    class Config(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
        """Options of the ``file`` plugin."""

        roots: list[str] = msgspec.field(default_factory=list)
        create_roots: bool = False

    config: FilePlugin.Config
    _roots: tuple[Path, ...] = ()

    def start(self) -> None:
        """Resolve the configured roots once, so later symlink changes cannot move them."""
        if self.config.create_roots:
            for given in self.config.roots:
                Path(given).expanduser().mkdir(parents=True, exist_ok=True)
        self._roots = tuple(Path(root).expanduser().resolve() for root in self.config.roots)
        for root in self._roots:
            if not root.is_dir():
                self.log.warning("file: root %s is not a directory", root)

    # -- actions -----------------------------------------------------------

    @action
    def read(self, path: str, encoding: str = "utf-8", binary: bool = False) -> dict[str, Any]:
        """Return a file's content as text, or as base64 with binary: true."""
        name = self._name("read")
        real = self._path(name, path)
        with _os_errors(name, path, real):
            data = real.read_bytes()
        if binary:
            content = base64.b64encode(data).decode("ascii")
        else:
            try:
                content = data.decode(_codec(name, encoding))
            except UnicodeDecodeError as error:
                raise FileActionError(
                    f"{name}: {path} is not valid {encoding} text (at byte {error.start}); "
                    "pass binary: true to read it as base64",
                    action=name, path=path,
                ) from None
        return {"path": str(real), "content": content, "size": len(data), "binary": binary}

    @action
    def write(
        self,
        path: str,
        content: str,
        encoding: str = "utf-8",
        binary: bool = False,
        make_dirs: bool = False,
    ) -> dict[str, Any]:
        """Replace a file's content atomically (content is base64 with binary: true)."""
        name = self._name("write")
        real = self._path(name, path)
        data = _decode_content(name, content, encoding, binary)
        if real.is_dir():
            raise FileActionError(f"{name}: {path} is a directory", action=name, path=path)
        if make_dirs:
            with _os_errors(name, path):
                real.parent.mkdir(parents=True, exist_ok=True)
        elif not real.parent.is_dir():
            raise NoSuchFile(
                f"{name}: no such directory: {real.parent} (pass make_dirs: true to create it)",
                action=name, path=path,
            )
        with _os_errors(name, path, real):
            write_atomic(real, data)
        return {"path": str(real), "size": len(data)}

    @action
    def append(self, path: str, content: str, encoding: str = "utf-8") -> dict[str, Any]:
        """Append text to a file, creating it if missing; return its new size."""
        name = self._name("append")
        real = self._path(name, path)
        data = _decode_content(name, content, encoding, binary=False)
        with _os_errors(name, path, real), real.open("ab") as handle:
            handle.write(data)
            size = handle.tell()
        return {"path": str(real), "size": size}

    @action(name="list")
    def list(
        self, path: str = ".", pattern: str = "*", recursive: bool = False
    ) -> builtins.list[dict[str, Any]]:
        """List the entries of a directory matching a glob pattern, optionally recursively."""
        name = self._name("list")
        real = self._path(name, path)
        if not real.is_dir():
            if not real.exists():
                raise NoSuchFile(f"{name}: no such directory: {path}", action=name, path=path)
            raise FileActionError(f"{name}: not a directory: {path}", action=name, path=path)
        entries = []
        with _os_errors(name, path, real):
            # os.walk does not descend into symlinked directories, so a link cannot take
            # a recursive listing outside the roots (or round a loop).
            for folder, dirs, files in os.walk(real, onerror=_raise):
                dirs.sort()
                for entry in sorted(dirs + files):
                    if fnmatch.fnmatchcase(entry, pattern):
                        # An entry removed while listing is simply not listed.
                        with contextlib.suppress(FileNotFoundError):
                            entries.append(self._describe(Path(folder) / entry))
                if not recursive:
                    break
        entries.sort(key=lambda item: item["path"])
        return entries

    @action
    def stat(self, path: str) -> dict[str, Any]:
        """Return the type, size, mode and modification time of a file or directory."""
        name = self._name("stat")
        location = self._path(name, path, follow=False)
        if not os.path.lexists(location):
            raise NoSuchFile(f"{name}: no such file: {path}", action=name, path=path)
        with _os_errors(name, path, location):
            return self._describe(location)

    @action
    def copy(self, source: str, target: str, overwrite: bool = False) -> dict[str, Any]:
        """Copy a file, or a directory recursively, to a new path atomically."""
        name = self._name("copy")
        src = self._path(name, source)
        dst = self._path(name, target)
        self._check_transfer(name, source, target, src, dst, overwrite=overwrite)
        with _os_errors(name, f"{source} -> {target}"):
            temp = temp_name(dst)
            try:
                if src.is_dir():
                    # Links are copied as links: following them could copy data from
                    # outside the roots into them.
                    shutil.copytree(src, temp, symlinks=True)
                else:
                    shutil.copy2(src, temp)
                _install(temp, dst, overwrite)
            except BaseException:
                _remove(temp)
                raise
        return {"source": str(src), "target": str(dst), "is_dir": dst.is_dir()}

    @action
    def move(self, source: str, target: str, overwrite: bool = False) -> dict[str, Any]:
        """Move or rename a file or directory."""
        name = self._name("move")
        src = self._path(name, source, follow=False)
        dst = self._path(name, target, follow=False)
        self._check_transfer(name, source, target, src, dst, overwrite=overwrite)
        is_dir = src.is_dir() and not src.is_symlink()
        with _os_errors(name, f"{source} -> {target}"):
            try:
                _install(src, dst, overwrite)
            except OSError as error:
                if error.errno != errno.EXDEV:
                    raise
                # Roots on different file systems: copy next to the target, then
                # rename it into place, and only then remove the source.
                temp = temp_name(dst)
                try:
                    if is_dir:
                        shutil.copytree(src, temp, symlinks=True)
                    else:
                        shutil.copy2(src, temp, follow_symlinks=False)
                    _install(temp, dst, overwrite)
                except BaseException:
                    _remove(temp)
                    raise
                _remove(src)
        return {"source": str(src), "target": str(dst), "is_dir": is_dir}

    @action
    def delete(self, path: str, recursive: bool = False) -> dict[str, Any]:
        """Delete a file, or a directory (its content too with recursive: true)."""
        name = self._name("delete")
        location = self._path(name, path, follow=False)
        if location in self._roots:
            raise FileActionError(f"{name}: refusing to delete root {location}",
                                  action=name, path=path)
        if not os.path.lexists(location):
            raise NoSuchFile(f"{name}: no such file: {path}", action=name, path=path)
        is_dir = location.is_dir() and not location.is_symlink()
        with _os_errors(name, path, location):
            if not is_dir:
                location.unlink()
            elif recursive:
                shutil.rmtree(location)
            else:
                try:
                    location.rmdir()
                except OSError as error:
                    if error.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                        raise
                    raise FileActionError(
                        f"{name}: directory not empty: {path} (pass recursive: true)",
                        action=name, path=path,
                    ) from None
        return {"path": str(location), "is_dir": is_dir}

    # -- paths -------------------------------------------------------------

    def _name(self, verb: str) -> str:
        return f"{self.name}.{verb}"

    def _inside(self, path: Path) -> bool:
        return any(path.is_relative_to(root) for root in self._roots)

    def _path(self, name: str, path: str, *, follow: bool = True) -> Path:
        """Return the checked absolute path for ``path``.

        With ``follow`` the result is fully resolved (what reading or writing uses);
        without it the last component is kept as is, so a symlink names itself
        (what deleting, moving or stat-ing the link uses). Either way the path and
        whatever it resolves to must be inside the roots.
        """
        if not self._roots:
            raise FileActionError(
                f"{name}: no roots are configured; list the directories this plugin "
                f"may use in plugins.{self.name}.roots",
                action=name,
            )
        if not path or "\0" in path:
            raise ArgumentError(f"{name}: invalid path {path!r}", action=name)
        given = Path(path)
        full = given if given.is_absolute() else self._roots[0] / given
        try:
            real = self._walk(name, path, full)
            if follow or full.name in ("", ".", ".."):
                location = real
            else:
                location = self._walk(name, path, full.parent) / full.name
        except RuntimeError as error:  # raised by Path.resolve on a symlink loop
            raise FileActionError(f"{name}: {path}: {error}", action=name, path=path) from None
        if not (self._inside(real) and self._inside(location)):
            raise PathOutsideRoots(
                f"{name}: {path} is outside the allowed roots "
                f"({', '.join(str(r) for r in self._roots)})",
                action=name, path=path,
            )
        return location

    def _walk(self, name: str, path: str, full: Path) -> Path:
        """Resolve ``full`` one component at a time, refusing links that leave the roots."""
        current = Path(full.anchor)
        for part in full.parts[1:]:
            if part == "..":
                current = current.parent
                continue
            step = current / part
            if step.is_symlink():
                target = step.resolve()
                # Links outside the roots (``/var/run`` on the way to a root) are fine;
                # a link inside a root must not lead out of the roots.
                if self._inside(current) and not self._inside(target):
                    raise PathOutsideRoots(
                        f"{name}: {path} is outside the allowed roots: symlink {step} "
                        f"points to {target}",
                        action=name, path=path,
                    )
                step = target
            current = step
        return current

    def _check_transfer(
        self, name: str, source: str, target: str, src: Path, dst: Path, *, overwrite: bool
    ) -> None:
        """Refuse copies and moves that cannot work or would destroy data by surprise."""
        if not os.path.lexists(src):
            raise NoSuchFile(f"{name}: no such file: {source}", action=name, path=source)
        if src in self._roots or dst in self._roots:
            raise FileActionError(f"{name}: a root cannot be moved, copied or replaced",
                                  action=name, path=source)
        if src == dst:
            raise FileActionError(f"{name}: {source} and {target} are the same path",
                                  action=name, path=source)
        src_dir = src.is_dir() and not src.is_symlink()
        if src_dir and dst.is_relative_to(src):
            raise FileActionError(f"{name}: cannot put directory {source} inside itself",
                                  action=name, path=source)
        if not dst.parent.is_dir():
            raise NoSuchFile(f"{name}: no such directory: {dst.parent}",
                             action=name, path=target)
        if os.path.lexists(dst):
            if not overwrite:
                raise FileExists(f"{name}: {target} already exists (pass overwrite: true)",
                                 action=name, path=target)
            if (dst.is_dir() and not dst.is_symlink()) != src_dir:
                kinds = ("a directory", "a file") if src_dir else ("a file", "a directory")
                raise FileActionError(
                    f"{name}: cannot replace {kinds[1]} ({target}) with {kinds[0]}",
                    action=name, path=target,
                )

    def _describe(self, path: Path) -> dict[str, Any]:
        """Describe an entry; a symlink is described by its target when that is inside."""
        info = path.lstat()
        is_link = stat_.S_ISLNK(info.st_mode)
        if is_link:
            with contextlib.suppress(OSError, RuntimeError):
                # Never report size or times of files outside the roots.
                if self._inside(path.resolve()):
                    info = path.stat()
        return {
            "name": path.name,
            "path": str(path),
            "is_dir": stat_.S_ISDIR(info.st_mode),
            "is_link": is_link,
            "size": info.st_size,
            "mtime": info.st_mtime,
            "mode": f"{stat_.S_IMODE(info.st_mode):o}",
        }


# -- helpers -------------------------------------------------------------------


def _raise(error: OSError) -> None:
    raise error


def _codec(name: str, encoding: str) -> str:
    try:
        return codecs.lookup(encoding).name
    except LookupError:
        raise ArgumentError(f"{name}: unknown encoding {encoding!r}", action=name) from None


def _decode_content(name: str, content: str, encoding: str, binary: bool) -> bytes:
    """Return the bytes to write: base64-decoded, or ``content`` encoded."""
    if binary:
        try:
            return base64.b64decode(content, validate=True)
        except binascii.Error as error:
            raise ArgumentError(f"{name}: content is not valid base64: {error}",
                                action=name) from None
    try:
        return content.encode(_codec(name, encoding))
    except UnicodeEncodeError as error:
        raise ArgumentError(
            f"{name}: content cannot be encoded as {encoding}: {error.reason} "
            f"at character {error.start}",
            action=name,
        ) from None


@contextlib.contextmanager
def _os_errors(name: str, shown: str, real: Path | None = None) -> Iterator[None]:
    """Turn OS errors into action errors that name the path as the caller gave it."""
    try:
        yield
    except OSError as error:
        where = shown
        filename = error.filename
        # Name the file the OS complained about only when it is not simply the path
        # asked for, nor one of our temporary files, which the caller never saw.
        if filename is not None and str(filename) != str(real) and not TEMP_NAME.fullmatch(
            os.path.basename(str(filename))
        ):
            where = f"{shown} ({filename})"
        details = {"action": name, "path": shown}
        if isinstance(error, FileNotFoundError):
            raise NoSuchFile(f"{name}: no such file: {where}", **details) from None
        if isinstance(error, FileExistsError):
            raise FileExists(f"{name}: already exists: {where}", **details) from None
        reason = (error.strerror or str(error)).lower()
        raise FileActionError(f"{name}: {reason}: {where}", **details) from None


def _install(source: Path, target: Path, overwrite: bool) -> None:
    """Rename ``source`` to ``target``, replacing it if ``overwrite``."""
    if not (overwrite and target.is_dir() and not target.is_symlink()):
        if not overwrite and os.path.lexists(target):
            raise FileExistsError(errno.EEXIST, "already exists", str(target))
        os.replace(source, target)
        return
    # rename() cannot replace a non-empty directory: move the old one aside first and
    # put it back if the new one cannot take its place.
    aside = temp_name(target)
    os.rename(target, aside)
    try:
        os.rename(source, target)
    except BaseException:
        os.rename(aside, target)
        raise
    _remove(aside)


def _remove(path: Path) -> None:
    """Remove a file, link or directory tree if it exists."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
