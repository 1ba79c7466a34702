"""Device profiles (torch-free): ``from zor.devices import get, names, detect``."""

from .profiles import PROFILES, Int8Recipe, Profile, get, names

__all__ = ["PROFILES", "Int8Recipe", "Profile", "get", "names"]
