"""Answers to DNS queries from a `Zone`: pure functions from a query to a response.

The rules are the ones an authoritative server follows:

- Names outside `clusterset.local` are REFUSED: this server is no resolver (RA is never set).
- A name that does not exist is NXDOMAIN; a name that exists without the type asked for
  (including an empty non-terminal such as `<ns>.svc.clusterset.local`, RFC 8020) is NOERROR
  with no answer (NODATA). Both carry the zone's SOA in the authority section, whose TTL
  and minimum say how long the negative answer may be cached (RFC 2308).
- Malformed input: a message that does not parse gets FORMERR when it has a header to
  answer to, and nothing otherwise; so does a query with other than one question. Other
  opcodes get NOTIMP, EDNS versions above 0 BADVERS (RFC 6891), zone transfers REFUSED.
  Responses are never answered (no loops between servers).
- Work per message is bounded before it is parsed, from the header alone: a message
  longer than a query can be (`query_limit`) is dropped unread, and one with other than
  one question, any answer or authority record, or more than `MAX_ADDITIONAL` additional
  records gets FORMERR unread (a crafted 59 KB message used to cost 0.3 s to parse).
- Size: over UDP a response fits 512 bytes, or the client's EDNS payload up to 1232 (the
  DNS Flag Day 2020 size, which avoids IP fragmentation); over TCP 65535. What does not
  fit loses its additional section first (no TC: it is optional), then its answer and
  authority, with TC set so the client retries over TCP (RFC 2181 section 9).
"""

from __future__ import annotations

import struct
from typing import Final

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.rdtypes.IN.SRV
import dns.rrset

from kontinuum.dns.zone import AAAA, SRV, A, Zone

MAX_UDP_PAYLOAD: Final = 1232
MIN_UDP_PAYLOAD: Final = 512
MAX_TCP_MESSAGE: Final = 65535
HEADER_SIZE: Final = 12
# The longest query read over TCP: a name is at most 255 bytes, an OPT record with a cookie
# or a client subnet a few dozen; 4096 leaves room for any option a client may add.
MAX_QUERY: Final = 4096
MAX_ADDITIONAL: Final = 2  # the OPT record of EDNS, and a signature (TSIG, SIG(0))
_TRANSFERS: Final = frozenset({dns.rdatatype.AXFR, dns.rdatatype.IXFR})
_CLASSES: Final = frozenset({dns.rdataclass.IN, dns.rdataclass.ANY})


def _rrset(name: dns.name.Name, rdataset: dns.rdataset.Rdataset) -> dns.rrset.RRset:
    return dns.rrset.from_rdata_list(name, rdataset.ttl, list(rdataset))


def _negative(response: dns.message.Message, zone: Zone, rcode: dns.rcode.Rcode) -> None:
    response.set_rcode(rcode)
    response.authority.append(_rrset(zone.origin, zone.soa))


def _additional(response: dns.message.Message, zone: Zone) -> None:
    """The addresses of the targets of the SRV records answered (the specification's "may")."""
    seen: set[dns.name.Name] = set()
    for rrset in response.answer:
        for rdata in rrset:
            if not isinstance(rdata, dns.rdtypes.IN.SRV.SRV) or rdata.target in seen:
                continue
            seen.add(rdata.target)
            node = zone.node(rdata.target) or {}
            for rdtype in (A, AAAA):
                if rdtype in node:
                    response.additional.append(_rrset(rdata.target, node[rdtype]))


