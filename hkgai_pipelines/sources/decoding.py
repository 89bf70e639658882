"""Decide which text encoding a file (or a web page) is in, and decode it.

Hong Kong input arrives in more encodings than UTF-8: Notepad and Excel write a UTF-8
byte-order mark, Windows tools write UTF-16, government and older news sites serve Big5 or
Big5-HKSCS, mainland sites GBK/GB18030. One encoding is decided per file (a file has one
encoding), in this order:

1. a byte-order mark (UTF-32, UTF-8, UTF-16): it is unambiguous, so it wins;
2. UTF-8, when the bytes hold non-ASCII text that decodes as UTF-8, even against a declared
   legacy charset: Big5 or GB text almost never forms valid multi-byte UTF-8, while
   mislabelled UTF-8 is common (a template that kept `charset=big5`, a server that adds
   `charset=ISO-8859-1` to every response);
3. a declared charset: the HTTP header, then `<meta charset>` / `http-equiv` or the XML
   declaration, with aliases mapped to the superset decoder a browser would use (Big5 ->
   Big5-HKSCS, GB2312/GBK -> GB18030) and verified by decoding strictly;
4. detection among the encodings Hong Kong text actually comes in (UTF-16/32 without a BOM,
   Big5-HKSCS, GB18030) with charset-normalizer, restricted with `cp_isolation` to those
   candidates so that it cannot settle on, say, cp1252 for Chinese bytes; its pick is then
   verified by decoding strictly.

Python's `big5hkscs` codec keeps the Hong Kong characters (𨋢 U+2820B, 𠵱 U+20D71) that plain
`big5`/`cp950` lose, and `gb18030` maps every Unicode code point, so neither drops text.

Large files are decided from their first `HEAD_BYTES` and then decoded line by line
(`iter_encoded_lines`), so memory stays bounded and a line that fails under the file's
encoding is quarantined on its own instead of failing the file.
"""

from __future__ import annotations

import codecs
import re
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import BinaryIO, NamedTuple

#: Bytes a decision is made from. 64 KiB holds hundreds of lines of text, plenty for the
#: detector, and bounds the work for a multi-gigabyte file.
HEAD_BYTES = 64 * 1024

#: Candidates for bytes that are not UTF-8 and carry no NUL byte: the legacy Chinese encodings.
#: Big5-HKSCS first: on equal evidence a Hong Kong corpus is more likely Big5 than GB.
LEGACY_CANDIDATES = ("big5hkscs", "gb18030")

#: Candidates for bytes with NULs and no BOM: ASCII and CJK text in UTF-16/32 always has them
#: (the newline alone is `0A 00`), while text in UTF-8, Big5 or GB18030 never has.
WIDE_CANDIDATES = ("utf_16_le", "utf_16_be", "utf_32_le", "utf_32_be")

# Byte-order marks, longest first: the UTF-32-LE mark begins with the UTF-16-LE one.
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32", "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32", "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8-sig", "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16", "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16", "utf-16-be"),
)

# Declared names mapped to the decoder to use, like the WHATWG Encoding Standard does for
# browsers: the declared name is often the subset while the bytes use the superset.
_ALIASES: dict[str, tuple[str, ...]] = {
    # Hong Kong Big5 pages routinely carry HKSCS characters whatever they declare; cp950
    # (Microsoft's Big5, with the euro sign) is the fallback for the few bytes HKSCS lacks.
    "big5": ("big5hkscs", "cp950"),
    "big5hkscs": ("big5hkscs", "cp950"),
    "cp950": ("cp950", "big5hkscs"),
    # GB2312 and GBK are subsets of GB18030.
    "gb2312": ("gb18030",),
    "gbk": ("gb18030",),
    "gb18030": ("gb18030",),
    # Latin-1 labels mean windows-1252 on the web.
    "iso8859_1": ("cp1252", "latin-1"),
    "ascii": ("utf-8",),
}
# Labels the web uses that Python's codec registry does not know.
_WEB_LABELS = {"x-x-big5": "big5", "x-gbk": "gbk", "x-cp950": "cp950"}

