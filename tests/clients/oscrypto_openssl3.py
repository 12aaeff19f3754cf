"""Lets oscrypto 1.3.0 (the newest release on PyPI) load on OpenSSL 3.0.10 and later.

The real cause: oscrypto reads libcrypto's version text ("OpenSSL 3.0.19 27 Jan 2026")
and matches it with the regular expression ``\\b(\\d\\.\\d\\.\\d[a-z]*)\\b``, which allows one
digit per component. "3.0.19" has a two-digit patch number, so the match fails and
oscrypto raises ``LibraryNotFoundError('Error detecting the version of libcrypto')``
(oscrypto issues #75 and #78; fixed on oscrypto's master, commit d5f3437, never
released). Pointing oscrypto at another library with ``oscrypto.use_openssl()`` does
not help: the same text is parsed whatever the path.

The fix applied here is the upstream one and nothing else: when oscrypto's two
libcrypto binding modules (``_libcrypto_cffi`` and ``_libcrypto_ctypes``) are imported,
their source is read from the installed package, that single pattern is replaced by
one that accepts multi-digit components, and the module is compiled from the result.
If the pattern is not found (a fixed oscrypto), the module loads unchanged. Nothing
is downloaded and no installed file is modified.

Import this module before anything that imports oscrypto (PyScep, scepreq).
"""

import importlib.abc
import importlib.machinery
import importlib.util
import sys

_PATCHED_MODULES = (
    "oscrypto._openssl._libcrypto_cffi",
    "oscrypto._openssl._libcrypto_ctypes",
)
# The literal text in oscrypto 1.3.0's source, and the upstream replacement.
_SINGLE_DIGIT_PATTERN = "'\\\\b(\\\\d\\\\.\\\\d\\\\.\\\\d[a-z]*)\\\\b'"
_MULTI_DIGIT_PATTERN = "'\\\\b(\\\\d+\\\\.\\\\d+\\\\.\\\\d+[a-z]*)\\\\b'"


class _VersionPatternLoader(importlib.machinery.SourceFileLoader):
    """Loads one oscrypto binding module with the version pattern fixed."""

    def get_data(self, path):
        data = super().get_data(path)
        if not path.endswith(".py"):
            return data
        source = data.decode("utf-8")
        return source.replace(_SINGLE_DIGIT_PATTERN, _MULTI_DIGIT_PATTERN).encode("utf-8")

    def get_code(self, fullname):
        # Always compile from the (patched) source, never from a cached .pyc.
        source = self.get_data(self.get_filename(fullname))
        return compile(source, self.get_filename(fullname), "exec", dont_inherit=True)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname not in _PATCHED_MODULES:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
            return spec
        loader = _VersionPatternLoader(fullname, spec.origin)
        return importlib.util.spec_from_file_location(fullname, spec.origin, loader=loader)


def install():
    """Installs the import hook (idempotent)."""
    if "oscrypto._openssl._libcrypto" in sys.modules:
        raise RuntimeError("oscrypto_openssl3.install() must run before oscrypto is imported")
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())


install()
