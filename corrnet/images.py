"""Reading image files: one function for every command, checked before and after decoding.

:func:`read_image` is how corrnet reads an image (``corrnet match``, the pairs mode,
``corrnet prepare``, ``corrnet prepare3d``'s depth frames, the pictures).  Before decoding it
refuses, in one line naming the file: a path that is not a regular file (a FIFO or
``/dev/zero`` would be read forever); a size its header declares above
:func:`max_image_pixels` (read from the JPEG or PNG header with a bounded read, so a 2 kB
file declaring 20000 x 20000 pixels is never decoded); a JPEG without its end-of-image marker
after the last scan, or a PNG without its IEND chunk (a truncated file, which OpenCV would
decode in part, grey below the cut).  :func:`image_size` gives the size an image decodes to
(EXIF orientation applied, as OpenCV does) from its header.

The EXIF reader (:func:`exif_focal_35mm`, :func:`exif_orientation`) walks the JPEG's marker
segments with a bounded number of reads and never raises for a malformed EXIF block.
"""

from __future__ import annotations

import os
import re
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np

from corrnet.atomic import check_regular_input
from corrnet.errors import UserError

MAX_IMAGE_PIXELS = 100_000_000
"""Largest image decoded by default, in pixels (100 megapixels: 1.2 GB as float32 RGB; a
camera's photo has 10-50)."""
MAX_PIXELS_VARIABLE = "CORRNET_MAX_IMAGE_PIXELS"
"""Environment variable that replaces :data:`MAX_IMAGE_PIXELS` (a positive integer)."""
MAX_SEGMENTS = 256
"""Most JPEG marker segments read before the first scan (real files have fewer than 20)."""

_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
"""JPEG start-of-frame markers (baseline, extended, progressive, lossless, arithmetic)."""
_SOS, _EOI = 0xDA, 0xD9
_PNG = b"\x89PNG\r\n\x1a\n"
_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"
_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
"""A marker inside JPEG entropy-coded data: 0xFF not followed by a stuffed zero, a restart
marker (RST0-7) or a fill byte."""


def max_image_pixels() -> int:
    """The pixel cap: ``$CORRNET_MAX_IMAGE_PIXELS`` when set, else :data:`MAX_IMAGE_PIXELS`."""
    text = os.environ.get(MAX_PIXELS_VARIABLE)
    if text is None:
        return MAX_IMAGE_PIXELS
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise UserError(f"{MAX_PIXELS_VARIABLE}: expected a positive integer, got {text!r}")
    return value


def _segments(f: BinaryIO) -> Iterator[tuple[int, bytes]]:
    """(marker, payload) of a JPEG's segments up to and including the first SOS; payloads of
    APP1 and SOF segments only (others are skipped with a seek).  Stops at anything that is
    not a marker segment."""
    if f.read(2) != b"\xff\xd8":
        return
    for _ in range(MAX_SEGMENTS):
        head = f.read(4)
        if len(head) < 4 or head[0] != 0xFF:
            return
        marker, length = head[1], int.from_bytes(head[2:], "big")
        if marker == 0xFF or length < 2:  # fill bytes or a damaged segment: the decoder judges
            return
        if marker == 0xE1 or marker in _SOF or marker == _SOS:
            payload = f.read(length - 2)
            if len(payload) < length - 2:
                return
            yield marker, payload
            if marker == _SOS:
                return
        else:
            f.seek(length - 2, os.SEEK_CUR)


def _exif_tiff(path: str | Path) -> bytes | None:
    """The TIFF structure of a JPEG's EXIF segment (APP1 ``Exif\\0\\0``), or None."""
    with open(path, "rb") as f:
        for marker, payload in _segments(f):
            if marker == 0xE1 and payload[:6] == b"Exif\0\0":
                return payload[6:]
    return None


def _ifd_integer(tiff: bytes, order: str, offset: int, tag: int) -> int | None:
    """The value of the SHORT or LONG entry ``tag`` of the TIFF IFD at ``offset``, or None."""
    (count,) = struct.unpack_from(order + "H", tiff, offset)
    for k in range(count):
        entry = offset + 2 + 12 * k
        entry_tag, kind = struct.unpack_from(order + "HH", tiff, entry)
        if entry_tag == tag and kind in (3, 4):
            return struct.unpack_from(order + ("H" if kind == 3 else "I"), tiff, entry + 8)[0]
    return None


def _exif_integer(path: str | Path, tag: int, exif_ifd: bool) -> int | None:
    """An integer tag of IFD0 (``exif_ifd`` False) or of the Exif IFD; None when absent or
    when the EXIF block is malformed."""
    tiff = _exif_tiff(path)
    order = None if tiff is None else {b"II": "<", b"MM": ">"}.get(tiff[:2])
    if order is None:
        return None
    try:
        offset = struct.unpack_from(order + "I", tiff, 4)[0]
        if exif_ifd:
            offset = _ifd_integer(tiff, order, offset, 0x8769)
        return None if offset is None else _ifd_integer(tiff, order, offset, tag)
    except struct.error:  # truncated or corrupt: no value
        return None