# The charset of `<meta charset=...>` and of `<meta http-equiv="Content-Type"
# content="text/html; charset=...">`; the XML declaration's `encoding=`.
_META_CHARSET = re.compile(rb"""<meta\b[^>]*?\bcharset\s*=\s*["']?\s*([A-Za-z0-9_.:\-]+)""", re.IGNORECASE)
_XML_ENCODING = re.compile(rb"""^\s*<\?xml\b[^>]*?\bencoding\s*=\s*["']([A-Za-z0-9_.:\-]+)["']""", re.IGNORECASE)
_HEADER_CHARSET = re.compile(r"""charset\s*=\s*["']?\s*([A-Za-z0-9_.:\-]+)""", re.IGNORECASE)

# C0 controls that never occur in text; a "decoding" that produces them is binary read as text.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")


@dataclass(frozen=True)
class Detection:
    """The encoding decided for one file.

    `encoding` is what is recorded on each record (e.g. "utf-8-sig", "big5hkscs", "utf-16");
    `codec` decodes the bytes after the byte-order mark (`bom_length` bytes), which for a
    UTF-16 file with a BOM is the byte order the BOM named.
    """

    encoding: str | None
    codec: str | None = None
    bom_length: int = 0
    tried: tuple[str, ...] = ()
    error: str | None = None
    #: UTF-8 only because the sample was all ASCII, which every candidate decodes alike: the
    #: file's first non-ASCII line that is not UTF-8 decides again (`redetect`).
    from_ascii: bool = False

    @property
    def ok(self) -> bool:
        return self.encoding is not None

    @property
    def unit(self) -> int:
        """Bytes per code unit: 1 for ASCII-compatible encodings, 2 for UTF-16, 4 for UTF-32."""
        name = codecs.lookup(self.codec or "utf-8").name
        return 4 if name.startswith("utf-32") else 2 if name.startswith("utf-16") else 1


@dataclass
class _Trial:
    tried: list[str] = field(default_factory=list)

    def add(self, name: str) -> None:
        label = display_name(name)
        if label not in self.tried:
            self.tried.append(label)


def display_name(codec: str) -> str:
    """The name recorded for a codec: Python's canonical name with dashes ("utf-16-le")."""
    try:
        return codecs.lookup(codec).name.replace("_", "-")
    except LookupError:
        return codec


def canonical_candidates(declared: str | None) -> tuple[str, ...]:
    """Decoders to try for a declared charset label, superset first; () if unknown."""
    if not declared:
        return ()
    label = declared.strip().strip("\"'").lower()
    label = _WEB_LABELS.get(label, label)
    try:
        name = codecs.lookup(label).name
    except LookupError:
        return ()
    return _ALIASES.get(name.replace("-", "_"), (name,))


def declared_charset(head: bytes) -> str | None:
    """The charset a page declares in its first bytes: `<meta>` or the XML declaration."""
    match = _XML_ENCODING.search(head) or _META_CHARSET.search(head)
    return match.group(1).decode("ascii", "replace") if match else None


def header_charset(content_type: str | None) -> str | None:
    """The `charset=` parameter of an HTTP Content-Type header."""
    if not content_type:
        return None
    match = _HEADER_CHARSET.search(content_type)
    return match.group(1) if match else None


def _try_decode(data: bytes, codec: str, final: bool) -> str | None:
    """`data` decoded strictly, or None; with `final=False` a sequence cut off at the end of a
    head sample is not an error (the rest of it is in the next block)."""
    try:
        text = codecs.getincrementaldecoder(codec)("strict").decode(data, final=final)
    except (UnicodeDecodeError, LookupError):
        return None
    if codecs.lookup(codec).name.startswith(("utf-16", "utf-32")) and _CONTROL.search(text):
        # UTF-16 accepts almost any even number of bytes; binary read that way yields
        # NULs and control characters, text does not.
        return None
    return text


