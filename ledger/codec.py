"""Canonical MessagePack: one encoding per value.

Everything lacre signs or hashes (records, block headers, votes, genesis) is
encoded here. A value has exactly one encoding: maps have text keys sorted by
their UTF-8 bytes, integers take their shortest form, text is `str`, raw bytes
are `bin`, and floats and extension types do not exist. Decoding is strict: it
re-encodes what it read and refuses the input unless the bytes are identical,
which rejects unsorted or duplicate keys, non-minimal integers and lengths,
and trailing bytes in one comparison.

    encoded value   ::= nil | bool | int | str | bin | array | map
    map             ::= text keys, strictly increasing
"""

from __future__ import annotations

from typing import Any

import msgpack

# Bounds keep a hostile input from allocating much before it is refused.
MESSAGE_BYTES_MAX = 64 << 20
_CONTAINER_LEN_MAX = 1 << 20


class CodecError(ValueError):
    """Bytes that are not the canonical encoding of an allowed value."""


def _canonical(value: Any) -> Any:
    """`value` with every map rebuilt in sorted key order, types checked."""
    if value is None or value is True or value is False:
        return value
    kind = type(value)
    if kind is int:
        if not -(1 << 63) <= value < (1 << 64):
            raise CodecError(f"integer out of range: {value}")
        return value
    if kind is str or kind is bytes:
        return value
    if kind is list or kind is tuple:
        return [_canonical(item) for item in value]
    if kind is dict:
        for key in value:
            if type(key) is not str:
                raise CodecError(f"map key is not text: {key!r}")
        return {key: _canonical(value[key]) for key in sorted(value)}
    raise CodecError(f"type not encodable: {kind.__name__}")


_packers: list[msgpack.Packer] = []


def _pack(value: Any) -> bytes:
    # msgpack.packb builds a Packer, and its buffer, on every call: half the
    # cost of packing a record. A Packer is not thread-safe, so each call
    # takes one from this pool and gives it back (list.pop and list.append
    # are atomic); a Packer resets its buffer after each value, even one it refuses.
    try:
        packer = _packers.pop()
    except IndexError:
        packer = msgpack.Packer(use_bin_type=True)
    try:
        return packer.pack(value)
    finally:
        _packers.append(packer)


def encode(value: Any) -> bytes:
    """The canonical encoding of `value` (dicts, lists, str, bytes, int, bool, None)."""
    return _pack(_canonical(value))


def encode_canonical(value: Any) -> bytes:
    """Encode a value known to be canonical already (e.g. part of a decoded one)."""
    return _pack(value)


def decode(data: bytes) -> Any:
    """The value `data` canonically encodes; raises CodecError otherwise."""
    if type(data) is not bytes:
        data = bytes(data)
    if len(data) > MESSAGE_BYTES_MAX:
        raise CodecError("message too large")
    try:
        value = msgpack.unpackb(
            data,
            raw=False,
            use_list=True,
            strict_map_key=True,
            max_str_len=len(data),
            max_bin_len=len(data),
            max_array_len=_CONTAINER_LEN_MAX,
            max_map_len=_CONTAINER_LEN_MAX,
            max_ext_len=0,
        )
    except Exception as error:  # msgpack raises a zoo of types on bad input
        raise CodecError(f"not MessagePack: {error}") from None
    _check_types(value)
    # Decoded maps keep their wire order, checked sorted above, so packing
    # the value as it is reproduces the input iff every length and integer
    # took its shortest form and no key was repeated.
    if _pack(value) != data:
        raise CodecError("not canonical MessagePack")
    return value


def _check_types(value: Any) -> None:
    # Hot (every record, vote and block): containers recurse, scalars are
    # checked in place, which saves a call per map value.
    kind = type(value)
    if kind is dict:
        keys = list(value)
        for key in keys:
            if type(key) is not str:
                raise CodecError(f"map key is not text: {key!r}")
        if keys != sorted(keys):
            raise CodecError("map keys are not sorted")
        items = value.values()
    elif kind is list:
        items = value
    elif kind is float:
        raise CodecError("floats are not allowed")
    else:
        return
    for item in items:
        item_kind = type(item)
        if item_kind is dict or item_kind is list:
            _check_types(item)
        elif item_kind is float:
            raise CodecError("floats are not allowed")
