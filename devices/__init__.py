"""Device profiles (torch-free): ``from zor.devices import get, names, detect``.

Example:
    >>> from zor.devices import get, names
    >>> "rpi5" in names(), get("rpi5").int8.activation_type
    (True, 's8')
"""

from .detection import ARM_PARTS, CpuInfo, Detection, detect, parse_cpuinfo
from .profiles import PROFILES, Int8Recipe, Profile, SparseShape, get, names

__all__ = ["PROFILES", "Int8Recipe", "Profile", "SparseShape", "get", "names", "detect", "Detection", "CpuInfo",
           "parse_cpuinfo", "ARM_PARTS"]