def _decodes(data: bytes, codec: str, final: bool) -> bool:
    return _try_decode(data, codec, final) is not None


def _bom(head: bytes) -> tuple[bytes, str, str] | None:
    for mark, name, codec in _BOMS:
        if head.startswith(mark):
            return mark, name, codec
    return None


#: The last candidate, for English and European text saved by Windows tools ("Caf\xe9"):
#: tried only after UTF-8 and the Chinese encodings fail, and only on `_latin_text`.
LATIN_FALLBACK = "cp1252"


def _latin_text(sample: bytes) -> bool:
    """Non-ASCII bytes only one at a time between ASCII ones, as accented letters and curly
    quotes stand in cp1252 text. Chinese text in any encoding puts its non-ASCII bytes next
    to each other (a Big5 or GB character is a pair, a UTF-8 one three bytes), so a damaged
    Big5 file is never read as cp1252 mojibake."""
    high = [index for index, byte in enumerate(sample) if byte > 0x7F]
    if not high:
        return False
    paired = sum(1 for a, b in zip(high, high[1:]) if b == a + 1)
    return paired == 0


def _mostly_utf8(sample: bytes) -> bool:
    """UTF-8 with a few corrupt bytes, rather than another encoding.

    Text in Big5 or GB18030 almost never forms valid multi-byte UTF-8 sequences, while UTF-8
    with a damaged line still has mostly valid ones. Without this test a UTF-8 file with one
    bad byte would be "detected" as GB18030, which decodes nearly any byte pair (mojibake).
    """
    text = sample.decode("utf-8", "replace")
    bad = text.count("\ufffd")
    good = sum(1 for ch in text if ord(ch) > 0x7F and ch != "\ufffd")
    return good > 0 and good >= 4 * bad


#: charset-normalizer's chaos threshold for a second try when its default (0.2) ranks no
#: candidate. It gives up on a candidate when too many of its sampled chunks look messy,
#: and short records of Big5 text do: a valid 158 KB Big5 JSONL file of 3,000 short lines
#: was ranked big5hkscs from its first 16, 50 and 100 KB (chaos 0.14 to 0.17) but not from
#: 32 or 64 KB, and was then read as UTF-8 with 99% of its lines quarantined. Every
#: candidate the detector ranks must still decode the whole sample strictly (`detect`).
LOOSE_CHAOS_THRESHOLD = 0.5


def _detector_ranking(sample: bytes, candidates: Sequence[str]) -> list[str]:
    """charset-normalizer's ranking of `candidates` for `sample`, best first (once more with
    LOOSE_CHAOS_THRESHOLD when it ranks none)."""
    from charset_normalizer import from_bytes

    matches = from_bytes(sample, cp_isolation=list(candidates), explain=False)
    if not matches:
        matches = from_bytes(sample, cp_isolation=list(candidates), threshold=LOOSE_CHAOS_THRESHOLD, explain=False)
    ranked: list[str] = []
    for match in matches:
        name = codecs.lookup(match.encoding).name
        if name not in ranked and name in {codecs.lookup(c).name for c in candidates}:
            ranked.append(name)
    return ranked


def _split_lines(sample: bytes) -> list[bytes]:
    return [line for line in sample.split(b"\n") if line.strip()]


def _plausible_share(text: str) -> float:
    """Share of non-ASCII characters that are assigned, non-private-use letters or punctuation."""
    wide = [ch for ch in text if ord(ch) > 0x7F]
    if not wide:
        return 1.0
    good = sum(1 for ch in wide if unicodedata.category(ch)[0] in "LPNSZ" and unicodedata.category(ch) != "Co")
    return good / len(wide)