def answer(query: dns.message.Message, zone: Zone) -> dns.message.Message:
    """The response to a parsed query (see the module docstring for the rules)."""
    response = dns.message.make_response(query, our_payload=MAX_UDP_PAYLOAD)
    if query.opcode() != dns.opcode.QUERY:
        response.set_rcode(dns.rcode.NOTIMP)
        return response
    if query.edns > 0:
        response.set_rcode(dns.rcode.BADVERS)
        return response
    if len(query.question) != 1:
        response.set_rcode(dns.rcode.FORMERR)
        return response
    question = query.question[0]
    name, rdtype = question.name, question.rdtype
    if question.rdclass not in _CLASSES or not name.is_subdomain(zone.origin):
        response.set_rcode(dns.rcode.REFUSED)
        return response
    if rdtype in _TRANSFERS:
        response.set_rcode(dns.rcode.REFUSED)
        return response
    if dns.rdatatype.is_metatype(rdtype) and rdtype != dns.rdatatype.ANY:
        response.set_rcode(dns.rcode.NOTIMP)
        return response
    response.flags |= dns.flags.AA
    node = zone.node(name)
    if node is None:
        _negative(response, zone, dns.rcode.NXDOMAIN)
        return response
    if rdtype == dns.rdatatype.ANY:
        found = [node[t] for t in sorted(node)]
    else:
        found = [node[rdtype]] if rdtype in node else []
    if not found:
        _negative(response, zone, dns.rcode.NOERROR)
        return response
    # The owner is the name as asked: a resolver that randomises case (DNS 0x20) checks it.
    response.answer.extend(_rrset(name, rdataset) for rdataset in found)
    if rdtype == SRV:
        _additional(response, zone)
    return response


def udp_limit(query: dns.message.Message) -> int:
    """The largest UDP response the client accepts, at most `MAX_UDP_PAYLOAD`."""
    if query.edns < 0:
        return MIN_UDP_PAYLOAD
    return max(MIN_UDP_PAYLOAD, min(query.payload, MAX_UDP_PAYLOAD))


def render(response: dns.message.Message, limit: int) -> bytes:
    """`response` in wire format within `limit` bytes, shedding sections as needed."""
    try:
        return response.to_wire(max_size=limit)
    except dns.exception.TooBig:
        pass
    response.additional.clear()
    try:
        return response.to_wire(max_size=limit)
    except dns.exception.TooBig:
        pass
    response.answer.clear()
    response.authority.clear()
    response.flags |= dns.flags.TC
    return response.to_wire(max_size=limit)


def format_error(wire: bytes) -> bytes | None:
    """FORMERR for a message that did not parse: its id, opcode and RD, no sections.

    None when there is no header to answer to, or it is a response (QR set)."""
    if len(wire) < HEADER_SIZE:
        return None
    flags = int.from_bytes(wire[2:4], "big")
    if flags & dns.flags.QR:
        return None
    reply = dns.flags.QR | (flags & 0x7800) | (flags & dns.flags.RD) | dns.rcode.FORMERR
    return wire[:2] + reply.to_bytes(2, "big") + bytes(8)


def _counts(wire: bytes) -> tuple[int, int, int, int]:
    """The header's question, answer, authority and additional counts."""
    questions, answers, authority, additional = struct.unpack_from(">4H", wire, 4)
    return questions, answers, authority, additional


def query_limit(wire: bytes, *, tcp: bool) -> int:
    """The longest query read: over UDP 512 bytes, or with additional records (EDNS) the
    payload this server announces, which RFC 6891 makes the most it accepts."""
    if tcp:
        return MAX_QUERY
    return MAX_UDP_PAYLOAD if _counts(wire)[3] else MIN_UDP_PAYLOAD


def _not_a_query(wire: bytes, *, tcp: bool) -> bool:
    """No header, a response (QR), or longer than a query can be: not answered at all."""
    if len(wire) < HEADER_SIZE or wire[2] & 0x80:
        return True
    return len(wire) > query_limit(wire, tcp=tcp)


def _one_plain_question(wire: bytes) -> bool:
    """One question, no answer or authority records, few additional ones: worth parsing."""
    questions, answers, authority, additional = _counts(wire)
    return questions == 1 and not answers and not authority and additional <= MAX_ADDITIONAL


def respond(wire: bytes, zone: Zone, *, tcp: bool) -> bytes | None:
    """The wire-format response to a wire-format query, or None when nothing is to be sent."""
    if _not_a_query(wire, tcp=tcp):
        return None
    if not _one_plain_question(wire):
        return format_error(wire)
    try:
        query = dns.message.from_wire(wire)
    except Exception:  # any input whatsoever: garbage is answered FORMERR, never a crash
        return format_error(wire)
    response = answer(query, zone)
    return render(response, MAX_TCP_MESSAGE if tcp else udp_limit(query))
