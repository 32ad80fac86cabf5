"""Kernels generated from templates, imported as real modules: the one way gpuops builds them.

Some kernels must be fully unrolled: every accumulator, tap and staged value a named scalar (numba keeps
those in registers; an indexed local array lives in local memory).  Their source is written out as
Python text by a template module: `gpuops.cuda._correlation_source` (the register-tiled correlation
kernels) and `gpuops.cuda._conv_source` (the depthwise-convolution kernels generated per kernel size
and stride).  `load` turns such a text into a module:

1. The text is written once to ``<name>-<first 16 hex digits of its sha256>.py`` in `generated_dir`
   (``<numba's cache dir>/gpuops/generated`` when ``NUMBA_CACHE_DIR`` is set, else the per-user cache
   directory, ``~/.cache/gpuops/generated`` on Linux).  A file that already holds the text is reused
   untouched: numba's disk cache keys on the source file's modification time, so it is never rewritten.
   New files appear atomically (written aside, then linked into place).
2. The file is imported with importlib as the module ``gpuops.cuda._generated_<name>_<hash>``.

So numba's on-disk cache (``cache=True``), tracebacks and line info work as for any source file, and a
template change gives a new file name: a stale text is never imported.

Fallbacks.  When the cache directory cannot be written (read-only, full), a private directory under the
system temp directory (``gpuops-<uid>/generated``, mode 0o700, used only if owned by this user) takes
its place.  When that fails too, the text is executed from memory under a pseudo file name with a
`linecache` entry (tracebacks and `inspect.getsource` still work) and a `RuntimeWarning` says so;
`gpuops._launch.Kernel` compiles such kernels without numba's disk cache, which needs a source file.

This module and the template modules are numba-free text processing.  ``python -m gpuops.cuda._generate``
prints each generated module's sha256 and file (``--write DIR`` writes the texts out for reading).
"""
from __future__ import annotations

import argparse
import contextlib
import getpass
import hashlib
import importlib.util
import linecache
import os
import pathlib
import sys
import tempfile
import threading
import types
import warnings

#: characters of the hex sha256 in a generated file's name
HASH_CHARS = 16

_LOCK = threading.RLock()
_MODULES: dict = {}          # (name, sha256) -> module, per process


def source_hash(source: str) -> str:
    """The sha256 (hex) of a generated text, UTF-8 encoded: what names its file."""
    return hashlib.sha256(source.encode("utf-8")).hexdigest()


def file_name(name: str, source: str) -> str:
    """``<name>-<hash>.py``: the file a text of module ``name`` is written to."""
    return f"{name}-{source_hash(source)[:HASH_CHARS]}.py"


def user_cache_dir() -> pathlib.Path:
    """The per-user cache directory of gpuops (the platform's convention, as platformdirs has it)."""
    home = pathlib.Path.home()
    if not home.is_absolute():                   # no HOME, no password entry: there is no per-user directory
        raise OSError(f"no home directory to put a cache in (got {str(home)!r})")
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(home / "AppData" / "Local")
        return pathlib.Path(base) / "gpuops" / "Cache"
    if sys.platform == "darwin":
        return home / "Library" / "Caches" / "gpuops"
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = pathlib.Path(xdg) if os.path.isabs(xdg) else home / ".cache"
    return base / "gpuops"


def _numba_cache_dir() -> str:
    """numba's ``config.CACHE_DIR`` (``NUMBA_CACHE_DIR``), or "" when unset; read without importing numba."""
    config = sys.modules.get("numba.core.config")
    if config is not None:
        return getattr(config, "CACHE_DIR", "") or ""
    return os.environ.get("NUMBA_CACHE_DIR", "")


def generated_dir() -> pathlib.Path:
    """Where generated modules are written: under numba's cache directory when one is set (tests and
    deployments point it somewhere writable), else under the per-user cache directory."""
    numba_dir = _numba_cache_dir()
    if numba_dir:
        return pathlib.Path(numba_dir) / "gpuops" / "generated"
    return user_cache_dir() / "generated"


def private_temp_dir() -> pathlib.Path:
    """``<temp>/gpuops-<uid>/generated``, created mode 0o700; `OSError` when the directory exists but is
    not this user's alone (another user could then change what gets imported)."""
    uid = os.getuid() if hasattr(os, "getuid") else None
    top = pathlib.Path(tempfile.gettempdir()) / f"gpuops-{uid if uid is not None else getpass.getuser()}"
    top.mkdir(mode=0o700, exist_ok=True)
    if uid is not None:
        st = top.stat()
        if st.st_uid != uid or st.st_mode & 0o022:
            raise PermissionError(f"{top} is not private to this user")
    return top / "generated"


def _default_directories():
    yield generated_dir
    yield private_temp_dir


