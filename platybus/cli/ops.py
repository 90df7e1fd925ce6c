"""Commands for running a node for years: ``init``, ``backup``, ``restore``, ``completion``,
``schema``."""

from __future__ import annotations

import argparse
import datetime as dt
import fcntl
import hashlib
import json
import shutil
import sqlite3
import sys
from pathlib import Path
from typing import Any

from platybus import __version__
from platybus.cli.common import DEFAULT_CONFIG, Add, Load
from platybus.errors import ArgumentError, NodeAlreadyRunning

MANIFEST = "platybus-backup.json"
_SQLITE_HEADER = b"SQLite format 3\x00"

STARTER = """\
# A platybus node. Check it with `platybus check -c {name}`, run it with
# `platybus run -c {name}`. Every key is described in docs/config.md.
node:
  # id: kitchen           # defaults to the host name
  data_dir: ./data        # state: token, traces, outbox, journal
  log_level: info         # debug, info, warning, error
  stop_timeout: 10        # seconds the whole stop may take

plugins:
  shell:
    timeout: 30           # seconds a command may run
    # allow: [ls, df]     # only these programs (docs/plugins/shell.md)
  file:
    roots: [./watched, ./data]   # the only folders file.* actions may touch
    create_roots: true
  variable: {{}}

backends:
  http:                   # the HTTP API and web console (docs/backends/http.md)
    host: 127.0.0.1       # loopback only; see docs for other binds
    port: 8008
  file_monitor:           # file.* events for changes under ./watched
    paths:
      - path: ./watched
        create: true

discovery:
  interfaces: [127.0.0.1] # zeroconf on this host only (docs/discovery.md)

# React to events (docs/automation/hooks.md):
hooks:
  log-new-files:
    if: {{type: file.created, data.is_directory: false}}
    then:
      - action: log.info
        args: {{message: "new file: ${{event.data.path}}"}}

traces:
  disk: true              # `platybus trace` reads them from the data dir
"""


def add_commands(add: Add, load: Load) -> None:
    """Add ``init``, ``backup``, ``restore``, ``completion`` and ``schema`` to the command line."""
    p = add("init", cmd_init, "write a commented starter config (never overwrites)",
            config=False)
    p.add_argument("path", nargs="?", default=DEFAULT_CONFIG,
                   help=f"where to write it (default: {DEFAULT_CONFIG})")
    p = add("backup", lambda a: cmd_backup(a, load),
            "copy the node's data dir to DIR, consistently, even while the node runs")
    p.add_argument("directory", help="a new or empty folder for the backup")
    p = add("restore", lambda a: cmd_restore(a, load),
            "put a backup back into the node's data dir (the node must be stopped)")
    p.add_argument("directory", help="a folder written by platybus backup")
    p.add_argument("--force", action="store_true",
                   help="replace files already in the data dir")
    p = add("completion", cmd_completion, "print a shell completion script", config=False)
    p.add_argument("shell", choices=["bash", "zsh"])
    p = add("schema", cmd_schema, "print the JSON Schema of the config, for editors",
            config=False)
    p.add_argument("-o", "--output", metavar="FILE", help="write it to FILE instead")


# -- init -----------------------------------------------------------------------


def cmd_init(args: argparse.Namespace) -> int:
    """Write the starter config, refusing to replace a file."""
    path = Path(args.path)
    if path.exists():
        raise ArgumentError(f"{path} exists; not overwriting it (give another path)")
    path.write_text(STARTER.format(name=path.name), encoding="utf-8")
    print(f"wrote {path}: check it with `platybus check -c {path}`, "
          f"run it with `platybus run -c {path}`")
    return 0


# -- backup and restore -----------------------------------------------------------


