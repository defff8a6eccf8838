from __future__ import annotations

import os

# Keep tests on the CPU and single-threaded enough to share 2 cores with the env stepping.
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
