"""A child that allocates the megabytes it is asked for, then answers (for run_child's tests)."""

from __future__ import annotations

import sys
import time

import numpy as np

from inference.core.child_process import serve


def hog(request: dict) -> dict:
    block = np.ones(int(request["megabytes"]) * 1_000_000 // 8)  # touched: resident
    time.sleep(float(request.get("hold_s", 0.5)))
    return {"bytes": int(block.nbytes)}


if __name__ == "__main__":
    sys.exit(serve(hog))
