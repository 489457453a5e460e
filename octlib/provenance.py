"""What ran where: library versions and hardware, recorded in every results file and model sidecar."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata

#: Distributions whose versions are recorded (missing ones are recorded as ``None``).
TRACKED_PACKAGES = (
    "octlib", "numpy", "scipy", "scikit-learn", "pillow", "pandas", "matplotlib", "seaborn",
    "tensorflow", "tensorflow-cpu", "keras", "adversarial-robustness-toolbox",
)


def library_versions() -> dict[str, str | None]:
    """Installed versions of the libraries that shape results (``None`` where not installed)."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _memory_gib() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        return None


def gpu_devices() -> list[str]:
    """Names of the GPUs TensorFlow sees; empty when TensorFlow is not imported yet or sees none.

    TensorFlow is not imported here on purpose (it costs seconds and ~750 MB): code that trains imports it first.
    """
    tf = sys.modules.get("tensorflow")
    if tf is None:
        return []
    try:
        gpus = tf.config.list_physical_devices("GPU")
        names = []
        for gpu in gpus:
            details = tf.config.experimental.get_device_details(gpu)
            names.append(details.get("device_name", gpu.name))
        return names
    except Exception:  # noqa: BLE001 - provenance must never break an experiment
        return []


#: CPU features that change which numeric kernels oneDNN/Eigen run (and so the rounding of a training run).
CPU_FEATURES = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_bf16",
                "amx_tile")


def cpu_description(cpuinfo: str | None = None) -> dict:
    """``{"model": <CPU model name or None>, "features": [...]}``: the CPU's model name and which of
    :data:`CPU_FEATURES` it has, read from ``/proc/cpuinfo`` on Linux (``cpuinfo`` text for tests); on other
    systems the model from :func:`platform.processor` and no feature list."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
                cpuinfo = fh.read()
        except OSError:
            return {"model": platform.processor() or None, "features": None}
    model, flags = None, set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model is None:
            model = value.strip() or None
        elif key in ("flags", "Features") and not flags:
            flags = set(value.split())
    return {"model": model, "features": [f for f in CPU_FEATURES if f in flags]}


def hardware() -> dict:
    """Machine description: platform, CPU (model and the features that pick numeric kernels), CPU count, memory,
    and GPUs if TensorFlow has been imported."""
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "cpu": cpu_description(),
        "cpu_count": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "gpus": gpu_devices(),
    }


def code_version(root=None) -> dict:
    """The code that ran: ``{"commit": <git HEAD or None>, "dirty": <uncommitted changes to the code>}``, where the
    code is ``octlib/``, ``notebooks/`` and ``pyproject.toml`` (figures and results a run writes do not count).

    ``commit`` is ``None`` outside a git checkout (an installed wheel) or without git; ``dirty`` is then ``None``.
    """
    import subprocess
    from pathlib import Path

    root = Path(root) if root else Path(__file__).resolve().parent.parent

    def git(*args):
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)

    try:
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return {"commit": None, "dirty": None}
        status = git("status", "--porcelain", "--untracked-files=no", "--", "octlib", "notebooks", "pyproject.toml")
        return {"commit": head.stdout.strip(), "dirty": bool(status.stdout.strip()) if status.returncode == 0 else None}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
