"""Signing keys: a private key in a PEM file, its DNSKEY record, its key
tag, and signatures in DNSSEC's wire form.

Two algorithms, the ones RFC 8624 recommends for signing: 13 (ECDSA P-256
with SHA-256) and 15 (Ed25519).  The private key is a PKCS #8 PEM file (what
``geodns dnssec keygen`` writes, and what ``openssl genpkey`` makes); the role
(a key-signing key, a zone-signing key, or one combined signing key) is the
zone's ``dnssec:`` setting, not the file's.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

ECDSAP256SHA256 = 13
ED25519 = 15
ALGORITHMS = {"ecdsap256sha256": ECDSAP256SHA256, "ed25519": ED25519}
ALGORITHM_NAMES = {number: name for name, number in ALGORITHMS.items()}

ZONE_KEY = 0x0100  # DNSKEY flags (RFC 4034 2.1.1)
SEP = 0x0001


class Role(enum.Enum):
    KSK = "ksk"  # signs the DNSKEY set; its DS is at the parent
    ZSK = "zsk"  # signs everything else
    CSK = "csk"  # both


class KeyError_(ValueError):
    """A key file that cannot be used (the message says why)."""


PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


@dataclass(frozen=True)
class Key:
    """One signing key of a zone."""

    private: PrivateKey = field(repr=False)
    algorithm: int
    role: Role
    dnskey: bytes  # the DNSKEY RDATA: flags, protocol 3, algorithm, public key
    tag: int

    @property
    def signs_keys(self) -> bool:
        return self.role is not Role.ZSK

    @property
    def signs_zone(self) -> bool:
        return self.role is not Role.KSK

    def sign(self, data: bytes) -> bytes:
        """The signature of ``data`` in the form RRSIG carries (RFC 6605:
        r and s, 32 bytes each; RFC 8080: Ed25519's 64 bytes)."""
        if isinstance(self.private, ed25519.Ed25519PrivateKey):
            return self.private.sign(data)
        r, s = decode_dss_signature(self.private.sign(data, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def load(pem: bytes, role: Role) -> Key:
    """A key from a PEM private key file's bytes; :class:`KeyError_` when
    it is not an ECDSA P-256 or Ed25519 private key."""
    try:
        private = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise KeyError_("not a PEM private key (without a password)") from None
    if isinstance(private, ed25519.Ed25519PrivateKey):
        algorithm = ED25519
        public = private.public_key().public_bytes(serialization.Encoding.Raw,
                                                   serialization.PublicFormat.Raw)
    elif isinstance(private, ec.EllipticCurvePrivateKey) and \
            isinstance(private.curve, ec.SECP256R1):
        algorithm = ECDSAP256SHA256
        point = private.public_key().public_bytes(serialization.Encoding.X962,
                                                  serialization.PublicFormat.UncompressedPoint)
        public = point[1:]  # RFC 6605 4: x and y, without the 0x04 prefix
    else:
        raise KeyError_("an ECDSA P-256 or an Ed25519 key is needed (algorithm 13 or 15)")
    flags = ZONE_KEY | (SEP if role is not Role.ZSK else 0)
    dnskey = struct.pack("!HBB", flags, 3, algorithm) + public
    return Key(private, algorithm, role, dnskey, key_tag(dnskey))


def generate(algorithm: int) -> bytes:
    """A new private key for ``algorithm``, as a PEM file's bytes."""
    private: PrivateKey
    if algorithm == ED25519:
        private = ed25519.Ed25519PrivateKey.generate()
    elif algorithm == ECDSAP256SHA256:
        private = ec.generate_private_key(ec.SECP256R1())
    else:
        raise ValueError(f"algorithm {algorithm} is not one geodns signs with")
    return private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())


def key_tag(dnskey: bytes) -> int:
    """RFC 4034 Appendix B: the checksum that names a key."""
    total = 0
    for i, byte in enumerate(dnskey):
        total += byte << 8 if i % 2 == 0 else byte
    total += (total >> 16) & 0xFFFF
    return total & 0xFFFF


__all__ = ["ALGORITHMS", "ALGORITHM_NAMES", "ECDSAP256SHA256", "ED25519", "Key", "KeyError_",
           "Role", "generate", "key_tag", "load"]
