"""Runs scepreq 0.1.1's own command line (``scepreq.main.main``) with two fixes.

    python3 scepreq_enroll.py -u URL -p PW -s CN=NAME --output-cert cert.pem --output-key key.pem ...

The arguments are scepreq's, passed through unchanged, and scepreq's own ``main``
runs with its own defaults (keyUsage digitalSignature + keyEncipherment, EKU
clientAuth, RSA-2048). Two things keep the released ``scepreq`` console script from
running here, and this driver fixes exactly those:

1. oscrypto 1.3.0 cannot parse OpenSSL 3.0.10+'s version text: ``oscrypto_openssl3``
   is imported first (see its docstring).
2. scepreq 0.1.1 declares ``--url`` twice (``-u/--url`` for the server and ``--url``
   for a URL subjectAltName), so argparse raises "conflicting option string: --url"
   before doing anything. Its parser is built here with ``conflict_handler="resolve"``,
   which keeps ``-u`` for the server URL and gives ``--url`` to the SAN option, the
   meaning its help text intends.

scepreq's ``main`` returns 1 on a FAILURE reply but its console entry point discards
the value; this driver exits with it, and exits 1 when no certificate was written.
"""

import argparse
import os
import sys

import oscrypto_openssl3  # noqa: F401  (must precede the scepreq import)

from scepreq import main as scepreq_main  # noqa: E402


def output_cert_path(argv):
    for i, arg in enumerate(argv):
        if arg == "--output-cert" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--output-cert="):
            return arg.split("=", 1)[1]
    return "cert.crt"


class _ResolvingArgumentParser(argparse.ArgumentParser):
    """scepreq's parser, letting the later ``--url`` (the SAN option) win over ``-u/--url``'s long form."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("conflict_handler", "resolve")
        super().__init__(*args, **kwargs)


if __name__ == "__main__":
    scepreq_main.argparse = argparse.Namespace(
        ArgumentParser=_ResolvingArgumentParser,
        ArgumentDefaultsHelpFormatter=argparse.ArgumentDefaultsHelpFormatter,
    )
    status = scepreq_main.main() or 0
    if status == 0 and not os.path.isfile(output_cert_path(sys.argv[1:])):
        print("scepreq: exited without writing a certificate", file=sys.stderr)
        status = 1
    sys.exit(status)
