"""A minimal DER TLV reader, for what the ASN.1 and X.509 libraries will not show.

All decoding of *meaning* goes through pyasn1 or cryptography. This reads tags and lengths
only, for three jobs those libraries cannot do: naming the structural defect of a malformed
extension (a diagnosis instead of a decoder stack), reading an extension's exact bytes where
the encoding itself is checked (a KeyUsage BIT STRING) or where cryptography refuses to parse
the extensions at all, and re-encoding one field of a TBSCertificate (the ECDSA NULL repair
of :mod:`shaken.core.certs`). It is written by hand because no maintained library exposes DER
positions; it is small, bounded by the input and raises :class:`TlvError` on anything odd.
"""

from __future__ import annotations

from collections.abc import Iterator

__all__ = [
    "TlvError",
    "children",
    "decode_oid",
    "der_tlv",
    "raw_extensions",
    "read_tlv",
    "tag_name",
    "tlvs",
]

_UNIVERSAL_NAMES = {
    0x01: "BOOLEAN",
    0x02: "INTEGER",
    0x03: "BIT STRING",
    0x04: "OCTET STRING",
    0x05: "NULL",
    0x06: "OBJECT IDENTIFIER",
    0x0C: "UTF8String",
    0x13: "PrintableString",
    0x16: "IA5String",
    0x30: "SEQUENCE",
    0x31: "SET",
}


class TlvError(Exception):
    pass


def read_tlv(data: bytes, offset: int) -> tuple[int, int, int]:
    """(tag byte, content offset, content length) of the TLV at ``offset``; single-byte tags."""
    if offset + 2 > len(data):
        raise TlvError(f"truncated header at offset {offset}")
    tag = data[offset]
    if tag & 0x1F == 0x1F:
        raise TlvError(f"multi-byte tag at offset {offset}")
    first = data[offset + 1]
    pos = offset + 2
    if first < 0x80:
        length = first
    else:
        n = first & 0x7F
        if n == 0 or n > 4:
            raise TlvError(f"unsupported length form 0x{first:02x} at offset {offset + 1}")
        if pos + n > len(data):
            raise TlvError(f"truncated length at offset {offset + 1}")
        length = int.from_bytes(data[pos : pos + n], "big")
        pos += n
    if pos + length > len(data):
        raise TlvError(
            f"length {length} at offset {offset + 1} overruns the {len(data) - pos} byte(s) left"
        )
    return tag, pos, length


def children(data: bytes, start: int, length: int) -> Iterator[tuple[int, int, int, int]]:
    """(tag, tlv offset, content offset, content length) for each TLV inside a constructed one."""
    pos, end = start, start + length
    while pos < end:
        tag, content, size = read_tlv(data[:end], pos)
        yield tag, pos, content, size
        pos = content + size


def tag_name(tag: int) -> str:
    if tag & 0xC0 == 0x80:
        return f"[{tag & 0x1F}]"
    return _UNIVERSAL_NAMES.get(tag, f"tag 0x{tag:02x}")


def decode_oid(content: bytes) -> str:
    if not content:
        raise TlvError("empty OBJECT IDENTIFIER")
    arcs: list[int] = []
    value = 0
    for byte in content:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(value)
            value = 0
    if content[-1] & 0x80:
        raise TlvError("truncated OBJECT IDENTIFIER")
    first = arcs[0]
    head = [min(first // 40, 2), first - 40 * min(first // 40, 2)]
    return ".".join(str(a) for a in head + arcs[1:])


def raw_extensions(tbs: bytes) -> dict[str, tuple[bool, bytes]]:
    """Extension OID -> (critical, extnValue bytes) straight from the TBSCertificate DER.

    Used where the exact encoding matters (the KeyUsage BIT STRING) or where cryptography
    refuses to parse the extensions at all.
    """
    _tag, content, length = read_tlv(tbs, 0)
    for tag, _pos, inner, size in children(tbs, content, length):
        if tag != 0xA3:  # extensions [3] EXPLICIT Extensions (RFC 5280 section 4.1)
            continue
        seq_tag, seq_content, seq_len = read_tlv(tbs[: inner + size], inner)
        if seq_tag != 0x30:
            raise TlvError("extensions are not a SEQUENCE")
        found: dict[str, tuple[bool, bytes]] = {}
        for ext_tag, _p, ext_content, ext_len in children(tbs, seq_content, seq_len):
            if ext_tag != 0x30:
                raise TlvError("an extension is not a SEQUENCE")
            parts = list(children(tbs, ext_content, ext_len))
            if len(parts) not in (2, 3) or parts[0][0] != 0x06 or parts[-1][0] != 0x04:
                raise TlvError("an extension is not SEQUENCE {OID, [BOOLEAN], OCTET STRING}")
            oid = decode_oid(tbs[parts[0][2] : parts[0][2] + parts[0][3]])
            critical = len(parts) == 3 and tbs[parts[1][2] : parts[1][2] + parts[1][3]] != b"\x00"
            found[oid] = (critical, tbs[parts[-1][2] : parts[-1][2] + parts[-1][3]])
        return found
    return {}


def der_tlv(tag: int, content: bytes) -> bytes:
    size = len(content)
    if size < 0x80:
        return bytes([tag, size]) + content
    length = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(length)]) + length + content


def tlvs(data: bytes, start: int, length: int) -> list[bytes]:
    return [
        data[pos : content + size] for _tag, pos, content, size in children(data, start, length)
    ]
