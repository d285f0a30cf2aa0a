"""The index of a streamed ImageFolder tree: its files, labels and image sides per split and the
pixel statistics of a sample, built from the files' headers once and cached by the tree's
fingerprint. A cached index of the wrong shape (hand-edited, another version's) is rebuilt with
a warning."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch

from ..errors import VgglabError
from ..files import write_text
from ..progress import track
from .cache import cache_root, fingerprint, tree_fingerprint
from .decode import decode_view
from .errors import DataError
from .imagefolder import list_folder, list_splits, open_image
from .stats import PixelStats, pixel_stats
from .stream import StreamSplit

INDEX_VERSION = 1
STATS_SAMPLE = 512  # training images whose pixels give the mean, std and colour PCA
STATS_SIDE = 64  # side they are decoded at for that


def _cached_index(key: str, cache_dir: str | None, build, valid) -> dict:
    """An index read from the cache under ``key``, else built and cached (an unwritable cache only
    warns: the run goes on, indexing again next time). ``valid(index)`` says whether a cached one
    has the shape this version writes; one that has not is rebuilt with a warning."""
    path = cache_root(cache_dir) / "streams" / f"{key}.json"
    if path.is_file():
        try:
            index = json.loads(path.read_text())
            if valid(index):
                return index
            warnings.warn(
                f"stream index {path} has the wrong shape (edited, or another version's); indexing the tree again", stacklevel=3
            )
        except (OSError, ValueError):
            warnings.warn(f"stream index {path} could not be read; indexing the tree again", stacklevel=3)
    index = build()
    try:
        write_text(path, json.dumps(index))
    except VgglabError as exc:
        warnings.warn(f"could not cache the stream index ({exc}); the tree will be indexed again next time", stacklevel=3)
    return index


def _valid_rows(rows) -> bool:
    """[[relative path, label, width, height], ...] with non-negative labels and positive sides."""

    def whole(v):
        return isinstance(v, int) and not isinstance(v, bool)

    return isinstance(rows, list) and all(
        isinstance(r, list)
        and len(r) == 4
        and isinstance(r[0], str)
        and r[0]
        and all(whole(v) for v in r[1:])
        and r[1] >= 0
        and r[2] > 0
        and r[3] > 0
        for r in rows
    )


def _valid_classes(classes, rows_lists) -> bool:
    return bool(
        isinstance(classes, list)
        and classes
        and all(isinstance(c, str) for c in classes)
        and all(r[1] < len(classes) for rows in rows_lists for r in rows)
    )


def _valid_tree_index(index) -> bool:
    try:
        splits, stats = index["splits"], index["stats"]
        if not (
            isinstance(splits, dict) and "train" in splits and "test" in splits and all(_valid_rows(r) for r in splits.values())
        ):
            return False
        if not _valid_classes(index["classes"], splits.values()) or not isinstance(index.get("skipped", []), list):
            return False
        index_stats(index)  # the right sizes: 3 means, 3 stds, 3 eigenvalues, 3x3 eigenvectors
        return all(
            torch.tensor(stats[k]).shape == shape
            for k, shape in (("mean", (3,)), ("std", (3,)), ("eigvals", (3,)), ("eigvecs", (3, 3)))
        )
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError):
        return False


def _valid_folder_index(index) -> bool:
    try:
        return _valid_rows(index["rows"]) and _valid_classes(index["classes"], [index["rows"]])
    except (KeyError, TypeError):
        return False


def _index_rows(tree: Path, files: list[Path], labels: list[int], strict: bool, skipped: list[str]) -> list:
    """(path relative to ``tree``, label, width, height) per readable file (headers only)."""
    rows = []
    what = f"indexing {files[0].relative_to(tree).parts[0]}/ of {tree}" if files else "indexing"
    for f, label in track(
        zip(files, labels, strict=True), len(files), f"{what} (image headers, cached after)", "files", count=lambda _: 1
    ):
        try:
            with open_image(f) as im:
                rows.append((str(f.relative_to(tree)), label, *im.size))
        except Exception as exc:  # PIL raises many types for bad files
            if strict:
                raise DataError(
                    f"cannot read image {f}: {exc} (remove or replace it, or set data.strict: false to skip it)"
                ) from None
            skipped.append(str(f))
            warnings.warn(f"skipped unreadable image {f}", stacklevel=3)
    return rows


def build_index(tree: Path, cache_dir: str | None, strict: bool) -> dict:
    """The tree's files, labels and sides per split, and pixel statistics of a sample of its
    training images; read from the cache when the tree's fingerprint is known."""

    def build() -> dict:
        index: dict = {"splits": {}, "skipped": []}
        classes = None
        for name, files, labels, classes in list_splits(tree):  # noqa: B007 (every split has the same classes: the last is kept)
            index["splits"][name] = _index_rows(tree, files, labels, strict, index["skipped"])
        if "train" not in index["splits"] or "test" not in index["splits"]:
            raise DataError(f"{tree} needs train/<class>/ and test/<class>/ (or val/<class>/, as ImageNet's) folders")
        index["classes"] = classes
        train = index["splits"]["train"]
        g = torch.Generator().manual_seed(0)
        pick = torch.randperm(len(train), generator=g)[:STATS_SAMPLE].tolist()
        sample = torch.stack([decode_view(tree / train[i][0], ("square",), STATS_SIDE) for i in pick])
        index["stats"] = {k: v.tolist() for k, v in pixel_stats(sample).to_dict().items()}
        return index

    return _cached_index(
        fingerprint(INDEX_VERSION, str(tree.resolve()), tree_fingerprint(tree)), cache_dir, build, _valid_tree_index
    )


def folder_split(
    folder: Path, store_size: int, crop: int, cache_dir: str | None = None, strict: bool = False
) -> tuple[StreamSplit, list[str]]:
    """One folder of class folders (``folder/<class>/<image>``, e.g. ImageNet's ``val/``), streamed,
    and its class names (sorted, as ImageFolder numbers them). No training split or statistics are
    needed: this is for models that bring their own, such as torchvision's weights."""

    def build() -> dict:
        files, labels, classes = list_folder(folder)
        skipped: list[str] = []
        return {"classes": classes, "rows": _index_rows(folder, files, labels, strict, skipped), "skipped": skipped}

    index = _cached_index(
        fingerprint(INDEX_VERSION, "folder", str(folder.resolve()), tree_fingerprint(folder)),
        cache_dir,
        build,
        _valid_folder_index,
    )
    split = stream_splits({"splits": {"x": index["rows"]}}, folder, store_size, strict, crop)["x"]
    return split, index["classes"]


def stream_splits(index: dict, tree: Path, store_size: int, strict: bool, crop: int | None = None) -> dict[str, StreamSplit]:
    out = {}
    for name, rows in index["splits"].items():
        files = [r[0] for r in rows]
        y = torch.tensor([r[1] for r in rows], dtype=torch.int64)
        sides = torch.tensor([[r[2], r[3]] for r in rows], dtype=torch.int64).view(-1, 2)
        out[name] = StreamSplit(tree, files, y, sides, store_size, strict, crop)
    return out


def index_stats(index: dict) -> PixelStats:
    return PixelStats.from_dict({k: torch.tensor(v) for k, v in index["stats"].items()})
