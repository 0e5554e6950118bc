"""Amazon Scientific as next-item examples for the scorer: (history -> next item), with item text.

The files are the UniSRec/RecBole split of ``../shared/data/amazon_scientific``:

* ``Scientific.train.inter`` — every prefix of each user's training sequence -> its next item
  (what the models are trained on);
* ``Scientific.valid.inter`` — each user's full training sequence -> the next item (model
  selection); the withheld test split has the same format, so any such file can be evaluated;
* ``Scientific.text`` — ``ASIN \\t title. categories. brand.`` and ``Scientific.item2index`` the
  integer ids the ``.inter`` files use.

Items are numbered 0..N-1 in ``item2index`` order; texts follow :func:`streamrec.model.texts.item_text`
so training and serving write items the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from streamrec.datasets.loaders import DatasetMissing, parse_amazon_text
from streamrec.datasets.sequences import Example
from streamrec.model.texts import item_text

FOLDER = "amazon_scientific"
TRAIN_FILE = "Scientific.train.inter"
VALID_FILE = "Scientific.valid.inter"


@dataclass(frozen=True)
class Catalog:
    """Item index -> id, title and full item text (title, category path, brand)."""

    item_ids: tuple[str, ...]
    titles: tuple[str, ...]
    texts: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.item_ids)


def _require(path: Path) -> Path:
    if not path.exists():
        raise DatasetMissing(f"{path} not found: the shared datasets belong in ../shared/data (see its README)")
    return path


def load_catalog(data_dir: Path) -> Catalog:
    folder = data_dir / FOLDER
    index_of: dict[str, int] = {}
    with open(_require(folder / "Scientific.item2index"), encoding="utf-8") as handle:
        for line in handle:
            asin, _, index = line.rstrip("\n").partition("\t")
            index_of[asin] = int(index)
    items = {}
    with open(_require(folder / "Scientific.text"), encoding="utf-8") as handle:
        next(handle)  # header
        for line in handle:
            item = parse_amazon_text(line)
            if item is not None and item.item_id in index_of:
                items[index_of[item.item_id]] = item
    count = max(index_of.values()) + 1
    missing = [index for index in range(count) if index not in items]
    if missing:
        raise ValueError(f"{len(missing)} items in item2index have no text (first: {missing[:5]})")
    ordered = [items[index] for index in range(count)]
    return Catalog(
        item_ids=tuple(item.item_id for item in ordered),
        titles=tuple(item.title for item in ordered),
        texts=tuple(item_text(item.title, item.category_path, item.brand) for item in ordered),
    )


def load_examples(path: Path) -> list[Example]:
    """Rows of a ``.inter`` file (``user \\t history \\t next item``) in file order."""
    examples = []
    with open(_require(path), encoding="utf-8") as handle:
        header = next(handle)
        if not header.startswith("user_id"):
            raise ValueError(f"{path}: expected a RecBole .inter header, got {header[:60]!r}")
        for line in handle:
            user, history, target = line.rstrip("\n").split("\t")
            examples.append(Example(user, tuple(int(i) for i in history.split()), int(target)))
    return examples