def detect(
    head: bytes,
    *,
    final: bool,
    declared: Sequence[str | None] = (),
    line_based: bool = False,
) -> Detection:
    """Decide the encoding of a file from its first bytes.

    `final`: `head` is the whole file (else a sequence cut at its end is not an error).
    `declared`: charset labels in order of authority (HTTP header, then the page's own).
    `line_based`: the caller decodes line by line and quarantines lines that fail, so a file
    that mostly decodes still gets an encoding (JSONL, plain text); a whole document (HTML)
    must decode entirely.
    """
    trial = _Trial()
    bom = _bom(head)
    if bom is not None:
        mark, name, codec = bom
        trial.add(codec)
        body = head[len(mark):]
        if line_based or _decodes(body, codec, final):
            return Detection(name, codec, len(mark), tuple(trial.tried))
        return _undecodable(trial)

    if any(label for label in declared) and not head.isascii() and _decodes(head, "utf-8", final):
        # Valid multi-byte UTF-8 beats a declared legacy charset: Big5 or GB text almost never
        # forms valid UTF-8, while mislabelled UTF-8 is common (a CMS template that kept its
        # `charset=big5`, a server that adds `charset=ISO-8859-1` to every response).
        trial.add("utf-8")
        return Detection("utf-8", "utf-8", 0, tuple(trial.tried))

    for label in declared:
        for codec in canonical_candidates(label):
            # A declared UTF-16/32 without a BOM is a mislabel (browsers read it as UTF-8),
            # and a declared encoding the bytes do not decode in is a lie: fall through.
            if codec.startswith(("utf_16", "utf_32", "utf-16", "utf-32")):
                continue
            trial.add(codec)
            if _decodes(head, codec, final):
                return Detection(display_name(codec), codec, 0, tuple(trial.tried))

    if b"\x00" in head and not _utf8_with_stray_nuls(head, final):
        # Line by line, a file cut inside its last character loses that line, not the file.
        return _detect_wide(head, final and not line_based, trial)
    if not final and b"\n" in head:
        # Decide from whole lines: a character cut at the end of the sample would make the
        # detector drop the right encoding (it discards candidates that fail to decode).
        head, final = head[: head.rfind(b"\n") + 1], True

    trial.add("utf-8")
    if _decodes(head, "utf-8", final):
        return Detection("utf-8", "utf-8", 0, tuple(trial.tried), from_ascii=head.isascii())
    if _mostly_utf8(head):
        if line_based:
            return Detection("utf-8", "utf-8", 0, tuple(trial.tried))
        return _undecodable(trial, error=_utf8_error(head))

    for codec in LEGACY_CANDIDATES:
        trial.add(codec)
    ranked = _detector_ranking(head, LEGACY_CANDIDATES)
    for codec in ranked:
        if _decodes(head, codec, final):
            return Detection(display_name(codec), codec, 0, tuple(trial.tried))
    if _latin_text(head):
        trial.add(LATIN_FALLBACK)
        if _decodes(head, LATIN_FALLBACK, final):
            return Detection(display_name(LATIN_FALLBACK), LATIN_FALLBACK, 0, tuple(trial.tried))
    if line_based:
        return _detect_damaged_lines(head, trial)
    return _undecodable(trial)


#: At most this share of NUL bytes is "stray" in UTF-8 text (a byte a broken export or a
#: copy from a binary field left). UTF-16/32 text of ASCII characters has a NUL in every other
#: (every fourth) byte; of CJK characters, one for each space, digit or newline, but its bytes
#: do not form UTF-8 once the NULs are taken out (the test below).
STRAY_NUL_SHARE = 0.05


def _utf8_with_stray_nuls(head: bytes, final: bool) -> bool:
    """UTF-8 text with a few NUL bytes in it: without them it is valid, non-empty UTF-8 and
    they are under STRAY_NUL_SHARE of the bytes. Read as UTF-16 instead, an even-length
    English line became CJK-looking garbage that passed every later step."""
    nuls = head.count(0)
    return nuls <= STRAY_NUL_SHARE * len(head) and _decodes(head.replace(b"\x00", b""), "utf-8", final)


