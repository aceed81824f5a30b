"""Process-wide learner settings: applied only when asked, in a child process here (they are global)."""

import platform
import subprocess
import sys

CHILD = """
import torch
from robostack.rl.runtime import keep_freed_memory
applied = keep_freed_memory()
x = torch.ones(8 << 20)  # 32 MiB: an mmap block by default, heap memory once applied
del x
y = torch.ones(8 << 20)
print(applied, float(y.sum()))
"""


def test_keep_freed_memory_applies_and_allocations_still_work():
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=120, check=True)
    applied, total = out.stdout.split()
    assert float(total) == 8 << 20
    if platform.libc_ver()[0] == "glibc":
        assert applied == "True"
