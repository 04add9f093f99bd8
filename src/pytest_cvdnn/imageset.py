"""The user's images for the agreement and preprocessing items: files, labels (one subfolder per class, or a
labels.csv), class names (free of OpenCV and PIL: the files are read by the pipelines)."""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from .errors import CvdnnError
from .folders import IMAGE_SUFFIXES, folder_files

__all__ = ["ImageSet", "read_image_set"]


@dataclass(frozen=True)
class ImageSet:
    """The images of ``--cvdnn-images``: files, their labels (class subfolders or a labels.csv; None: unlabelled)
    and the class names (sorted, as ``keras.utils.image_dataset_from_directory`` numbers them)."""

    folder: Path
    files: tuple[Path, ...]
    labels: tuple[int, ...] | None
    classes: tuple[str, ...]

    def digest(self) -> str:
        """Content hash of every image and its label (the cache key of the Keras side)."""
        h = hashlib.sha256()
        for k, path in enumerate(self.files):
            h.update(path.relative_to(self.folder).as_posix().encode() + b"\0")
            h.update(hashlib.sha256(path.read_bytes()).digest())
            h.update(str(self.labels[k] if self.labels else "").encode() + b"\0")
        return h.hexdigest()

    def name(self, k: int) -> str:
        return self.files[k].relative_to(self.folder).as_posix()


def read_image_set(folder: Path, option: str = "--cvdnn-images", limit: int | None = None,
                   allow_empty: bool = False) -> ImageSet:
    """The images of ``folder``: class subfolders (labelled by folder name), a flat folder with ``labels.csv``
    (``file,label``: a class name or index), or a flat folder (unlabelled); every image checked against the
    memory budget from its header before it is decoded.  ``allow_empty``: a folder without images is an empty set
    (the caller says why that matters)."""
    from .budget import check_image_budget

    folder = Path(folder)
    if not folder.is_dir():
        raise CvdnnError(f"{option}={folder} is not a folder", fix="pass a folder of PNG/JPEG images (class "
                         "subfolders for labels)")
    subfolders = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    files: list[Path] = []
    labels: list[int] | None = None
    classes: tuple[str, ...] = ()
    if subfolders:
        classes = tuple(p.name for p in subfolders)
        labels = []
        for k, sub in enumerate(subfolders):
            found = folder_files(sub, IMAGE_SUFFIXES, option)
            files += found
            labels += [k] * len(found)
    else:
        files = folder_files(folder, IMAGE_SUFFIXES, option)
        table = folder / "labels.csv"
        if table.is_file():
            labels, classes = _csv_labels(table, files, option)
    if not files and not allow_empty:
        raise CvdnnError(f"{option}={folder} holds no images ({', '.join(IMAGE_SUFFIXES)})",
                         fix="add PNG/JPEG images (in one subfolder per class to measure accuracy too)")
    if limit is not None:
        files, labels = files[:limit], (labels[:limit] if labels is not None else None)
    for path in files:
        check_image_budget(path, option)
    return ImageSet(folder, tuple(files), tuple(labels) if labels is not None else None, classes)


def _csv_labels(table: Path, files: Sequence[Path], option: str) -> tuple[list[int], tuple[str, ...]]:
    with open(table, newline="", encoding="utf-8") as fh:
        rows = [row for row in csv.reader(fh) if row and not row[0].startswith("#")]
    if rows and rows[0][:2] == ["file", "label"]:
        rows = rows[1:]
    given = {r[0].strip(): r[1].strip() for r in rows if len(r) >= 2}
    missing = [p.name for p in files if p.name not in given]
    if missing:
        raise CvdnnError(f"{option}: {table} has no label for {', '.join(missing[:5])}"
                         + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""),
                         fix="give every image a row file,label (a class name or index), or remove labels.csv")
    values = [given[p.name] for p in files]
    if all(v.isdigit() for v in values):
        return [int(v) for v in values], ()
    classes = tuple(sorted(set(values)))
    return [classes.index(v) for v in values], classes
