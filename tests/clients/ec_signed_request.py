"""Builds an RFC 8894 PKCSReq signed by an EC (P-256) key, for the tests.

Deployed clients sign with RSA keys, because the CertRep is encrypted to the
signer's certificate with RSA key transport (RFC 8894 §3.2.2, §3.3.2). A
client with an EC key can still send one; the tests check that scepd refuses
it before it issues anything or consumes a challenge. The independent Rust
client of the tests signs with RSA only, so this uses asn1crypto and
cryptography (the versions `.ci/run` installs for PyScep and scepreq).

usage: ec_signed_request.py RA_CERT_DER CHALLENGE COMMON_NAME OUT_DER
prints the request's transactionID.
"""
import datetime
import hashlib
import os
import sys

from asn1crypto import cms, core
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives import padding as symmetric_padding
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.x509.oid import AttributeOID, NameOID

# RFC 8894 §3.2.1: the SCEP signed attributes.
MESSAGE_TYPE = "2.16.840.1.113733.1.9.2"
SENDER_NONCE = "2.16.840.1.113733.1.9.5"
TRANSACTION_ID = "2.16.840.1.113733.1.9.7"
PKCS_REQ = "19"
for oid, name in [(MESSAGE_TYPE, "scep_message_type"), (SENDER_NONCE, "scep_sender_nonce"),
                  (TRANSACTION_ID, "scep_transaction_id")]:
    cms.CMSAttributeType._map[oid] = name


def envelope(content, ra_der):
    """pkcsPKIEnvelope (RFC 8894 §3.2.2): AES-256-CBC, the key for the RA with RSA PKCS #1 v1.5."""
    ra = x509.load_der_x509_certificate(ra_der)
    ra_asn1 = asn1_x509.Certificate.load(ra_der)
    key, iv = os.urandom(32), os.urandom(16)
    padder = symmetric_padding.PKCS7(128).padder()
    padded = padder.update(content) + padder.finalize()
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    recipient = cms.KeyTransRecipientInfo({
        "version": "v0",
        "rid": cms.RecipientIdentifier({"issuer_and_serial_number": cms.IssuerAndSerialNumber(
            {"issuer": ra_asn1.issuer, "serial_number": ra_asn1.serial_number})}),
        "key_encryption_algorithm": {"algorithm": "rsaes_pkcs1v15"},
        "encrypted_key": ra.public_key().encrypt(key, padding.PKCS1v15()),
    })
    enveloped = cms.EnvelopedData({
        "version": "v0",
        "recipient_infos": [cms.RecipientInfo({"ktri": recipient})],
        "encrypted_content_info": {
            "content_type": "data",
            "content_encryption_algorithm": {"algorithm": "aes256_cbc", "parameters": core.OctetString(iv)},
            "encrypted_content": encryptor.update(padded) + encryptor.finalize(),
        },
    })
    return cms.ContentInfo({"content_type": "enveloped_data", "content": enveloped}).dump()


def main():
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    ra_path, challenge, common_name, out = sys.argv[1:]
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    # RFC 8894 §2.3: a transient self-signed certificate for the request's key.
    signer = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
              .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
              .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    csr = (x509.CertificateSigningRequestBuilder().subject_name(name)
           .add_attribute(AttributeOID.CHALLENGE_PASSWORD, challenge.encode())
           .sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER))
    spki = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    transaction_id = hashlib.sha256(spki).hexdigest().upper()
    with open(ra_path, "rb") as f:
        content = envelope(csr, f.read())

    attributes = cms.CMSAttributes([
        cms.CMSAttribute({"type": "content_type", "values": [cms.ContentType("data")]}),
        cms.CMSAttribute({"type": "message_digest", "values": [core.OctetString(hashlib.sha256(content).digest())]}),
        cms.CMSAttribute({"type": MESSAGE_TYPE, "values": [core.PrintableString(PKCS_REQ)]}),
        cms.CMSAttribute({"type": TRANSACTION_ID, "values": [core.PrintableString(transaction_id)]}),
        cms.CMSAttribute({"type": SENDER_NONCE, "values": [core.OctetString(os.urandom(16))]}),
    ])
    signer_asn1 = asn1_x509.Certificate.load(signer.public_bytes(serialization.Encoding.DER))
    signer_info = cms.SignerInfo({
        "version": "v1",
        "sid": cms.SignerIdentifier({"issuer_and_serial_number": cms.IssuerAndSerialNumber(
            {"issuer": signer_asn1.issuer, "serial_number": signer_asn1.serial_number})}),
        "digest_algorithm": {"algorithm": "sha256"},
        "signed_attrs": attributes,
        "signature_algorithm": {"algorithm": "sha256_ecdsa"},
        "signature": key.sign(attributes.dump(), ec.ECDSA(hashes.SHA256())),
    })
    signed = cms.SignedData({
        "version": "v1",
        "digest_algorithms": [{"algorithm": "sha256"}],
        "encap_content_info": {"content_type": "data", "content": content},
        "certificates": [signer_asn1],
        "signer_infos": [signer_info],
    })
    with open(out, "wb") as f:
        f.write(cms.ContentInfo({"content_type": "signed_data", "content": signed}).dump())
    print(transaction_id)


if __name__ == "__main__":
    main()
