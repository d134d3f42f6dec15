"""Train/eval input pipelines over a MindRecord folder (``irv2 convert`` output) or image folders.

A data folder holds either ``<split>.mindrecord*`` files (fields ``image``, ``label``,
``file_name``) with ``classes.json`` beside them, or a ``<split>/<class>/<image>`` tree. Training
shuffles, shards by rank and drops the last partial batch; evaluation reads every image in file
order, unsharded, keeping the last partial batch.
"""

from __future__ import annotations

import json
from pathlib import Path

import mindspore as ms
import mindspore.dataset as ds
from mindspore.dataset import transforms

from irv2_core.config import Config
from irv2_core.data.images import DECODABLE_EXTENSIONS
from irv2_core.data.transforms import eval_transforms, train_transforms
from irv2_core.errors import Irv2Error

__all__ = ["create_dataset", "dataset_size", "mindrecord_files", "read_classes"]

# ImageFolderDataset matches extensions case-sensitively
_FOLDER_EXTENSIONS = sorted({e for x in DECODABLE_EXTENSIONS for e in (x, x.upper())})


def mindrecord_files(data_dir: str | Path, split: str) -> list[Path]:
    """The data files ``<split>.mindrecord*`` (not their ``.db`` indexes), sorted; may be empty."""
    files = Path(data_dir).glob(f"{split}.mindrecord*")
    return sorted(p for p in files if not p.name.endswith(".db"))


def _image_root(data_dir: Path, split: str) -> Path | None:
    root = data_dir / split
    return root if root.is_dir() and any(p.is_dir() for p in root.iterdir()) else None


def has_split(data_dir: str | Path, split: str) -> bool:
    """True if *data_dir* holds *split* as MindRecord files or as an image-folder tree."""
    return bool(mindrecord_files(data_dir, split)) or _image_root(Path(data_dir), split) is not None


def read_classes(data_dir: str | Path, split: str = "train") -> dict[str, int]:
    """Class name -> index: ``classes.json`` when present, else the sorted folders of *split*."""
    data_dir = Path(data_dir)
    path = data_dir / "classes.json"
    if path.is_file():
        try:
            classes = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise Irv2Error(f"{path} is not valid JSON ({exc}); re-run `irv2 convert`") from None
        if not isinstance(classes, dict) or not all(isinstance(v, int) for v in classes.values()):
            raise Irv2Error(f"{path} must map class name -> integer index")
        return classes
    root = _image_root(data_dir, split)
    if root is None:
        raise Irv2Error(
            f"{data_dir} has neither classes.json nor a {split}/<class>/ image tree; "
            "point --data at the output folder of `irv2 convert`"
        )
    return {d.name: i for i, d in enumerate(sorted(p for p in root.iterdir() if p.is_dir()))}


def _source(
    data_dir: Path, split: str, shuffle: bool, num_shards: int | None, shard_id: int | None
):
    files = mindrecord_files(data_dir, split)
    shard = {"num_shards": num_shards, "shard_id": shard_id} if num_shards else {}
    if files:
        # Naming the first file is enough: MindDataset finds the other shards through its .db.
        return ds.MindDataset(
            str(files[0]), columns_list=["image", "label"], shuffle=shuffle, **shard
        )
    root = _image_root(data_dir, split)
    if root is None:
        raise Irv2Error(
            f"no {split!r} split in {data_dir}: expected {split}.mindrecord* files "
            f"(from `irv2 convert`) or a {split}/<class>/<image> folder tree"
        )
    return ds.ImageFolderDataset(
        str(root),
        decode=False,
        shuffle=shuffle,
        extensions=_FOLDER_EXTENSIONS,
        class_indexing=read_classes(data_dir, split),
        **shard,
    )


def dataset_size(data_dir: str | Path, split: str, rank: int = 0, group_size: int = 1) -> int:
    """Number of images of *split* that shard *rank* of *group_size* reads."""
    shards = group_size if group_size > 1 else None
    src = _source(Path(data_dir), split, False, shards, rank if shards else None)
    return src.get_dataset_size()


def create_dataset(
    data_dir: str | Path,
    split: str,
    cfg: Config,
    training: bool,
    rank: int = 0,
    group_size: int = 1,
    batch_size: int | None = None,
) -> ds.Dataset:
    """Batched ``(image, label)`` pipeline of *split* with the recipe's transforms: images are
    uint8 NCHW pixels (the network normalises them), labels int32.

    Training: shuffled, sharded by *rank* when *group_size* > 1, random augmentation, last partial
    batch dropped. Evaluation: file order, unsharded, eval transforms of ``cfg.eval_protocol``,
    every image kept (the last batch may be smaller). Shuffling and augmentation follow
    ``mindspore.dataset.config.set_seed`` at the time of the call.
    """
    data_dir = Path(data_dir)
    shards = group_size if training and group_size > 1 else None
    src = _source(data_dir, split, training, shards, rank if shards else None)
    if training:
        ops = train_transforms(
            cfg.image_size, cfg.eval_protocol, cfg.train_crop_scale_min, cfg.train_hflip
        )
    else:
        ops = eval_transforms(cfg.image_size, cfg.eval_protocol)
    workers = max(1, cfg.work_nums)
    src = src.map(operations=transforms.TypeCast(ms.int32), input_columns="label")
    src = src.map(operations=ops, input_columns="image", num_parallel_workers=workers)
    size = batch_size or (cfg.batch_size if training else cfg.eval_batch_size)
    return src.batch(size, drop_remainder=training)
