"""Trained models on disk: ``artifacts/<name>-<key>/model.keras`` plus a JSON sidecar ``model.json``.

The key hashes everything that determines the model: the training config, image size and resize rule, the seed,
the data fingerprint and the exact train/val/test membership (a hash of the file lists), and
:data:`ARTIFACT_VERSION`. A notebook asking for a model (:func:`get_or_train`) therefore gets the cached one
only when all of these match; otherwise it trains a new one (``retrain="auto"``, the default, so that every
notebook also runs on its own) or, with ``retrain="never"``, stops naming the notebook that trains it (:func:`octlib.series.trainer`). A model is
never loaded under another key: the sidecar's key and the ``.keras`` file's SHA-256 are checked before Keras
sees the file, and loading uses ``safe_mode=True``. Writes are atomic (a temporary folder, then a rename).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from .config import TrainConfig, artifacts_dir, trades_label
from .digests import file_digest, stored_weights_digest, weights_digest
from .provenance import hardware, library_versions
from .results import to_jsonable
from .series import trainer

#: Bump when the model-building or training code changes in a way that changes the trained model.
ARTIFACT_VERSION = 2  # 2: augmentation draws in a deterministic order
RETRAIN_MODES = ("auto", "never", "always")


class ArtifactError(RuntimeError):
    """A model artifact is missing, corrupt or does not match what was asked for."""


@dataclass
class TrainedModel:
    """A model with its sidecar. ``cached`` says whether it was loaded (True) or trained now (False)."""

    model: object
    sidecar: dict
    path: Path
    cached: bool

    @property
    def key(self) -> str:
        return self.sidecar["key"]

    def training_summary(self) -> dict:
        """How it was trained, from its sidecar: epochs run, the epoch kept and what selected it, the validation
        accuracy there (robust validation accuracy for a model validated under attack), training seconds, optimizer
        throughput in training images per second."""
        t = self.sidecar["training"]
        history, best = t.get("history", {}), t.get("best_epoch")
        val = history.get("val_accuracy") or []
        return {"epochs": t["epochs_run"], "kept epoch": best, "selected on": t.get("selected_on", "validation loss"),
                "validation accuracy (kept epoch)": float(val[best - 1]) if best and len(val) >= best else None,
                "training s": t["train_seconds"], "images/s": t.get("images_per_second")}


def split_hash(splits) -> str:
    """Hash of which images are in train, val and test."""
    h = hashlib.sha256()
    for name, part in splits.items():
        h.update(name.encode())
        h.update("\n".join(sorted(map(str, part.paths))).encode())
    return h.hexdigest()


def artifact_key(splits, cfg: TrainConfig, *, seed: int, extra: dict | None = None) -> tuple[str, dict]:
    """The artifact key and the JSON description it hashes."""
    train = splits.train
    spec = {
        "artifact_version": ARTIFACT_VERSION, "train_config": cfg.key_dict(), "seed": int(seed),
        "image_size": int(train.image_size), "resize": train.info.get("resize"),
        "data_fingerprint": splits.info.get("fingerprint"), "split_hash": split_hash(splits),
        "policy": splits.info.get("policy"), "extra": extra or {},
    }
    text = json.dumps(to_jsonable(spec), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest(), spec


def _sha256(path: Path) -> str:
    return file_digest(path, "sha256")


def artifact_dir(name: str, key: str, root: Path | None = None) -> Path:
    return Path(root or artifacts_dir()) / f"{name}-{key[:12]}"


def load_artifact(folder: Path | str, expected_key: str | None = None) -> TrainedModel:
    """Load ``folder/model.keras`` after checking its sidecar (key, file hash); a clear error otherwise."""
    import keras

    from . import models  # noqa: F401 - registers octlib's custom layers for safe_mode loading

    folder = Path(folder)
    sidecar_path, model_path = folder / "model.json", folder / "model.keras"
    fix = f"Delete {folder} and run the notebook that trains it again (or pass retrain='always')."
    if not sidecar_path.is_file() or not model_path.is_file():
        raise ArtifactError(f"Model artifact {folder} is incomplete (needs model.keras and model.json). {fix}")
    try:
        sidecar = json.loads(sidecar_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"Sidecar {sidecar_path} is not valid JSON ({exc}). {fix}") from exc
    if expected_key is not None and sidecar.get("key") != expected_key:
        raise ArtifactError(f"Model artifact {folder} was trained for key {str(sidecar.get('key'))[:12]}, not the "
                            f"requested {expected_key[:12]} (different settings or data); refusing to load it. {fix}")
    if _sha256(model_path) != sidecar.get("model_sha256"):
        raise ArtifactError(f"{model_path} does not match the SHA-256 in its sidecar: the file is corrupt or was "
                            f"replaced. {fix}")
    try:
        model = keras.models.load_model(model_path, safe_mode=True, compile=False)
    except Exception as exc:  # noqa: BLE001 - any Keras failure becomes one clear message
        raise ArtifactError(f"Keras cannot load {model_path} ({type(exc).__name__}: {exc}). {fix}") from exc
    if "weights_sha256" not in sidecar:  # a sidecar written before the digest: computed, not written back
        sidecar["weights_sha256"] = weights_digest(model)
    return TrainedModel(model=model, sidecar=sidecar, path=folder, cached=True)


def save_artifact(model, sidecar: dict, name: str, key: str, root: Path | None = None) -> Path:
    """Write model + sidecar into a temporary folder, then rename it to ``<name>-<key>`` (atomic)."""
    final = artifact_dir(name, key, root)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}."))
    try:
        model.save(tmp / "model.keras")
        sidecar = {**sidecar, "key": key, "model_sha256": _sha256(tmp / "model.keras"),
                   "weights_sha256": weights_digest(model)}
        (tmp / "model.json").write_text(json.dumps(to_jsonable(sidecar), indent=2, allow_nan=False) + "\n")
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def get_or_train(splits, cfg: TrainConfig, *, name: str = "cnn", seed: int = 0, retrain: str = "auto",
                 verbose: int = 2, extra: dict | None = None, root: Path | None = None,
                 initial: TrainedModel | None = None, kind: str = "victim") -> TrainedModel:
    """The trained model for these splits and settings: cached when it exists, else trained and cached.

    Args:
        splits: :class:`octlib.data.Splits` (train and val are used for training, val for model selection).
        cfg: the training config (normally ``profile.train``).
        name: artifact name (``cnn-official``, ``cnn-ls0.1``...); the key decides reuse, not the name.
        seed: the training seed.
        retrain: ``auto`` (load if cached, else train), ``never`` (load or raise :class:`ArtifactError`),
            ``always`` (train and overwrite).
        verbose: Keras ``fit`` verbosity (2: one line per epoch).
        extra: further settings that change the model (e.g. a defence's parameters); they enter the key.
        initial: a trained model to fine-tune from (:func:`octlib.training.train`); its weights digest enters the
            key, so another starting model never reuses this one's artifact.
        kind: what the model is (:data:`octlib.series.TRAINERS`): the notebook a missing model's message names.
    """
    from .metrics import score_model
    from .training import train

    if retrain not in RETRAIN_MODES:
        raise ValueError(f"`retrain` must be one of {RETRAIN_MODES}, got {retrain!r}.")
    if initial is not None:
        start = {"artifact": initial.path.name, "weights_sha256": weights_digest(initial.model)}
        extra = {**(extra or {}), "initial": start}
    key, spec = artifact_key(splits, cfg, seed=seed, extra=extra)
    folder = artifact_dir(name, key, root)
    if retrain != "always" and not folder.exists():  # the key decides reuse: the same model under another name
        same_key = sorted(folder.parent.glob(f"*-{key[:12]}")) if folder.parent.is_dir() else []
        folder = same_key[0] if same_key else folder
    if retrain != "always" and folder.exists():
        trained = load_artifact(folder, expected_key=key)
        print(f"Loaded cached model {folder.name} (trained {trained.sidecar.get('created')}, "
              f"{trained.sidecar['training']['epochs_run']} epochs); key matches settings and data.")
        return trained
    if retrain == "never":
        raise ArtifactError(f"No trained model {folder.name} for these settings and data in {folder.parent}. "
                            f"Run {trainer(kind)} first (same profile, data and seed).")
    print(f"Training {name} ({folder.name}): no cached model for these settings and data.")
    model, info = train(splits.train.images, splits.train.labels, splits.val.images, splits.val.labels, cfg,
                        image_size=splits.train.image_size, seed=seed, verbose=verbose,
                        initial=initial.model if initial is not None else None)
    sidecar = {
        "name": name, "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "spec": spec, "config_hash": key,
        "data": {"source": splits.info.get("source"), "fingerprint": splits.info.get("fingerprint"),
                 "setting": splits.info.get("setting")},
        "split": {"policy": splits.info.get("policy"), "counts": splits.counts(), "hash": spec["split_hash"]},
        "training": info,
        "metrics": {"val": score_model(model, splits.val.x, splits.val.labels),
                    "test": score_model(model, splits.test.x, splits.test.labels)},
        "versions": library_versions(), "hardware": hardware(),
    }
    folder = save_artifact(model, sidecar, name, key, root)
    trained = load_artifact(folder, expected_key=key)  # the round trip proves the cached file loads
    trained.cached = False
    return trained


#: The release-shift study's recipe variants (notebook 11): each changes one training setting of the profile's
#: recipe under the ``official`` policy; ``default`` is the recipe itself (the official-policy victim, from the cache).
SHIFT_VARIANTS: dict[str, dict] = {
    "default": {},
    "no per-image norm": {"input_norm": "none"},
    "+ blur/noise augmentation": {"augment": "standard+blur"},
    "no augmentation": {"augment": "none"},
}


def release_shift_study(split, cfg: TrainConfig, variants, *, seed: int = 0, retrain: str = "auto",
                        name: str = "cnn-official-shift", root: Path | None = None) -> dict:
    """Train (or load) the ``default`` recipe and each of ``variants`` (names of :data:`SHIFT_VARIANTS`) on
    ``split`` and score them on its validation and test scans: ``{variant: row}``, each row with validation and
    test accuracy (95% Wilson interval, n), epochs run, training seconds, whether it came from the cache, the
    artifact's folder name and the per-scan test outcomes (``test_correct``, for paired tests against
    ``default``) with ``paired_vs_default``, the exact McNemar test against ``default`` on those scans
    (:func:`octlib.stats.mcnemar`). Model selection inside each training watches validation patients only."""
    from dataclasses import replace

    from .metrics import accuracy, predict_logits
    from .stats import mcnemar

    unknown = [v for v in variants if v not in SHIFT_VARIANTS]
    if unknown:
        raise ValueError(f"Unknown release-shift variant(s) {unknown}: use names of octlib.artifacts.SHIFT_VARIANTS "
                         f"({', '.join(SHIFT_VARIANTS)}) in the profile's `shift_variants` or the notebook's VARIANTS.")
    rows = {}
    for label in ("default", *(v for v in dict.fromkeys(variants) if v != "default")):
        trained = get_or_train(split, replace(cfg, **SHIFT_VARIANTS[label]), name=name, seed=seed, retrain=retrain,
                               verbose=0, root=root, kind="shift")
        val = accuracy(split.val.labels, predict_logits(trained.model, split.val.x).argmax(1))
        pred = predict_logits(trained.model, split.test.x).argmax(1)
        test = accuracy(split.test.labels, pred)
        training = trained.sidecar["training"]
        rows[label] = {"val accuracy": val["value"], "val ci_low": val["ci_low"], "val ci_high": val["ci_high"],
                       "test accuracy": test["value"], "test ci_low": test["ci_low"], "test ci_high": test["ci_high"],
                       "n_val": val["n"], "n_test": test["n"], "epochs": training["epochs_run"],
                       "selected_on": training.get("selected_on"), "train_seconds": training.get("train_seconds"),
                       "cached": trained.cached, "artifact": trained.path.name,
                       "test_correct": (pred == split.test.labels).astype(int).tolist()}
    default = [bool(v) for v in rows["default"]["test_correct"]]
    for row in rows.values():
        row["paired_vs_default"] = mcnemar([bool(v) for v in row["test_correct"]], default)
    return rows


def get_or_train_seeds(splits, cfg: TrainConfig, seeds, *, name: str, retrain: str = "auto",
                       trained: dict | None = None, verbose: int = 0) -> dict:
    """``{seed: TrainedModel}``: the same recipe and split under several training seeds, each through
    :func:`get_or_train` (cached when it exists); ``trained`` holds models already loaded (e.g. the study victim)."""
    trained = dict(trained or {})
    return {int(s): trained[s] if s in trained else get_or_train(splits, cfg, name=name, seed=int(s), retrain=retrain,
                                                                 verbose=verbose, kind="seed") for s in seeds}


#: The retrained defence models' kinds (:func:`get_or_train_defence`).
DEFENCE_KINDS = ("label_smoothing", "noise", "adversarial", "trades")


def get_or_train_defence(splits, profile, kind: str, value: float, *, seed: int = 0, retrain: str = "auto",
                         verbose: int = 0):
    """A retrained (defended) victim, one recipe for every notebook that uses it, cached like the victim.

    ``kind`` is ``label_smoothing`` (``value``: the factor), ``noise`` (Gaussian input noise of σ ``value`` in [0, 1]
    pixel units, validated under that noise), ``adversarial`` (PGD adversarial training at ε ``value``/255 with
    the profile's ``adv_steps``, selected on robust validation accuracy) or ``trades`` (TRADES with the profile's
    ``trades_beta`` at the same ε and steps, selected the same way). Everything else is the victim's recipe;
    the epochs are ``defence.retrain_epochs`` (``adv_epochs`` for adversarial training and TRADES), else the victim's. A kind
    in ``defence.finetune`` starts from the study victim's weights instead (loaded, or trained if missing) and
    trains ``defence.finetune_epochs`` at ``defence.finetune_learning_rate`` (else a tenth of the victim's). The
    artifact is named ``cnn-<policy>-ls<v>``, ``-noise<v>``, ``-pgdat<v>`` or ``-trades<v>-b<β>``.
    """
    d, train, policy = profile.defence, profile.train, splits.info["policy"]
    initial = None
    if kind in d.finetune:
        initial = get_or_train(splits, train, name=victim_name(policy), seed=seed,
                               retrain="never" if retrain == "never" else "auto", verbose=verbose)
        train = replace(train, learning_rate=d.finetune_learning_rate or train.learning_rate / 10)
    epochs = d.epochs_of(kind, train.epochs)
    if kind == "label_smoothing":
        cfg, tag = replace(train, label_smoothing=value, epochs=epochs), f"ls{value:g}"
    elif kind == "noise":
        cfg = replace(train, noise_sigma=value, noise_fraction=d.noise_fraction, validate_under_threat=True,
                      epochs=epochs)
        tag = f"noise{value:g}" + (f"-mix{d.noise_fraction:g}" if d.noise_fraction < 1 else "")
    elif kind == "adversarial":
        cfg = replace(train, adv_eps_255=value, adv_steps=d.adv_steps, validate_under_threat=True, epochs=epochs)
        tag = f"pgdat{value:g}"
    elif kind == "trades":
        cfg = replace(train, adv_eps_255=value, adv_steps=d.adv_steps, trades_beta=d.trades_beta,
                      validate_under_threat=True, epochs=epochs)
        tag = f"trades{value:g}-b{d.trades_beta:g}"
    else:
        raise ValueError(f"Unknown defence model kind {kind!r}: use {DEFENCE_KINDS}.")
    return get_or_train(splits, cfg, name=f"{victim_name(policy)}-{tag}", seed=seed, retrain=retrain,
                        verbose=verbose, initial=initial, kind=kind)


def defence_label(kind: str, value: float, profile) -> str:
    """The name a retrained defence model has in tables and records (notebooks 42, 43, 45 and 50-53)."""
    if kind == "label_smoothing":
        return f"label smoothing {value:g}"
    if kind == "noise":
        return f"noise-trained σ={value:g}"
    if kind == "adversarial":
        steps = profile.defence.adv_steps
        return f"{'FGSM-RS' if steps == 1 else f'PGD-{steps}'} adversarial training ε={value:g}/255"
    if kind == "trades":
        return trades_label(replace(profile.defence, adv_eps_255=value))
    raise ValueError(f"Unknown defence model kind {kind!r}: use {DEFENCE_KINDS}.")


def defence_models(splits, profile, *, seed: int = 0, retrain: str = "auto", verbose: int = 0) -> dict:
    """Every retrained defence model of the profile, name -> artifact (:func:`get_or_train_defence`): label
    smoothing at each factor, noise training at each input-noise σ, PGD adversarial training and TRADES; trained if
    missing."""
    d = profile.defence
    specs = ([("label_smoothing", v) for v in d.label_smoothing] + [("noise", s) for s in d.input_noise_sigmas]
             + [("adversarial", d.adv_eps_255), ("trades", d.adv_eps_255)])
    return {defence_label(kind, value, profile): get_or_train_defence(splits, profile, kind, value, seed=seed,
                                                                      retrain=retrain, verbose=verbose)
            for kind, value in specs}


def victim_name(policy: str) -> str:
    """Artifact name of the victim trained under a split policy (``cnn-official``, ``cnn-pooled``)."""
    return f"cnn-{policy}"


def load_victim(data=None, profile=None, *, policy: str | None = None, seed: int = 0, retrain: str = "auto",
                verbose: int = 2):
    """The study's victim: ``(splits, trained)`` for the profile's data, split policy and training settings.

    The same call as notebook 10's, so it returns the model that notebook trained (cached); with
    ``retrain="auto"`` a notebook run on its own trains it first.
    """
    from .config import Profile, get_profile
    from .data import load_dataset, split_with_profile

    profile = profile if isinstance(profile, Profile) else get_profile(profile)
    policy = policy or profile.split_policy
    splits = split_with_profile(load_dataset(data, profile), profile, policy=policy, seed=seed)
    trained = get_or_train(splits, profile.train, name=victim_name(policy), seed=seed, retrain=retrain,
                           verbose=verbose)
    return splits, trained


#: The manifest inside an exported model bundle (:func:`export_models`).
BUNDLE_MANIFEST = "octlib-models.json"


def export_models(out: Path | str, names=None, *, root: Path | None = None) -> tuple[Path, str]:
    """Pack trained models (``names``: artifact folder names such as ``cnn-pooled-826fd8fb03bd``; ``None``: every
    model in the store) into one ``.tar.gz`` that a release can carry, with a manifest of every file's SHA-256 and
    each model's key and weights digest. Returns ``(path, SHA-256 of the tarball)`` and writes
    ``<out>.sha256`` beside it: publish that digest with the file, :func:`import_models` checks it.

    A model trained here and imported on another machine is the same model: a victim trained from the same key on
    another CPU is not (TensorFlow's floating-point path differs between CPUs), so the committed reference is
    reproduced elsewhere only with its models imported."""
    store = Path(root or artifacts_dir())
    available = sorted(p.name for p in store.glob("*-*") if (p / "model.json").is_file()) if store.is_dir() else []
    names = available if names is None else list(names)
    missing = [n for n in names if n not in available]
    if missing or not names:
        raise ArtifactError(f"No trained model {missing or ''} in {store} (it holds {available or 'none'}): train "
                            "them first (python -m octlib run) or name models that are there.")
    entries = []
    for name in names:
        trained = load_artifact(store / name)  # checks the sidecar and the file's hash before packing
        entries.append({"name": name, "key": trained.sidecar["key"],
                        "weights_sha256": trained.sidecar["weights_sha256"],
                        "files": {f: _sha256(store / name / f) for f in ("model.keras", "model.json")}})
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    manifest = {"format": 1, "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "hardware": hardware(), "models": entries}
    tmp = out.with_name(out.name + ".part")
    try:
        with tarfile.open(tmp, "w:gz") as tar:
            data = (json.dumps(to_jsonable(manifest), indent=2) + "\n").encode()
            info = tarfile.TarInfo(BUNDLE_MANIFEST)
            info.size, info.mtime = len(data), 0
            tar.addfile(info, io.BytesIO(data))
            for e in entries:
                for f in e["files"]:
                    tar.add(store / e["name"] / f, arcname=f"{e['name']}/{f}")
        os.replace(tmp, out)
    finally:
        Path(tmp).unlink(missing_ok=True)
    digest = _sha256(out)
    out.with_name(out.name + ".sha256").write_text(f"{digest}  {out.name}\n")
    return out, digest


def import_models(source: str | Path, sha256: str | None = None, *, root: Path | None = None,
                  progress: bool = False) -> list[str]:
    """Install the models of a bundle written by :func:`export_models` into the model store, so that notebooks
    find them under their keys instead of training them. ``source``: a path or an ``http(s)://`` URL; ``sha256``:
    the bundle's published digest (required for a URL, checked for a path when given). Every file is checked
    against the bundle's manifest and every model loaded through its sidecar check before it is installed; a
    model already in the store is kept when identical and refused when different. Returns the installed names."""
    from .data.octmnist import download

    store = Path(root or artifacts_dir())
    store.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=store, prefix=".import."))
    try:
        text = str(source)
        if text.startswith(("http://", "https://")):
            if not sha256:
                raise ArtifactError(f"Importing models from {text} needs the bundle's published SHA-256 (--sha256): "
                                    "a download is installed only when its digest checks out.")
            bundle = download(text, work / "bundle.tar.gz", sha256.lower(), algorithm="sha256", progress=progress,
                              fix="Check the URL, or download the bundle by hand and import the file.")
        else:
            bundle = Path(source)
            if not bundle.is_file():
                raise ArtifactError(f"No model bundle at {bundle}: give the .tar.gz written by "
                                    "`python -m octlib models export` or its URL.")
            if sha256 and _sha256(bundle) != sha256.lower():
                raise ArtifactError(f"{bundle} has SHA-256 {_sha256(bundle)}, not the expected {sha256}: a different "
                                    "or corrupted file; download it again.")
        try:
            with tarfile.open(bundle, "r:gz") as tar:
                tar.extractall(work / "x", filter="data")  # refuses absolute paths, links out, devices
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise ArtifactError(f"{bundle} is not a model bundle (.tar.gz): {exc}.") from exc
        try:
            manifest = json.loads((work / "x" / BUNDLE_MANIFEST).read_text())
            entries = manifest["models"]
        except (OSError, ValueError, KeyError) as exc:
            raise ArtifactError(f"{bundle} has no readable {BUNDLE_MANIFEST}: not written by "
                                "`python -m octlib models export`.") from exc
        installed = []
        for e in entries:
            folder = work / "x" / e["name"]
            for f, digest in e["files"].items():
                if not (folder / f).is_file() or _sha256(folder / f) != digest:
                    raise ArtifactError(f"{bundle}: {e['name']}/{f} is missing or does not match the bundle's "
                                        "manifest; nothing was installed.")
            trained = load_artifact(folder, expected_key=e["key"])
            if trained.sidecar.get("weights_sha256") != e["weights_sha256"]:
                raise ArtifactError(f"{bundle}: {e['name']} has other weights than its manifest names; nothing "
                                    "was installed.")
            final = store / e["name"]
            if final.exists():
                if stored_weights_digest(e["name"], store) != e["weights_sha256"]:
                    raise ArtifactError(f"{final} holds another model under the same name (trained here, perhaps on "
                                        "another CPU): move it away to import this one; nothing was installed.")
                continue
            installed.append(e["name"])
        for name in installed:
            os.replace(work / "x" / name, store / name)
        return installed
    finally:
        shutil.rmtree(work, ignore_errors=True)
