"""octlib: helpers for the OCT adversarial-robustness notebook series.

Importing ``octlib`` is cheap: TensorFlow is imported only by the modules that need it.
"""

import os as _os
import warnings as _warnings
from importlib import metadata as _metadata

# TensorFlow's C++ INFO/WARNING lines clutter notebooks; errors still show. (The oneDNN notice that TF prints while
# it is imported comes before its log settings are read and still appears.) Set TF_CPP_MIN_LOG_LEVEL yourself
# (0 = all) before importing octlib to see everything.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# ART announces on import that PyTorch-only certification tools are unavailable; this study does not use them.
_warnings.filterwarnings("ignore", message="PyTorch not found. Not importing DeepZ", category=UserWarning)

from .config import Profile, adversarial_training, get_profile, set_seed
from .labels import CLASSES, URGENT_CLASSES

try:
    __version__ = _metadata.version("octlib")
except _metadata.PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

__all__ = ["CLASSES", "URGENT_CLASSES", "Profile", "adversarial_training", "get_profile", "set_seed", "__version__"]
