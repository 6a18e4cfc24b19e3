"""The ``packed`` layout: a folder written by ``medxfer data pack`` (tar shards and an
``index.json``; see :mod:`medxfer.data.packed_shards`).

Its cases keep the split they had when the dataset was packed (a run uses it as a stored
split), their ids, labels and order; each case's ``packed`` key says where its members are,
and :func:`medxfer.data.cases.read_case` reads them from there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medxfer.data.datalist import Datalist
from medxfer.data.packed_shards import INDEX_NAME, PACKED_KEY, load_index
from medxfer.tasks import label_kind


def read_packed(folder: Path) -> Datalist:
    """The datalist of the pack in ``folder``.

    Raises:
        DataError: for an unreadable index, another pack version, or a shard that is
            missing or not the size the index records (naming it).
    """
    index = load_index(folder)
    masks = label_kind(index["task"]) == "mask"
    cases = [_case(folder, sample, masks) for sample in index["samples"]]
    source = index.get("source", {})
    dl = Datalist(name=index.get("name") or folder.name, format="packed", path=str(folder),
                  task=index["task"], cases=cases, class_names=list(index["class_names"]),
                  spatial_dims=index.get("spatial_dims"), modality=index.get("modality"),
                  class_order=index.get("class_order", ""),
                  layout_reason=f"{INDEX_NAME} of a medxfer pack",
                  split_source=f"the pack's {INDEX_NAME} (the split of "
                               f"{source.get('layout', 'its')} data at "
                               f"{source.get('path', '?')} when it was packed)")
    counts = ", ".join(f"{s} {n}" for s, n in index.get("split_counts", {}).items())
    dl.notices.append(f"the splits are those stored in the pack ({counts}), as given when it "
                      "was packed; data.split fractions and seed do not re-split it")
    return dl


def _case(folder: Path, sample: dict[str, Any], masks: bool) -> dict[str, Any]:
    shard = folder / sample["shard"]
    ref = f"{shard}#{sample['key']}"
    case = dict(sample.get("extra") or {})
    case.update({
        "id": sample["id"], "image": f"{ref}.npy", "split": sample["split"],
        "label": f"{ref}.mask.npy" if masks else sample["label"],
        PACKED_KEY: {"shard": str(shard), "key": sample["key"], "members": sample["members"],
                     "header": sample["header"], "digest": sample["digest"]},
    })
    return case
