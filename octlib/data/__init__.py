"""``octlib.data``: the one place that knows about data.

Sources: the Kermany OCT2017 folder layout and the OCTMNIST download, chosen by ``OCTLIB_DATA`` (see
:func:`resolve_source`). Splits are by patient (:func:`make_splits`, :func:`check_no_patient_leakage`).
"""

from .dataset import OCTDataset
from .errors import OCTDataError, PatientLeakageError
from .folder import SPLITS, load_folder, preprocess, scan_folder
from .octmnist import OCTMNIST_FILES, download, fetch_octmnist, load_octmnist_npz
from .proxy import PROXY_SOURCES, ProxyPool, proxy_pool
from .source import DataSource, load_dataset, load_splits, resolve_source, split_with_profile
from .split import (POLICIES, Splits, carve_query_pool, check_no_patient_leakage, make_splits,
                    stratified_group_holdout)

__all__ = [
    "OCTDataset", "OCTDataError", "PatientLeakageError", "SPLITS", "load_folder", "preprocess", "scan_folder",
    "OCTMNIST_FILES", "download", "fetch_octmnist", "load_octmnist_npz", "DataSource", "load_dataset",
    "load_splits", "resolve_source", "split_with_profile", "POLICIES", "Splits", "carve_query_pool",
    "check_no_patient_leakage", "make_splits", "stratified_group_holdout", "PROXY_SOURCES", "ProxyPool",
    "proxy_pool",
]
