"""Dataset adapters: each turns a dataset's own annotation files into a list of clips.

An adapter is a function registered in ``DATASETS`` that takes ``DatasetOptions`` and returns a
``Dataset``. Adding a dataset is one module and one ``@register_dataset`` line; importing this
package registers every adapter.
"""

from stepcli.extract.datasets import csv_list, demo, diving48, drive_act, ikea_asm, ssv2  # noqa: F401 - registers them
from stepcli.extract.datasets.base import Clip, Dataset, DatasetFn, DatasetOptions, Rejected
from stepcli.extract.datasets.registry import DATASETS, dataset_names, load_dataset, register_dataset

__all__ = [
    "DATASETS", "Clip", "Dataset", "DatasetFn", "DatasetOptions", "Rejected", "dataset_names", "load_dataset",
    "register_dataset",
]  # fmt: skip
