"""Files merc writes, and where they came from.

Every file the package writes goes through :func:`atomic_writer` (or its wrappers
:func:`atomic_write_bytes`, :func:`atomic_write_text`, :func:`write_json`): a temp file in the same folder,
flushed and fsynced, then renamed over the target — a crash never leaves a half-written file where a
finished one is expected, and a failed write leaves no temp file behind.

:func:`provenance` describes the code and machine that produced a result (merc version, git commit and
whether the tree was dirty, command line, Python / torch versions, CPU, date); run directories and
benchmark results record it.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any, Iterator

_UMASK = os.umask(0o022)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_writer(path: str | Path, mode: str = "wb", *, encoding: str | None = None) -> Iterator[IO[Any]]:
    """Open a temp file next to ``path`` for writing (``mode`` "wb" or "w"); on a clean exit flush, fsync
    and rename it over ``path``; on an exception remove it and re-raise. Parent folders are created.

        with atomic_writer(run_dir / "model.pt") as f:
            torch.save(state, f)
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_writer writes whole files: mode must be 'wb' or 'w', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the usual permissions
        with os.fdopen(fd, mode, encoding=encoding or ("utf-8" if mode == "w" else None)) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temp file in the same folder, fsync, then rename."""
    with atomic_writer(path, "wb") as f:
        f.write(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")


def hash_file(h: "hashlib._Hash", path: str | Path, *, head: int | None = None) -> "hashlib._Hash":
    """Feed the bytes of ``path`` to the hash ``h`` and return it: all of them, or, with ``head``, only the first
    and last ``head`` bytes of a file longer than ``2 * head`` (a cheap id of multi-GB media and weights).
    Callers that hash more than bytes (a folder's file names, a clip's mtime) update ``h`` themselves first.
    Raises OSError when the file cannot be read."""
    with open(path, "rb") as f:
        if head is not None:
            size = os.fstat(f.fileno()).st_size
            if size > 2 * head:
                h.update(f.read(head))
                f.seek(size - head)
                h.update(f.read(head))
                return h
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h


def file_digest(*paths: str | Path, chars: int | None = 16, head: int | None = None) -> str:
    """sha256 (hex) over the bytes of ``paths`` in order (see :func:`hash_file` for ``head``): its first ``chars``
    characters (16: a stable id of model weight files in fingerprints), or all 64 with ``chars=None`` (checksums)."""
    h = hashlib.sha256()
    for p in paths:
        hash_file(h, p, head=head)
    return h.hexdigest()[:chars]


# provenance

def _git(*args: str, cwd: Path) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_state(path: str | Path | None = None) -> dict[str, Any]:
    """``{"git_commit": sha or None, "git_dirty": bool or None}`` of the repository holding ``path``
    (default: this package's source). None when merc is not run from a git checkout. Dirty = tracked files
    modified or untracked files present (``git status --porcelain``)."""
    where = Path(path) if path is not None else Path(__file__).resolve().parent
    commit = _git("rev-parse", "HEAD", cwd=where)
    if commit is None:
        return {"git_commit": None, "git_dirty": None}
    status = _git("status", "--porcelain", "--untracked-files=normal", cwd=where)
    out: dict[str, Any] = {"git_commit": commit, "git_dirty": None if status is None else bool(status)}
    if status:  # which paths (relative to the repository root), so a reader can judge what differed
        # "XY path" lines ("XY old -> new" for renames); _git strips the first line's leading space
        paths = [line[2:].strip().split(" -> ")[-1].strip('"') for line in status.splitlines() if len(line) > 2]
        out["git_dirty_paths"] = paths[:MAX_DIRTY_PATHS] + ([f"… {len(paths) - MAX_DIRTY_PATHS} more"]
                                                            if len(paths) > MAX_DIRTY_PATHS else [])
    return out


MAX_DIRTY_PATHS = 20
RESULTS_DIR = "benchmarks/results/"  # results written while a benchmark runs do not change what the code does


def dirty_outside_results(prov: dict[str, Any]) -> bool | None:
    """Whether ``prov``'s tree had uncommitted changes other than files under ``benchmarks/results/`` (None:
    unknown, e.g. a provenance recorded before the paths were kept)."""
    if not prov.get("git_dirty"):
        return prov.get("git_dirty")
    paths = prov.get("git_dirty_paths")
    if not paths:
        return True
    return any(not p.startswith(RESULTS_DIR) for p in paths)


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def provenance(argv: list[str] | None = None) -> dict[str, Any]:
    """What produced a result: merc version, git commit and dirtiness, command line, Python, torch,
    platform and CPU, and the UTC date. Cheap (two ``git`` calls); safe outside a git checkout."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        merc_version = version("merc")
    except PackageNotFoundError:
        merc_version = None
    try:
        import torch
        torch_version = torch.__version__
    except ImportError:
        torch_version = None
    return {
        "merc_version": merc_version,
        **git_state(),
        "command": list(sys.argv if argv is None else argv),
        "python": platform.python_version(),
        "torch": torch_version,
        "platform": platform.platform(),
        "machine": {"arch": platform.machine(), "cpu_count": os.cpu_count(), "cpu_model": cpu_model()},
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def provenance_markdown(prov: dict[str, Any]) -> str:
    """A few markdown lines for a results file; a dirty tree is stated in bold."""
    commit = prov.get("git_commit") or "unknown (not a git checkout)"
    dirty = prov.get("git_dirty")
    state = (" — **the working tree had uncommitted changes (dirty); these figures may not be reproducible "
             "from this commit**" if dirty else "" if dirty is False else " (tree state unknown)")
    if dirty and prov.get("git_dirty_paths"):
        listed = ", ".join(f"`{p}`" for p in prov["git_dirty_paths"])
        state = (f" — uncommitted changes only in benchmark results files ({listed}), not in the code"
                 if not dirty_outside_results(prov) else f"{state}: {listed}")
    m = prov.get("machine", {})
    return "\n".join([
        f"- merc {prov.get('merc_version')}, git commit `{commit}`{state}",
        f"- command: `{' '.join(prov.get('command', []))}`",
        f"- Python {prov.get('python')}, torch {prov.get('torch')}, {prov.get('platform')}",
        f"- machine: {m.get('cpu_model')} ({m.get('cpu_count')} CPUs, {m.get('arch')})",
        f"- date: {prov.get('date')}",
    ])
