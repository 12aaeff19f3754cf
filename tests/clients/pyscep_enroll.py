"""Enrols with PyScep 0.0.14 (PyPI ``PyScep``, module ``scep``) the way its README does.

    python3 pyscep_enroll.py --url URL --challenge PW --cn NAME --cert cert.pem --key key.pem

PyScep has no command line of its own; this driver makes the calls of its README with
its defaults: a self-signed identity certificate and a CSR, both with keyUsage
digitalSignature + keyEncipherment (csrbuilder then adds its default extKeyUsage,
serverAuth + clientAuth), then ``Client.enrol``. PyScep picks the certificates from
GetCACert itself (``CACertificates.recipient`` / ``.signer``); the driver prints which
it picked, so a failure can be read from the output. Exit 0 only when a certificate
was written; exit 2 on a FAILURE/PENDING reply, 1 on any other error.
"""

import argparse
import sys

import oscrypto_openssl3  # noqa: F401  (must precede the PyScep import: see its docstring)

from scep import Client  # noqa: E402

KEY_USAGE = {"digital_signature", "key_encipherment"}


def describe(cert):
    return "subject={} key_usage={} ca={}".format(
        cert.subject.human_friendly if cert is not None else None,
        sorted(cert.key_usage) if cert is not None else None,
        cert.is_ca if cert is not None else None,
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--challenge", required=True)
    parser.add_argument("--cn", required=True)
    parser.add_argument("--cert", required=True, help="where to write the issued certificate (PEM)")
    parser.add_argument("--key", required=True, help="where to write the private key (PEM)")
    args = parser.parse_args()

    client = Client.Client(args.url)
    ca_certs = client.get_ca_certs()
    print("pyscep: GetCACert gave {} certificate(s)".format(len(ca_certs.certificates)))
    print("pyscep: encrypts to   " + describe(ca_certs.recipient))
    print("pyscep: verifies with " + describe(ca_certs.signer))

    identity, identity_key = Client.SigningRequest.generate_self_signed(cn=args.cn, key_usage=KEY_USAGE)
    csr, key = Client.SigningRequest.generate_csr(cn=args.cn, key_usage=KEY_USAGE, password=args.challenge)
    with open(args.key, "wb") as f:
        f.write(key.to_pem())

    result = client.enrol(csr=csr, identity=identity, identity_private_key=identity_key)
    if result.status == Client.PKIStatus.FAILURE:
        print("pyscep: enrolment FAILURE, failInfo={}".format(result.fail_info))
        return 2
    if result.status == Client.PKIStatus.PENDING:
        print("pyscep: enrolment PENDING, transactionID={}".format(result.transaction_id))
        return 2
    if not result.certificates:
        print("pyscep: SUCCESS without a certificate")
        return 1
    with open(args.cert, "wb") as f:
        f.write(result.certificates[0].to_pem())
    print("pyscep: enrolment SUCCESS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