def exif_focal_35mm(path: str | Path) -> float | None:
    """EXIF ``FocalLengthIn35mmFilm`` (tag 0xA405) of a JPEG file in mm; None when absent
    (or 0, EXIF's "unknown").  The value is not checked: see
    :func:`corrnet.match.approximate_intrinsics`."""
    value = _exif_integer(path, 0xA405, exif_ifd=True)
    return float(value) if value else None


def exif_orientation(path: str | Path) -> int:
    """EXIF ``Orientation`` (tag 0x0112, 1..8) of a JPEG file; 1 when absent or invalid."""
    value = _exif_integer(path, 0x0112, exif_ifd=False)
    return value if value in range(1, 9) else 1


def header_size(path: str | Path) -> tuple[int, int] | None:
    """(width, height) in pixels that a JPEG's or PNG's header declares, as decoded (EXIF
    orientations 5-8, which OpenCV applies, swap them); None for other formats or a header
    that cannot be parsed (the decoder then reports the file).  Reads at most
    :data:`MAX_SEGMENTS` segment headers."""
    with open(path, "rb") as f:
        head = f.read(24)
        if head[:8] == _PNG and head[12:16] == b"IHDR":
            return struct.unpack(">II", head[16:24])
        f.seek(0)
        for marker, payload in _segments(f):
            if marker in _SOF and len(payload) >= 5:
                height, width = struct.unpack(">HH", payload[1:5])
                swap = exif_orientation(path) >= 5
                return (height, width) if swap else (width, height)
    return None


def truncation_problem(data: bytes) -> str | None:
    """Why a JPEG's or PNG's bytes end early, or None (also for other formats).

    JPEG: every marker segment and scan is walked; the file must reach EOI (FFD9) after its
    last scan.  PNG: the file must end with the IEND chunk."""
    if data[:8] == _PNG:
        return None if data.rstrip(b"\0").endswith(_PNG_END) else "PNG without its IEND chunk"
    if data[:2] != b"\xff\xd8":
        return None
    pos, scans = 2, 0
    while pos + 2 <= len(data):
        if data[pos] != 0xFF:  # extraneous bytes, which decoders skip with a warning
            found = _MARKER.search(data, pos)
            if found is None:
                break
            pos = found.start()
            continue
        marker = data[pos + 1]
        if marker == 0xFF:
            pos += 1
            continue
        if marker == _EOI:
            return None if scans else "JPEG that ends before its first scan"
        if pos + 4 > len(data):
            break
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker == _SOS:  # entropy-coded data runs to the next marker
            scans += 1
            found = _MARKER.search(data, pos)
            if found is None:
                break
            pos = found.start()
    return "truncated JPEG: no end-of-image marker (FFD9) after the last scan"


def _decode(data: bytes, flags: int, path: Path) -> np.ndarray:
    import cv2

    image = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    if image is None:
        raise UserError(
            f"{path}: cannot read as an image (expected a file OpenCV decodes: JPEG, PNG, ...)"
        )
    return image


def read_image(path: str | Path, flags: int | None = None) -> np.ndarray:
    """An image file decoded by OpenCV, checked before and after decoding.

    flags: ``cv2.imread`` flags (default ``cv2.IMREAD_COLOR``: (h, w, 3) uint8 BGR, EXIF
    orientation applied; ``cv2.IMREAD_UNCHANGED`` for depth PNGs).  Raises
    FileNotFoundError, NotRegularFileError or UserError naming the file: missing, not a
    regular file, unreadable, more than :func:`max_image_pixels` pixels (before decoding
    where the header says so), truncated, or not an image.
    """
    import cv2

    path = Path(path)
    check_regular_input(path, "image file")
    cap = max_image_pixels()
    try:
        size = header_size(path)
        if size is not None and size[0] * size[1] > cap:
            raise UserError(
                f"{path}: the header declares {size[0]} x {size[1]} pixels, more than the "
                f"{cap:,} pixels images are decoded up to ({MAX_PIXELS_VARIABLE})"
            )
        data = path.read_bytes()
    except PermissionError as err:
        raise UserError(f"{path}: cannot read the image ({err.strerror})") from None
    if len(data) == 0:
        raise UserError(f"{path}: empty file; expected an image (JPEG, PNG, ...)")
    problem = truncation_problem(data)
    if problem is not None:
        raise UserError(f"{path}: {problem}; the file is incomplete")
    image = _decode(data, cv2.IMREAD_COLOR if flags is None else flags, path)
    if image.shape[0] * image.shape[1] > cap:  # formats whose header is not parsed here
        raise UserError(
            f"{path}: {image.shape[1]} x {image.shape[0]} pixels, more than the {cap:,} pixels "
            f"images are decoded up to ({MAX_PIXELS_VARIABLE})"
        )
    return image


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) in pixels that :func:`read_image` decodes ``path`` to: from the header
    (JPEG, PNG), else by decoding the file."""
    check_regular_input(path, "image file")
    size = header_size(path)
    if size is None:
        image = read_image(path)
        size = (image.shape[1], image.shape[0])
    return size
