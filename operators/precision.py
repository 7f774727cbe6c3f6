"""The precision the CLIP towers run in, chosen from the device and the CPU's instructions."""

from __future__ import annotations

EMBED_DTYPES = ("auto", "fp32", "bf16", "fp16")


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (x86 AVX512-BF16 or AMX-BF16, Arm
    BF16), from the text of /proc/cpuinfo (read when None; False where it cannot be read).
    Elsewhere bf16 matrix products are emulated and slower than fp32."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as f:
                cpuinfo = f.read()
        except OSError:
            return False
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            flags = set(value.split())
            return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})
    return False


def embed_dtype(requested: str, device: str, cpuinfo: str | None = None) -> str:
    """The precision the image and text towers run in: "fp16", "bf16" or "fp32".

    Takes the requested precision (one of EMBED_DTYPES) and the device ("cuda..." or "cpu").
    "auto" is fp16 on a GPU, bf16 on a CPU with native bf16 (about 3.5x fp32 there), else
    fp32. fp16 on a CPU is refused (ValueError): it has no fast kernels there.
    """
    if requested not in EMBED_DTYPES:
        raise ValueError(f"embedding precision must be one of {', '.join(EMBED_DTYPES)}, got {requested!r}")
    gpu = device.startswith("cuda")
    if requested == "fp16" and not gpu:
        raise ValueError("fp16 embedding needs a GPU; use bf16 or fp32 on a CPU")
    if requested != "auto":
        return requested
    if gpu:
        return "fp16"
    return "bf16" if cpu_has_native_bf16(cpuinfo) else "fp32"


