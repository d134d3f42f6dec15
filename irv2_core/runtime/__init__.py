"""Process runtime: environment settings, file I/O helpers, locks, MindSpore context and compile
cache, and the code fingerprint. The bottom layer: it imports nothing else from ``irv2_core``."""
