"""The machine a number was measured on: CPU, cores, ISA extensions, OS, versions, GPU.

Every latency result carries this fingerprint so that a baseline measured elsewhere is recognised as
such, and so that INT8 results can say whether the CPU has the instructions that make INT8 fast.
"""

from __future__ import annotations

import functools
import os
import platform
import subprocess
import sys
from importlib import metadata

#: ISA extensions that matter for inference speed: name -> the /proc/cpuinfo flags that show it.
_ISA = {
    "avx2": ("avx2",), "avx512f": ("avx512f",), "avx512_vnni": ("avx512_vnni",), "avx_vnni": ("avx_vnni",),
    "avx512_bf16": ("avx512_bf16",), "amx": ("amx_tile",), "neon": ("asimd", "neon"), "neon_dotprod": ("asimddp",),
}
#: Fields that must agree for two measurements to be comparable.
COMPARABLE = ("cpu", "cores", "isa", "system", "backend_versions")


@functools.lru_cache(maxsize=1)
def _cpuinfo() -> tuple[str, frozenset]:
    model, flags = "", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip().lower()
                if key in ("model name", "hardware", "cpu model") and not model:
                    model = value.strip()
                elif key in ("flags", "features"):
                    flags.update(value.split())
    except OSError:
        pass
    if not model and sys.platform == "darwin":
        model = _run(["sysctl", "-n", "machdep.cpu.brand_string"])
        if platform.machine() == "arm64":
            flags.update({"asimd", "asimddp"})  # every Apple silicon core has NEON with dot products
    return model or platform.processor() or platform.machine(), frozenset(flags)


def cpu_isa() -> list[str]:
    """The inference-relevant ISA extensions of this CPU, e.g. ['avx2', 'avx512_vnni']."""
    _, flags = _cpuinfo()
    return [name for name, markers in _ISA.items() if flags.intersection(markers)]


def _run(command: list[str]) -> str:
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def fingerprint(backend: str = "onnxruntime", device: str = "cpu", threads: int | None = None,
                tools: tuple[str, ...] = ("onnxruntime", "onnxruntime-gpu")) -> dict:
    """This machine, and the versions of ``tools`` (the packages the measured runtime computes with)."""
    model, _ = _cpuinfo()
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    versions = {package: _version(package) for package in tools if _version(package)}
    result = {
        "cpu": model,
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "threads": threads,
        "isa": cpu_isa(),
        "system": f"{platform.system()} {platform.release()} {platform.machine()}",
        "python": platform.python_version(),
        "edgeml": _version("edgeml"),
        "backend": backend,
        "backend_versions": versions,
        "device": device,
    }
    if device.startswith(("cuda", "tensorrt")):
        query = _run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"])
        index = int(device.partition(":")[2] or 0)
        lines = query.splitlines()
        if index < len(lines):
            name, _, driver = lines[index].partition(",")
            result["gpu"], result["gpu_driver"] = name.strip(), driver.strip()
    return result


def differences(a: dict, b: dict) -> list[str]:
    """Fields on which two fingerprints differ enough to make their numbers incomparable."""
    keys = [*COMPARABLE, *(["gpu"] if "gpu" in a or "gpu" in b else [])]
    return [k for k in keys if a.get(k) != b.get(k)]
