"""Archives (.tar.gz, .tgz, .tar, .zip) unpacked once into the cache."""

from __future__ import annotations

import shutil
import tarfile
import zipfile
from pathlib import Path

from .cache import cache_root, fingerprint
from .errors import DataError


# -- archives --------------------------------------------------------------------------------
def unpack_archive(path: Path, cache_dir: str | None) -> Path:
    """Unpack a .tar.gz/.tgz/.tar/.zip once into the cache; return the folder."""
    st = path.stat()
    dest = cache_root(cache_dir) / "unpacked" / fingerprint(str(path.resolve()), st.st_size, st.st_mtime_ns)
    if (dest / ".complete").exists():
        return dest
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        if path.suffix == ".zip":
            with zipfile.ZipFile(path) as z:
                z.extractall(tmp)
        else:
            with tarfile.open(path) as t:
                t.extractall(tmp, filter="data")
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DataError(f"cannot unpack {path}: {exc}; check the archive (re-download it)") from None
    (tmp / ".complete").touch()
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return dest


def is_archive(path: Path) -> bool:
    return path.is_file() and (path.name.endswith((".tar.gz", ".tgz", ".tar")) or path.suffix == ".zip")
