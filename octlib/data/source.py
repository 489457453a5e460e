"""Which data to use: one setting (``OCTLIB_DATA`` or the ``data`` argument), resolved in one function."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..config import DATA_ENV, Profile, get_profile, project_root
from .dataset import OCTDataset
from .errors import OCTDataError
from .folder import load_folder
from .octmnist import OCTMNIST_FILES, fetch_octmnist, load_octmnist_npz, md5sum
from .split import Splits, make_splits

_OCTMNIST = re.compile(r"^octmnist(?:[-_](?P<size>\d+))?$", re.IGNORECASE)


@dataclass(frozen=True)
class DataSource:
    """A resolved data setting.

    Attributes:
        kind: ``folder`` (OCT2017 layout) or ``octmnist`` (the download).
        path: the folder, for ``folder``.
        size: OCTMNIST image size (28, 64, 128, 224), for ``octmnist``.
        spec: the setting as given.
        origin: where the setting came from: ``argument``, ``OCTLIB_DATA`` or ``default``.
    """

    kind: str
    spec: str
    origin: str
    path: Path | None = None
    size: int | None = None

    def describe(self) -> str:
        where = self.path if self.kind == "folder" else f"OCTMNIST {self.size} px"
        return f"{where} (from {self.origin})"


def resolve_source(data: str | os.PathLike | None = None, profile: Profile | None = None) -> DataSource:
    """Resolve the data setting: the ``data`` argument, else ``OCTLIB_DATA``, else the OCTMNIST download.

    Values: a folder path (OCT2017 layout; a relative path is looked up from the working directory, then from the
    project root), ``octmnist`` (28 px) or ``octmnist-64`` / ``-128`` / ``-224``.
    With no setting, the default is OCTMNIST at the profile's image size when it is published at that size
    (else 64 px).
    """
    profile = profile or get_profile()
    if data is not None and str(data).strip():
        spec, origin = str(data).strip(), "argument"
    elif os.environ.get(DATA_ENV, "").strip():
        spec, origin = os.environ[DATA_ENV].strip(), DATA_ENV
    else:
        size = profile.image_size if profile.image_size in OCTMNIST_FILES else 64
        return DataSource(kind="octmnist", spec=f"octmnist-{size}", origin="default", size=size)
    m = _OCTMNIST.match(spec)
    if m:
        size = int(m["size"] or 28)
        if size not in OCTMNIST_FILES:
            raise OCTDataError(f"{origin}={spec!r}: OCTMNIST sizes are {sorted(OCTMNIST_FILES)}; use e.g. "
                               "octmnist-64.")
        return DataSource(kind="octmnist", spec=spec, origin=origin, size=size)
    path = Path(spec).expanduser()
    tried = [path.resolve()]
    if not path.is_absolute() and not path.exists():  # a relative setting may be relative to the project root
        path = project_root() / path
        tried.append(path.resolve())
    if not path.exists():
        raise OCTDataError(
            f"{origin}={spec!r} (looked in {', '.join(map(str, dict.fromkeys(tried)))}) "
            f"is neither an existing folder nor one of octmnist, octmnist-64, octmnist-128, "
            f"octmnist-224. Set {DATA_ENV} to an OCT2017 folder (holding train/ and/or test/), e.g. the sample "
            f"`../shared/data/oct2017-sample`, or to octmnist-64 to download OCTMNIST.", [path])
    return DataSource(kind="folder", spec=spec, origin=origin, path=path.resolve())


def load_dataset(data: str | os.PathLike | None = None, profile: Profile | str | None = None, *,
                 skip_corrupt: bool = False, use_cache: bool = True, progress: bool = True) -> OCTDataset:
    """Load the whole source (all its splits) as one :class:`OCTDataset`, preprocessed for ``profile``.

    Args:
        data: the data setting (see :func:`resolve_source`); ``None`` reads ``OCTLIB_DATA``.
        profile: a :class:`~octlib.config.Profile` or its name; ``None`` reads ``OCTLIB_PROFILE``.
        skip_corrupt: skip unreadable images instead of raising; they are listed in ``info["skipped"]``.
        use_cache: use the decoded-array cache (folder sources).
        progress: show progress bars.
    """
    profile = profile if isinstance(profile, Profile) else get_profile(profile)
    source = resolve_source(data, profile)
    if source.kind == "folder":
        ds = load_folder(source.path, profile.image_size, profile.resize, skip_corrupt=skip_corrupt,
                         use_cache=use_cache, progress=progress)
    else:
        path = fetch_octmnist(source.size, progress=progress)
        ds = load_octmnist_npz(path, fingerprint=md5sum(path))
    ds.info["setting"] = {"spec": source.spec, "origin": source.origin, "kind": source.kind}
    return ds


def load_splits(data: str | os.PathLike | None = None, profile: Profile | str | None = None, *,
                policy: str | None = None, seed: int = 0, skip_corrupt: bool = False,
                use_cache: bool = True, progress: bool = True) -> Splits:
    """Load the data and split it by patient: the one call notebooks use.

    ``policy`` defaults to the profile's ``split_policy`` (``official``). Fractions and the per-split cap come
    from the profile. The returned :class:`~octlib.data.split.Splits` has been checked for patient leakage.
    """
    profile = profile if isinstance(profile, Profile) else get_profile(profile)
    ds = load_dataset(data, profile, skip_corrupt=skip_corrupt, use_cache=use_cache, progress=progress)
    return split_with_profile(ds, profile, policy=policy, seed=seed)


def split_with_profile(ds: OCTDataset, profile: Profile | str | None = None, *, policy: str | None = None,
                       seed: int = 0) -> Splits:
    """Split an already loaded dataset by patient with the profile's fractions and cap (see :func:`load_splits`)."""
    profile = profile if isinstance(profile, Profile) else get_profile(profile)
    splits = make_splits(ds, policy or profile.split_policy, val_fraction=profile.val_fraction,
                         test_fraction=profile.test_fraction, seed=seed, max_per_split=profile.max_per_split)
    splits.info.update({"profile": profile.name, "image_size": ds.image_size, "resize": ds.info.get("resize"),
                        "setting": ds.info.get("setting"), "skipped": ds.info.get("skipped", [])})
    return splits