def _detect_wide(head: bytes, final: bool, trial: _Trial) -> Detection:
    """UTF-16/32 without a byte-order mark, or binary."""
    for codec in ("utf-16", "utf-32"):
        trial.add(codec)
    ranked = _detector_ranking(head, WIDE_CANDIDATES)
    # The detector ranks only what it could decode; check the rest too (short samples).
    order = ranked + [name for name in (codecs.lookup(c).name for c in WIDE_CANDIDATES) if name not in ranked]
    for codec in order:
        text = _try_decode(head, codec, final)
        if text is not None and _plausible_share(text) > 0.9:
            return Detection(display_name(codec), codec, 0, tuple(trial.tried))
    return Detection(None, None, 0, tuple(trial.tried), error="binary file (NUL bytes) where text was expected")


def _detect_damaged_lines(head: bytes, trial: _Trial) -> Detection:
    """No candidate decodes every line: pick by the lines that decode under every legacy
    candidate (the detector needs clean input), else UTF-8 (its errors name the bytes)."""
    clean = [
        line for line in _split_lines(head)
        if not line.isascii() and all(_decodes(line, codec, True) for codec in LEGACY_CANDIDATES)
    ]
    if clean:
        ranked = _detector_ranking(b"\n".join(clean), LEGACY_CANDIDATES)
        if ranked:
            return Detection(display_name(ranked[0]), ranked[0], 0, tuple(trial.tried))
    return Detection("utf-8", "utf-8", 0, tuple(trial.tried))


def _utf8_error(data: bytes) -> str:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as error:
        return f"invalid UTF-8 at byte {error.start}: {data[error.start:error.start + 4]!r}"
    return "invalid UTF-8"


def _undecodable(trial: _Trial, error: str | None = None) -> Detection:
    return Detection(None, None, 0, tuple(trial.tried), error=error or f"undecodable: tried {', '.join(trial.tried)}")


def redetect(sample: bytes, detection: Detection) -> Detection:
    """The encoding for the rest of a file whose head was all ASCII (`Detection.from_ascii`),
    decided from `sample`: whole lines from its first non-ASCII line that is not UTF-8 on
    (about HEAD_BYTES). A Big5 export after 64 KiB of English lines was read as UTF-8 and
    2,967 of its 3,000 Chinese lines quarantined. Stays `detection` when the sample decides
    nothing better (binary, or UTF-8 after all: then the line is damaged UTF-8)."""
    again = detect(sample, final=True, line_based=True)
    if not again.ok or again.unit != 1 or codecs.lookup(again.codec).name == "utf-8":
        return replace(detection, from_ascii=False)
    return replace(again, tried=tuple(dict.fromkeys(detection.tried + again.tried)))


def decode_line(raw: bytes, detection: Detection) -> tuple[str | None, str | None, str | None]:
    """One line's bytes (without its newline) as `(text, error, encoding)`: the text and the
    encoding it was read in, or the error that names the bytes.

    A line that is not in the file's legacy encoding but is valid multi-byte UTF-8 is read as
    UTF-8: files concatenated from a Big5 export and a UTF-8 one are common, and Big5/GB bytes
    almost never form valid UTF-8, so the fallback cannot mis-read a legacy line.
    """
    codec = detection.codec or "utf-8"
    try:
        return raw.decode(codec), None, detection.encoding
    except UnicodeDecodeError as error:
        is_utf8 = codecs.lookup(codec).name == "utf-8"
        if not is_utf8 and detection.unit == 1 and not raw.isascii():
            try:
                return raw.decode("utf-8"), None, "utf-8"
            except UnicodeDecodeError:
                pass
        label = "UTF-8" if is_utf8 else display_name(codec)
        return None, f"invalid {label} at byte {error.start}: {raw[error.start:error.start + 4]!r}", None


