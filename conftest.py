"""Shared pytest set-up for tests/ and the notebooks run by nbval.

Notebook kernels inherit this process's environment. Unless the caller chose folders, figures, results and model
artifacts from a test run go to a temporary folder, so running the tests never overwrites the committed figures.
``OCTLIB_HEADLESS=1`` makes interactive cells (the explorer of notebook 61) draw static figures.
"""

import os
import tempfile


def pytest_configure(config):
    os.environ.setdefault("OCTLIB_HEADLESS", "1")  # notebooks under nbval: static figures instead of widgets
    scratch = None
    for var, sub in (("OCTLIB_FIGURES", "figures"), ("OCTLIB_RESULTS", "results"),
                     ("OCTLIB_ARTIFACTS", "artifacts")):
        if not os.environ.get(var):
            scratch = scratch or tempfile.mkdtemp(prefix="octlib-test-")
            os.environ[var] = os.path.join(scratch, sub)
