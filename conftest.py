"""Test-session settings for the whole repository (tests/ and the package's doctests)."""

import os

import torch

# Under pytest-xdist each worker gets one thread: two workers with two threads each on a 2-core
# machine would fight over the cores and run slower than one.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)

collect_ignore = ["src/genlab/__main__.py"]