def decode_document(
    data: bytes,
    *,
    declared: Sequence[str | None] = (),
    markup: bool = False,
) -> tuple[str | None, Detection]:
    """A whole document (an HTML page, a WARC payload) as text, with the encoding decided.

    With `markup`, the page's own `<meta charset>` / XML declaration counts as declared,
    after the labels in `declared` (the HTTP header wins over the page, as in browsers).
    """
    labels = list(declared)
    if markup:
        labels.append(declared_charset(data[:HEAD_BYTES]))
    detection = detect(data, final=True, declared=labels)
    if not detection.ok:
        return None, detection
    try:
        return data[detection.bom_length:].decode(detection.codec), detection
    except UnicodeDecodeError:  # detect() verified it; kept as a guard against codec quirks
        return None, _undecodable(_Trial(list(detection.tried)))


class EncodedLine(NamedTuple):  # a tuple: one is made per line of every file
    """One line of a file: its number, its bytes without the newline (None when it was over
    the size limit and skipped), its size in bytes and whether a newline ended it."""

    number: int
    raw: bytes | None
    size: int
    complete: bool


def _newline(codec: str) -> bytes:
    name = codecs.lookup(codec).name
    if name in ("utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be"):
        return "\n".encode(name)
    return b"\n"  # ASCII-compatible: no multi-byte character of UTF-8, Big5 or GB18030 holds 0x0A


def iter_encoded_lines(
    handle: BinaryIO,
    detection: Detection,
    *,
    limit: int,
    chunk_size: int = HEAD_BYTES,
) -> Iterator[EncodedLine]:
    """Lines of a binary stream split at the encoding's newline, never holding more than one
    line (or `limit` bytes of an over-long one, which is then counted and skipped).

    Splitting bytes, not text, keeps each line's decode error on that line. For UTF-16/32 the
    newline must sit on a code-unit boundary (`0A 00` inside a character does not count).
    """
    newline = _newline(detection.codec or "utf-8")
    unit = detection.unit
    handle.seek(detection.bom_length)
    if unit == 1:
        yield from _iter_byte_lines(handle, limit, chunk_size)
        return
    buffer = bytearray()
    number = 0
    skipping = False  # inside a line already known to be over the limit
    skipped = 0
    while True:
        chunk = handle.read(chunk_size)
        if chunk:
            buffer += chunk
        search_from = 0
        while True:
            position = buffer.find(newline, search_from)
            while position != -1 and position % unit:
                position = buffer.find(newline, position + 1)
            if position == -1:
                break
            number += 1
            if skipping:
                yield EncodedLine(number, None, skipped + position, True)
                skipping, skipped = False, 0
            else:
                yield EncodedLine(number, bytes(buffer[:position]), position, True)
            del buffer[: position + len(newline)]
        if not chunk:
            break
        if len(buffer) > limit:
            # Keep the line's tail aligned to the code unit so the next newline is found.
            keep = len(buffer) % unit
            skipped += len(buffer) - keep
            del buffer[: len(buffer) - keep]
            skipping = True
    if skipping or buffer:
        number += 1
        if skipping:
            yield EncodedLine(number, None, skipped + len(buffer), False)
        else:
            yield EncodedLine(number, bytes(buffer), len(buffer), False)


def _iter_byte_lines(handle: BinaryIO, limit: int, chunk_size: int) -> Iterator[EncodedLine]:
    """`iter_encoded_lines` for ASCII-compatible encodings: the buffered reader's own
    `readline`, bounded so an over-long line is never held whole."""
    number = 0
    while True:
        raw = handle.readline(limit + 1)
        if not raw:
            return
        number += 1
        if raw.endswith(b"\n"):
            yield EncodedLine(number, raw[:-1], len(raw) - 1, True)
        elif len(raw) <= limit:  # the last line, without a newline
            yield EncodedLine(number, raw, len(raw), False)
        else:
            size, complete = len(raw), False
            while more := handle.readline(chunk_size):
                if more.endswith(b"\n"):
                    size, complete = size + len(more) - 1, True
                    break
                size += len(more)
            yield EncodedLine(number, None, size, complete)
