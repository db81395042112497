"""The build folders of the compile cache on disk (used by compiler/driver.py).

    verify(build, key, sources, emit, dtype) -> (manifest | None, reason)
    seal(manifest) -> manifest with its own digest      publish(tmp, build)
    tmp_folder(root, key) -> Path                       clean_stale(root)

A cache hit is served only after verify(): manifest.json parses, names this hash, compiler
version and options, carries its own digest (so an edited or truncated manifest is caught), the
stored sources are the ones just read, and every file in the folder is one the manifest lists
with the sha256 it records. Anything else is a miss and the folder is rebuilt. The digests detect
corruption, stale and hand-edited folders; they carry no secret, so they are not a signature
against someone who can write the cache and recompute them (nothing spikescan runs is loaded
from a build folder: the engines generate their code from the analysed sources).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import time
from pathlib import Path
from typing import Optional

MANIFEST = "manifest.json"
STALE_DEAD_S = 300  # a temporary folder of a dead compiler process on this host, older than this
STALE_ANY_S = 24 * 3600  # any temporary folder older than this (other hosts, pid reuse, old names)
_HOST = re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname() or "host")[:64]
# .<hash>.tmp-<host>-<pid>-<ns> (a build being written) or .<hash>.old-... (a folder being
# replaced); names without host come from versions before 0.1.0's cleanup
_WORK = re.compile(r"^\.[0-9a-f]{20}\.(?:tmp|old)-(?:(?P<host>.+)-)?(?P<pid>\d+)-(?P<ns>\d+)$")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")


def sha(data: str | bytes) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def _digest(manifest: dict) -> str:
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    return sha(json.dumps(body, sort_keys=True, separators=(",", ":")))


def seal(manifest: dict) -> dict:
    """The manifest with `manifest_sha256`, the digest of everything else in it."""
    return dict(manifest, manifest_sha256=_digest(manifest))


def _safe_rel(rel) -> bool:
    return isinstance(rel, str) and all(p and p not in (".", "..") for p in rel.split("/"))


def read_manifest(build: Path) -> tuple[Optional[dict], str]:
    """The parsed manifest of `build` whose own digest matches, else (None, why not)."""
    try:
        text = (build / MANIFEST).read_bytes()
    except FileNotFoundError:
        return None, "no manifest.json"
    except OSError as e:
        return None, f"manifest.json cannot be read ({e.strerror or e})"
    try:
        man = json.loads(text)
    except (ValueError, RecursionError):
        return None, "manifest.json is not valid JSON (truncated or corrupt)"
    if not isinstance(man, dict) or man.get("manifest_sha256") != _digest(man):
        return None, "manifest.json was modified (its digest does not match)"
    return man, ""


def verify(build: Path, key: str, sources: dict[str, str], emit, dtype: str,
           version: str, abi: str) -> tuple[Optional[dict], str]:
    """(manifest, "") if `build` is a complete, unmodified build of these sources (relative
    path -> sha256) and options, else (None, the first reason it is not)."""
    man, why = read_manifest(build)
    if man is None:
        return None, why
    expected = {"hash": key, "spikescan_version": version, "compiler_abi": abi, "dtype": dtype,
                "emit": list(emit), "sources": sources}
    for field, value in expected.items():
        if man.get(field) != value:
            return None, f"manifest.json field '{field}' does not match this build"
    hashes = man.get("hashes")
    if not isinstance(hashes, dict) or not all(isinstance(n, str) and _SAFE_NAME.match(n) for n in hashes):
        return None, "manifest.json lists no valid artifact hashes"
    try:
        on_disk = {p.name for p in build.iterdir() if p.name != MANIFEST and not p.is_dir()}
        stored = {p.relative_to(build / "src").as_posix() for p in (build / "src").rglob("*") if not p.is_dir()}
        if on_disk != set(hashes):
            return None, "the artifacts on disk differ from those manifest.json lists"
        if stored != set(sources) or not all(_safe_rel(r) for r in sources):
            return None, "the stored sources differ from those manifest.json lists"
        for name, digest in hashes.items():
            if sha((build / name).read_bytes()) != digest:
                return None, f"{name} was modified or is corrupt"
        for rel, digest in sources.items():
            if sha((build / "src" / rel).read_bytes()) != digest:
                return None, f"src/{rel} was modified or is corrupt"
    except OSError as e:
        return None, f"the folder cannot be read ({e.strerror or e})"
    kernels = [k for n in (man.get("neurons") or {}).values() for k in (n.get("kernels") or {}).values()]
    if any(k != "jit" and k not in hashes for k in kernels):
        return None, "manifest.json names a kernel file it has no hash for"
    return man, ""


def tmp_folder(root: Path, key: str, kind: str = "tmp") -> Path:
    return root / f".{key}.{kind}-{_HOST}-{os.getpid()}-{time.time_ns()}"


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        try:
            p.unlink()
        except FileNotFoundError:
            pass


def publish(tmp: Path, build: Path) -> None:
    """Rename the finished folder `tmp` to `build`. A folder already there (a --force rebuild, or
    one that failed verification) is first renamed aside, so readers never see a half folder."""
    old = None
    if build.exists() or build.is_symlink():
        old = tmp_folder(build.parent, build.name, "old")
        try:
            os.replace(build, old)
        except FileNotFoundError:  # a concurrent compile moved it first
            old = None
    try:
        os.replace(tmp, build)
    except OSError:  # a concurrent identical build was published in between: keep it
        if not (build / MANIFEST).is_file():
            raise
    finally:
        if old is not None:
            _remove(old)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True  # exists (another user's), or not a pid we can judge: keep the folder
    return True


def clean_stale(root: Path, now: Optional[float] = None) -> list[Path]:
    """Remove the temporary folders that killed compiles left in `root`: those of a dead process
    on this host (older than STALE_DEAD_S) and any older than STALE_ANY_S. A live compile's
    folder is never touched. Returns what was removed."""
    now = time.time() if now is None else now
    removed = []
    try:
        entries = list(root.iterdir())
    except OSError:
        return removed
    for p in entries:
        m = _WORK.match(p.name)
        if not m:
            continue
        try:
            age = now - max(p.lstat().st_mtime, int(m["ns"]) / 1e9)
        except OSError:
            continue
        dead_here = m["host"] == _HOST and not _alive(int(m["pid"]))
        if (dead_here and age > STALE_DEAD_S) or age > STALE_ANY_S:
            _remove(p)
            removed.append(p)
    return removed