def load(name: str, source: str, directories=None) -> types.ModuleType:
    """The module of the generated text ``source`` (``name``: an identifier naming the template).

    Written to and imported from the first of ``directories`` (paths or callables returning one; default
    `generated_dir`, then `private_temp_dir`) that holds or can take the file, else executed from memory.
    Once per process and text; the module's ``__gpuops_generated__`` tells where it came from."""
    if not name.isidentifier():
        raise ValueError(f"generated module name must be an identifier, got {name!r}")
    digest = source_hash(source)
    with _LOCK:
        module = _MODULES.get((name, digest))
        if module is None:
            module = _MODULES[(name, digest)] = _load(name, source, digest, directories)
    return module


def _load(name, source, digest, directories):
    stem = f"{name}-{digest[:HASH_CHARS]}"
    modname = f"{__package__ or 'gpuops.cuda'}._generated_{name}_{digest[:HASH_CHARS]}"
    text = source.encode("utf-8")
    failures = []
    for where, entry in enumerate(_default_directories() if directories is None else directories):
        try:
            directory = pathlib.Path(entry() if callable(entry) else entry)
            path, created = _materialise(directory, stem, text)
        except OSError as err:
            failures.append(f"{getattr(entry, '__name__', entry)}: {err}")
            continue
        module = _import_file(modname, path)
        module.__gpuops_generated__ = {"name": name, "sha256": digest, "path": str(path), "created": created,
                                       "fallback": where > 0}
        return module
    warnings.warn(f"gpuops: cannot write the generated module {stem}.py ({'; '.join(failures)}); it runs from "
                  f"memory, and numba compiles its kernels again in every process", RuntimeWarning, stacklevel=4)
    module = _exec_in_memory(modname, stem, source)
    module.__gpuops_generated__ = {"name": name, "sha256": digest, "path": None, "created": True,
                                   "fallback": True}
    return module


def _materialise(directory: pathlib.Path, stem: str, text: bytes):
    """(path, created): ``directory/stem.py`` holding ``text``, reused if it already does."""
    path = directory / f"{stem}.py"
    with contextlib.suppress(OSError):
        if path.read_bytes() == text:
            return path, False
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{stem}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        try:
            os.link(tmp, path)               # appears whole, and only if no other process got there first
        except FileExistsError:
            with contextlib.suppress(OSError):
                if path.read_bytes() == text:
                    return path, False       # another process wrote it meanwhile: keep its file (and mtime)
            os.replace(tmp, path)            # a damaged file: replace it
        except OSError:                      # no hard links on this file system
            os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    return path, True


def _import_file(modname: str, path: pathlib.Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(modname, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[modname] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(modname, None)
        raise
    return module


def _exec_in_memory(modname: str, stem: str, source: str) -> types.ModuleType:
    filename = f"<gpuops generated {stem}.py>"
    # an entry without a modification time is never invalidated by linecache.checkcache
    linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
    module = types.ModuleType(modname)
    sys.modules[modname] = module
    try:
        exec(compile(source, filename, "exec"), module.__dict__)
    except BaseException:
        sys.modules.pop(modname, None)
        raise
    return module


# ---------------------------------------------------------------------------------------------
# the generated modules of gpuops, with their default parameters


def _correlation_tiles() -> str:
    from gpuops.cuda import _correlation_source
    return _correlation_source.source()


def _conv_depthwise() -> str:
    from gpuops.cuda import _conv_source
    return _conv_source.source()


def _conv_nhwc() -> str:
    from gpuops._constants import CONV_FAST_SIZES, CONV_FAST_STRIDES
    from gpuops.cuda import _conv_source
    return _conv_source.nhwc_source(entries=_conv_source.nhwc_kernels(CONV_FAST_SIZES, CONV_FAST_STRIDES))


#: name -> the function returning the text of that generated module (as gpuops.cuda.<family> loads it)
SOURCES = {
    "correlation_tiles": _correlation_tiles,
    "conv_depthwise": _conv_depthwise,
    "conv_nhwc": _conv_nhwc,
}


def main(argv=None):
    parser = argparse.ArgumentParser(description="Print (or write out) gpuops's generated kernel modules.")
    parser.add_argument("--write", metavar="DIR", type=pathlib.Path,
                        help="write each generated text to DIR/<name>.py (for reading; gpuops never imports them)")
    args = parser.parse_args(argv)
    for name, make in SOURCES.items():
        source = make()
        path = generated_dir() / file_name(name, source)
        print(f"{name}  sha256 {source_hash(source)}  {path}{'' if path.exists() else '  (not written yet)'}")
        if args.write is not None:
            args.write.mkdir(parents=True, exist_ok=True)
            (args.write / f"{name}.py").write_text(source, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
