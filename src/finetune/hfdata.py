"""The sources read through the `datasets` library: parquet files, folders written by `save_to_disk`, and hub dataset
ids (data.split, data.subset). Imported only when one of them is named: `datasets` (and pyarrow, pandas) take seconds
to import, which JSONL and CSV runs do not pay here.

Every failure is one line (a DataError): a bad file names the file and the library's own first line; a hub id that is
not in the local cache names the cache, the offline setting, and the command that fetches it once.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from finetune.errors import DataError
from finetune.formats import Where


@contextlib.contextmanager
def _quiet():
    """No progress bars or retry warnings from `datasets` / huggingface_hub: the run prints one line on failure."""
    import datasets
    from huggingface_hub.utils import logging as hub_logging

    bars = datasets.is_progress_bar_enabled()
    levels = (datasets.logging.get_verbosity(), hub_logging.get_verbosity())
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    hub_logging.set_verbosity_error()
    try:
        yield datasets
    finally:
        if bars:
            datasets.enable_progress_bars()
        datasets.logging.set_verbosity(levels[0])
        hub_logging.set_verbosity(levels[1])


def _first_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0]


def _pick_split(data, source, split: str):
    """A DatasetDict's split (a plain Dataset is its own only split)."""
    if not hasattr(data, "keys"):
        return data
    if split not in data:
        raise DataError(source, None, f"no split {split!r} (splits: {', '.join(data.keys())}); set data.split")
    return data[split]


def _iterate(dataset, source: str):
    for index, row in enumerate(dataset):
        yield Where(source, row=index), row


def rows(path: Path, split: str):
    """Rows of a local parquet file or `save_to_disk` folder, each with its row index."""
    with _quiet() as datasets:
        try:
            if path.is_dir():
                data = _pick_split(datasets.load_from_disk(str(path)), path, split)
            else:  # read straight into memory: no arrow copy in the HF cache for a local file
                import pyarrow.parquet as pq

                data = datasets.Dataset(pq.read_table(path))
        except DataError:
            raise
        except Exception as err:  # pyarrow's and datasets' own errors: many types, one line
            what = "a dataset folder (save_to_disk)" if path.is_dir() else "a parquet file"
            raise DataError(path, None, f"cannot read as {what}: {_first_line(err)}") from None
    yield from _iterate(data, str(path))


def offline() -> bool:
    import datasets

    return bool(datasets.config.HF_HUB_OFFLINE)


def hub_rows(dataset_id: str, split: str, subset: str | None):
    """Rows of a hub dataset: from the local HF cache (offline mode: HF_HUB_OFFLINE=1), else downloaded once."""
    with _quiet() as datasets:
        try:
            data = datasets.load_dataset(dataset_id, subset, split=split)
        except Exception as err:  # connection, cache and missing-split errors of datasets and huggingface_hub
            raise _hub_error(dataset_id, split, subset, err) from None
    yield from _iterate(data, dataset_id)


def _hub_error(dataset_id: str, split: str, subset: str | None, err: Exception) -> DataError:
    import datasets

    args = ", ".join([repr(dataset_id), *([repr(subset)] if subset else []), f"split={split!r}"])
    fetch = f'python -c "import datasets; datasets.load_dataset({args})"'
    cache = datasets.config.HF_DATASETS_CACHE
    cause = _first_line(err)
    if isinstance(err, ValueError) and "split" in cause.lower():  # cached, but not this split
        return DataError(dataset_id, None, f"hub dataset: {cause}; set data.split (and data.subset)")
    if offline():
        where = f"not in the local cache {cache} (offline: HF_HUB_OFFLINE=1)"
    else:
        where = f"not in the local cache {cache}, and the hub did not answer ({cause})"
    home = os.environ.get("HF_HOME", "~/.cache/huggingface")
    prefix = "HF_HUB_OFFLINE=0 " if offline() else ""
    return DataError(
        dataset_id,
        None,
        f"not a local file or folder, and hub dataset {where}; fetch it once where the hub is reachable "
        f"(HF_HOME={home} {prefix}{fetch}) or point HF_HOME at a cache that has it",
    )
