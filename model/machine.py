"""What machine a benchmark or an evaluation ran on, for its report."""
from __future__ import annotations

import platform
from pathlib import Path


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def process_memory_mb() -> dict[str, float]:
    """This process's resident set now (``rss_mb``) and at its peak (``peak_rss_mb``), in MB,
    from /proc/self/status (empty where there is no /proc)."""
    names = {"VmRSS": "rss_mb", "VmHWM": "peak_rss_mb"}
    memory = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in names:
                memory[names[key]] = round(int(value.split()[0]) / 1024, 1)
    except OSError:
        pass
    return memory