def cmd_backup(args: argparse.Namespace, load: Load) -> int:
    """Copy every file of the data dir; SQLite databases through the online backup API."""
    config = load(args, True)
    source = config.data_dir.resolve()
    target = Path(args.directory)
    if target.exists() and any(target.iterdir()):
        raise ArgumentError(f"{target} is not empty; give a new or empty folder")
    if not source.is_dir():
        raise ArgumentError(f"the data dir {source} does not exist: nothing to back up")
    target.mkdir(parents=True, exist_ok=True)
    files: list[dict[str, Any]] = []
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        relative = path.relative_to(source)
        if path.suffix == ".lock" or path.name.endswith(("-wal", "-shm", "-journal")):
            continue  # the lock is the running node's; WAL content comes through the backup
        out = target / relative
        out.parent.mkdir(parents=True, exist_ok=True)
        if _is_sqlite(path):
            _backup_sqlite(path, out)
        else:
            shutil.copy2(path, out)
        files.append({"path": relative.as_posix(), "sha256": _sha256(out),
                      "size": out.stat().st_size})
    manifest = {"format": "platybus.backup/1", "version": __version__,
                "node": config.node.id, "data_dir": str(source),
                "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                "files": files}
    (target / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    print(f"backed up {len(files)} file(s) of node {config.node.id} to {target}")
    return 0


def cmd_restore(args: argparse.Namespace, load: Load) -> int:
    """Check a backup against its manifest, then copy it into the (stopped) node's data dir."""
    config = load(args, True)
    backup = Path(args.directory)
    try:
        manifest = json.loads((backup / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ArgumentError(f"{backup} is not a platybus backup ({MANIFEST}: {error})") from None
    files = manifest.get("files", [])
    for item in files:
        path = backup / item["path"]
        if ".." in Path(item["path"]).parts or Path(item["path"]).is_absolute():
            raise ArgumentError(f"{backup}: the manifest names {item['path']!r}, outside it")
        if not path.is_file() or _sha256(path) != item["sha256"]:
            raise ArgumentError(f"{backup}: {item['path']} is missing or damaged; "
                                "nothing was restored")
    data_dir = config.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    _refuse_if_running(data_dir / f"{config.node.id}.lock", config.node.id)
    existing = [item["path"] for item in files if (data_dir / item["path"]).exists()]
    if existing and not args.force:
        raise ArgumentError(f"{data_dir} already holds {len(existing)} of these files "
                            f"(first: {existing[0]}); add --force to replace them")
    for item in files:
        out = data_dir / item["path"]
        out.parent.mkdir(parents=True, exist_ok=True)
        for stale in (out.with_name(out.name + "-wal"), out.with_name(out.name + "-shm")):
            stale.unlink(missing_ok=True)  # they belong to the database being replaced
        shutil.copy2(backup / item["path"], out)
    print(f"restored {len(files)} file(s) into {data_dir}")
    return 0


def _refuse_if_running(lock: Path, node_id: str) -> None:
    if not lock.exists():
        return
    with open(lock, "a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            raise NodeAlreadyRunning(
                f"node {node_id!r} is running (pid {handle.read().strip() or '?'}); stop it "
                "before restoring", node_id=node_id) from None
        fcntl.flock(handle, fcntl.LOCK_UN)


def _is_sqlite(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(len(_SQLITE_HEADER)) == _SQLITE_HEADER


def _backup_sqlite(path: Path, out: Path) -> None:
    # The online backup API copies a consistent snapshot while writers go on.
    source = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    target = sqlite3.connect(out)
    try:
        source.backup(target)
    finally:
        target.close()
        source.close()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 16), b""):
            digest.update(chunk)
    return digest.hexdigest()


# -- schema -----------------------------------------------------------------------


def cmd_schema(args: argparse.Namespace) -> int:
    """Print (or write) the config's JSON Schema, with every installed extension's options."""
    from platybus.schema import config_schema

    text = json.dumps(config_schema(), indent=2) + "\n"
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
        print(f"wrote {args.output}; add this line at the top of config.yaml:\n"
              f"# yaml-language-server: $schema={args.output}")
    else:
        sys.stdout.write(text)
    return 0


# -- completion -------------------------------------------------------------------


def cmd_completion(args: argparse.Namespace) -> int:
    """Print a completion script for bash or zsh, built from the parser itself."""
    from platybus.cli.main import build_parser

    sys.stdout.write(completion_script(build_parser(), args.shell))
    return 0


def completion_script(parser: argparse.ArgumentParser, shell: str) -> str:
    """Return the completion script: subcommands, then each subcommand's options."""
    commands: dict[str, list[str]] = {}
    for action in parser._actions:  # argparse keeps its subparsers only here
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                commands[name] = sorted(o for a in sub._actions for o in a.option_strings)
    cases = "\n".join(f'        {name}) opts="{" ".join(opts)}" ;;'
                      for name, opts in sorted(commands.items()))
    script = f"""# platybus completion for bash (zsh: through bashcompinit)
_platybus() {{
    local cur cmd opts
    cur="${{COMP_WORDS[COMP_CWORD]}}"
    if [ "$COMP_CWORD" -eq 1 ]; then
        COMPREPLY=( $(compgen -W "{' '.join(sorted(commands))} --help --version" -- "$cur") )
        return 0
    fi
    cmd="${{COMP_WORDS[1]}}"
    case "$cmd" in
{cases}
        *) opts="" ;;
    esac
    if [[ "$cur" == -* ]]; then
        COMPREPLY=( $(compgen -W "$opts" -- "$cur") )
    else
        COMPREPLY=( $(compgen -f -- "$cur") )
    fi
    return 0
}}
complete -F _platybus platybus
"""
    if shell == "zsh":
        script = "autoload -U +X bashcompinit && bashcompinit\n" + script
    return script
