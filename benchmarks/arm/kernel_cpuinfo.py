"""The ``/proc/cpuinfo`` an arm64 Linux kernel would show for the CPU this process runs on.

Runs inside the emulated aarch64 root (standard library only). qemu-user 7.2
(Debian 12) passes the program the host's own ``/proc`` or none at all: it does not
describe the emulated core. The core does describe itself, though: user space may
read ``MIDR_EL1`` (Linux traps and emulates the ``MRS``, and so does qemu-user), and
the ELF auxiliary vector carries the kernel's feature bits (``AT_HWCAP``,
``AT_HWCAP2``). From them this module writes the text the kernel's ``c_show``
(arch/arm64/kernel/cpuinfo.c) prints, per logical CPU:

    processor       : N
    BogoMIPS        : CNTFRQ_EL0 / 500000, two decimals
    Features        : the names of the set HWCAP / HWCAP2 bits, in the kernel's order
    CPU implementer : MIDR[31:24]      CPU architecture: 8
    CPU variant     : MIDR[23:20]      CPU part        : MIDR[15:4]
    CPU revision    : MIDR[3:0]

There is no board (no ``Hardware``/``Model`` lines): qemu-user emulates a CPU, not a
Raspberry Pi. ``emulate.sh`` binds this text over the root's ``/proc/cpuinfo``, so the
runtime's own detection reads it as it would on the device.

Example (on aarch64 only):
    >>> midr = read_midr()                     # doctest: +SKIP
    >>> hex(midr)                              # under QEMU_CPU=cortex-a72
    '0x410fd083'
"""

from __future__ import annotations

import ctypes
import mmap
import os
import platform
import struct
import sys

__all__ = ["HWCAP_NAMES", "HWCAP2_NAMES", "read_midr", "read_cntfrq", "hwcaps", "features", "cpuinfo_text",
           "identity"]

AT_HWCAP, AT_HWCAP2 = 16, 26
# Linux arm64 uapi hwcap bit order (asm/hwcap.h), which is also the order of "Features".
HWCAP_NAMES = ("fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm jscvt fcma lrcpc "
               "dcpop sha3 sm3 sm4 asimddp sha512 sve asimdfhm dit uscat ilrcpc flagm ssbs sb paca pacg").split()
HWCAP2_NAMES = ("dcpodp sve2 sveaes svepmull svebitperm svesha3 svesm4 flagm2 frint svei8mm svef32mm svef64mm "
                "svebf16 i8mm bf16 dgh rng bti mte ecv afp rpres mte3 sme").split()

_MRS = {"midr_el1": 0xD5380000, "cntfrq_el0": 0xD53BE000}    # mrs x0, <reg>
_RET = 0xD65F03C0


def _mrs(register: str) -> int:
    """Execute ``mrs x0, <register>; ret`` from an executable page and return x0."""
    if platform.machine() != "aarch64":
        raise OSError(f"reading {register} needs an aarch64 CPU, this is {platform.machine() or 'unknown'}")
    page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    page.write(struct.pack("<II", _MRS[register], _RET))
    fn = ctypes.CFUNCTYPE(ctypes.c_uint64)(ctypes.addressof(ctypes.c_char.from_buffer(page)))
    value = int(fn())
    del fn
    return value


def read_midr() -> int:
    """MIDR_EL1 of the CPU: implementer, variant, architecture, part number, revision."""
    return _mrs("midr_el1")


def read_cntfrq() -> int:
    """CNTFRQ_EL0: the generic timer's frequency in Hz (the kernel derives BogoMIPS from it)."""
    return _mrs("cntfrq_el0")


def hwcaps() -> tuple[int, int]:
    """(AT_HWCAP, AT_HWCAP2) from the auxiliary vector."""
    libc = ctypes.CDLL(None)
    libc.getauxval.restype = ctypes.c_ulong
    libc.getauxval.argtypes = [ctypes.c_ulong]
    return int(libc.getauxval(AT_HWCAP)), int(libc.getauxval(AT_HWCAP2))


def features(hwcap: int, hwcap2: int) -> list[str]:
    """Feature names of the set bits, kernel order; unnamed bits as ``hwcap2_bitN``."""
    names = [n for i, n in enumerate(HWCAP_NAMES) if hwcap >> i & 1]
    for i in range(64):
        if hwcap2 >> i & 1:
            names.append(HWCAP2_NAMES[i] if i < len(HWCAP2_NAMES) else f"hwcap2_bit{i}")
    return names


def identity() -> dict:
    """What the CPU says about itself: MIDR fields, features, timer frequency."""
    midr = read_midr()
    hw, hw2 = hwcaps()
    try:
        freq = read_cntfrq()
    except OSError:
        freq = 0
    return {"midr": f"{midr:#010x}", "implementer": f"{midr >> 24 & 0xFF:#x}", "variant": f"{midr >> 20 & 0xF:#x}",
            "architecture": midr >> 16 & 0xF, "part": f"{midr >> 4 & 0xFFF:#05x}", "revision": midr & 0xF,
            "hwcap": f"{hw:#x}", "hwcap2": f"{hw2:#x}", "features": features(hw, hw2), "cntfrq_hz": freq}


def cpuinfo_text(ident: dict, cpus: int) -> str:
    """The kernel's /proc/cpuinfo text for ``cpus`` identical CPUs described by ``ident``."""
    block = (f"BogoMIPS\t: {ident['cntfrq_hz'] / 500000:.2f}\n"
             f"Features\t: {' '.join(ident['features'])}\n"
             f"CPU implementer\t: {ident['implementer']}\n"
             "CPU architecture: 8\n"                       # the kernel prints 8 for every AArch64 CPU
             f"CPU variant\t: {ident['variant']}\n"
             f"CPU part\t: {ident['part']}\n"
             f"CPU revision\t: {ident['revision']}\n")
    return "".join(f"processor\t: {n}\n{block}\n" for n in range(cpus))


def main() -> int:
    try:
        ident = identity()
    except OSError as exc:
        print(f"kernel_cpuinfo.py: cannot read the CPU's identity: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(cpuinfo_text(ident, len(os.sched_getaffinity(0))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
