"""Web pages and web crawls: HTML main-content extraction and WARC archives.

A web page is mostly not its article: menus, share buttons, related links and footers repeat
on every page of a site and would dominate a corpus built from their visible text. The main
content is extracted with trafilatura (its precision mode), which is maintained, benchmarked
against other extractors, and works on a string offline (nothing is fetched).

WARC files (`.warc`, `.warc.gz`: what Heritrix, wget, Browsertrix and Common Crawl write) are
read with warcio. Each `response` (and `resource`) record is one input document: HTML and plain
text become records, anything else (an image, a PDF, an error page) becomes a quarantine record
naming its URI and the reason. `warcinfo`, `request`, `metadata` and `revisit` records describe
the crawl, not documents, so they are neither records nor input. A corrupt or truncated stretch
of the archive becomes a quarantine record, and reading resumes at the next record it can find.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import BinaryIO

from hkgai_pipelines.sources.decoding import decode_document, header_charset
from hkgai_pipelines.sources.records import FileItem, QuarantineRecord, RawRecord, stable_record_id


#: Below this many extracted characters trafilatura tries harder (wild-text recovery and, out
#: of precision mode, a baseline rescue that brings menus back). Its default of 250 was set on
#: European-language pages; a Chinese notice says in 60 characters what English says in 200,
#: and a one-paragraph notice is a real document, so the threshold is lower here.
MIN_EXTRACTED_SIZE = 60
#: Shortest extraction that is still output (trafilatura's default, kept explicit): a
#: one-line notice is content; an empty page is not.
MIN_OUTPUT_SIZE = 1

HTML_TYPES = ("text/html", "application/xhtml+xml")
TEXT_TYPES = ("text/plain",)

# A document that starts like HTML, for WARC records that carry no Content-Type.
_LOOKS_LIKE_HTML = re.compile(rb"^\s*(?:\xef\xbb\xbf)?\s*<(?:!doctype\s+html|html|head|body)\b", re.IGNORECASE)
# How to find the next record after a corrupt stretch: a gzip member header, or a WARC
# version line at the start of a line.
_GZIP_MEMBER = b"\x1f\x8b\x08"
_WARC_VERSION = re.compile(rb"(?:^|\n)WARC/1\.[01]\r\n")

# Responses that record how the crawl ran, not a document.
_NOT_DOCUMENT_SCHEMES = {"dns", "whois"}

# Headlines inside these are site furniture (a logo, a menu), not the article's.
_FURNITURE = {"nav", "footer", "aside"}


@lru_cache(maxsize=1)
def _extraction_config():
    from trafilatura.settings import use_config

    config = use_config()
    config.set("DEFAULT", "MIN_EXTRACTED_SIZE", str(MIN_EXTRACTED_SIZE))
    config.set("DEFAULT", "MIN_OUTPUT_SIZE", str(MIN_OUTPUT_SIZE))
    # The timeout is a SIGALRM in trafilatura's CLI only; 0 keeps it off should that change
    # (signals only work in the main thread, and Dagster runs steps in threads).
    config.set("DEFAULT", "EXTRACTION_TIMEOUT", "0")
    return config


def _squash(text: str | None) -> str:
    return " ".join(text.split()) if text else ""


def _page_title(tree) -> str | None:
    """The page's `<title>`: what the publisher named the page (trafilatura's metadata title
    prefers a lone `<h1>`, which is the headline and stays in the text)."""
    element = tree.find(".//title")
    title = _squash(element.text_content()) if element is not None else ""
    return title or None


def _headline(tree) -> str | None:
    """The article's headline: the page's only `<h1>`, unless it sits in site furniture (a
    `<nav>`, `<aside>`, `<footer>`, or a `<header>` outside `<article>`/`<main>`: a logo)."""
    headings = tree.findall(".//h1")
    if len(headings) != 1:
        return None
    ancestors = {element.tag for element in headings[0].iterancestors() if isinstance(element.tag, str)}
    if ancestors & _FURNITURE or ("header" in ancestors and not ancestors & {"article", "main"}):
        return None
    return _squash(headings[0].text_content()) or None


def extract_main_content(html: str, url: str | None = None) -> tuple[str | None, str | None]:
    """(title, main text) of a page; text None when the page has no main content.

    Paragraphs are separated by newlines. The headline is part of the article: trafilatura
    keeps it when the article sits in a container (`<article>`, `<main>`, a content `<div>`)
    but its recovery of loose body-level paragraphs does not look at headings, so a lone
    `<h1>` it left out is put back in front.
    """
    import trafilatura
    from trafilatura.utils import load_html

    tree = load_html(html)
    if tree is None or tree.find(".//body") is None:
        # A saved fragment (`<p>...</p>` with no `<html>`/`<body>`): trafilatura's loader
        # refuses it and its extractor looks for a body, so give it one.
        tree = load_html(f"<html><body>{html}</body></html>")
    if tree is None:
        return None, None
    title, headline = _page_title(tree), _headline(tree)
    text = trafilatura.extract(
        tree,
        # Navigation is never content; trafilatura drops it from pages that have an article,
        # but on a page with nothing else its fallbacks would return the menu.
        prune_xpath=["//nav"],
        url=url,
        include_comments=False,
        include_tables=True,
        include_images=False,
        include_links=False,
        favor_precision=True,  # a corpus would rather lose a caption than keep a menu
        deduplicate=False,  # per-document; corpus-level dedup happens in curation
        with_metadata=False,
        output_format="txt",
        config=_extraction_config(),
    )
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    if lines and headline and not any(headline in line for line in lines):
        lines.insert(0, headline)
    return title, "\n".join(lines) or None


def html_record(
    data: bytes,
    *,
    name: str,
    locator: str,
    source: str,
    licence: str,
    declared: tuple[str | None, ...] = (),
    url: str | None = None,
) -> FileItem:
    """One HTML document (a file's bytes or a WARC payload) as a record or a quarantine record."""
    markup, detection = decode_document(data, declared=declared, markup=True)
    if markup is None:
        return QuarantineRecord(name, None, _where(url, detection.error or "undecodable"), source)
    try:
        title, text = extract_main_content(markup, url=url)
    except Exception as error:  # an extractor bug on one odd page must not stop the run
        return QuarantineRecord(name, None, _where(url, f"HTML extraction failed ({type(error).__name__}: {error})"), source)
    if not text:
        return QuarantineRecord(name, None, _where(url, "HTML has no main content"), source)
    return _record(text, name=name, locator=locator, source=source, licence=licence, title=title, encoding=detection.encoding)


def _record(text: str, *, name: str, locator: str, source: str, licence: str, title: str | None = None, encoding: str | None) -> RawRecord:
    """A record whose id is scoped to its file: a crawl's locator is the page URI, and the same
    page in two crawl files is two records (then an exact duplicate), not one id twice."""
    scope = locator if locator == name else f"{name}#{locator}"
    return RawRecord(text=text, source=source, licence=licence, locator=locator, title=title, encoding=encoding,
                     id=stable_record_id(source, scope, text))


def _where(url: str | None, error: str) -> str:
    return f"{url}: {error}" if url else error


def _plain_text_record(data: bytes, *, name: str, url: str, source: str, licence: str, declared: tuple[str | None, ...]) -> FileItem:
    text, detection = decode_document(data, declared=declared)
    if text is None:
        return QuarantineRecord(name, None, _where(url, detection.error or "undecodable"), source)
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").split("\n")]
    text = "\n".join(lines).strip()
    if not text:
        return QuarantineRecord(name, None, _where(url, "empty text response"), source)
    return _record(text, name=name, locator=url, source=source, licence=licence, encoding=detection.encoding)


def read_warc(path: Path, name: str, source: str, licence: str, limit: int) -> Iterator[FileItem]:
    """Every document of a WARC file: a record per HTML/text response, a quarantine record per
    other response and per corrupt stretch of the file."""
    with path.open("rb") as handle:
        gzipped = handle.read(2) == b"\x1f\x8b"
        offset = 0
        while offset is not None:
            handle.seek(offset)
            offset = yield from _read_warc_from(handle, gzipped, name, source, licence, limit)


def _read_warc_from(handle: BinaryIO, gzipped: bool, name: str, source: str, licence: str, limit: int) -> Iterator[FileItem]:
    """Records from the handle's position on; returns where to resume after a corrupt stretch,
    or None at the end of the file."""
    from warcio.archiveiterator import ArchiveIterator

    # Digests (WARC-Block-Digest, WARC-Payload-Digest) are checked where the writer recorded
    # them: in an uncompressed file they are the only sign that bytes went missing.
    iterator = ArchiveIterator(handle, check_digests=True)
    records = iter(iterator)
    while True:
        try:
            record = next(records)
            if record.format != "warc":
                # warcio reads any line of five fields as an ARC header: junk is not a record.
                raise ValueError("not a WARC record")
        except StopIteration:
            return None
        except Exception as error:  # zlib.error, ArchiveLoadFailed, EOFError...: bad bytes are data
            # The iterator's offset is where the record it failed on began (absolute: a file
            # can tell() its position).
            failed_at = iterator.offset
            resume = _next_record_start(handle, failed_at + 1, gzipped)
            skipped = f"bytes {failed_at}-{resume}" if resume is not None else f"from byte {failed_at} to the end"
            yield QuarantineRecord(name, None, f"corrupt WARC data ({type(error).__name__}: {_short(error)}); skipped {skipped}", source)
            return resume
        item = _warc_document(record, name, source, licence, limit)
        if item is not None:
            yield item


def _short(error: Exception) -> str:
    """The error message, short and printable (warcio quotes the corrupt bytes it read)."""
    text = "".join(ch if ch.isprintable() and ord(ch) < 0x7F else "?" for ch in " ".join(str(error).split()))
    return text[:80] + ("..." if len(text) > 80 else "")


def _next_record_start(handle: BinaryIO, position: int, gzipped: bool, block: int = 1 << 20) -> int | None:
    """Where the next gzip member (or WARC record) begins at or after `position`."""
    handle.seek(position)
    carry = b""
    base = position
    while True:
        chunk = handle.read(block)
        if not chunk:
            return None
        data = carry + chunk
        if gzipped:
            found = data.find(_GZIP_MEMBER)
            while found != -1:
                # The magic bytes also occur by chance inside compressed data: a real member
                # decompresses to a WARC header.
                if _starts_warc_member(handle, base + found):
                    return base + found
                found = data.find(_GZIP_MEMBER, found + 1)
        else:
            match = _WARC_VERSION.search(data)
            if match:
                return base + match.start() + (1 if data[match.start():match.start() + 1] == b"\n" else 0)
        keep = 16  # a marker split across two blocks
        carry = data[-keep:]
        base += len(data) - len(carry)


def _starts_warc_member(handle: BinaryIO, position: int) -> bool:
    here = handle.tell()
    handle.seek(position)
    head = handle.read(4096)
    handle.seek(here)
    try:
        return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(head, 64).startswith(b"WARC/")
    except zlib.error:
        return False


def _warc_document(record, name: str, source: str, licence: str, limit: int) -> FileItem | None:
    """One WARC record as a document, a quarantine record, or None when it is not a document."""
    if record.rec_type not in ("response", "resource"):
        return None  # warcinfo, request, metadata, revisit, conversion: about the crawl
    url = record.rec_headers.get_header("WARC-Target-URI") or ""
    if record.rec_type == "response" and url.split(":", 1)[0].lower() in _NOT_DOCUMENT_SCHEMES:
        return None  # Heritrix records its DNS lookups as `dns:` responses
    url = url or f"{name}@{record.rec_headers.get_header('WARC-Record-ID')}"

    def quarantine(reason: str) -> QuarantineRecord:
        return QuarantineRecord(name, None, f"{url}: {reason}", source)

    if record.rec_type == "response":
        if record.http_headers is None:
            return quarantine("response without HTTP headers")
        status = record.http_headers.get_statuscode() or ""
        if not status.startswith("2"):
            return quarantine(f"HTTP status {status or 'missing'}")
        content_type = record.http_headers.get_header("Content-Type")
    else:
        content_type = record.rec_headers.get_header("Content-Type")
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type and media_type not in HTML_TYPES + TEXT_TYPES:
        return quarantine(f"not a text document (Content-Type {media_type})")
    try:
        body = record.content_stream().read(limit + 1)
    except Exception as error:  # a broken chunked/gzip/brotli transfer encoding
        return quarantine(f"unreadable payload ({type(error).__name__}: {_short(error)})")
    if len(body) > limit:
        return quarantine(f"payload over the {limit}-byte limit")
    if getattr(record.raw_stream, "limit", 0):
        return quarantine(f"truncated record ({record.raw_stream.limit} of {record.length} bytes missing)")
    checker = getattr(record, "digest_checker", None)
    if checker is not None and checker.passed is False:
        return quarantine(f"corrupt record ({'; '.join(checker.problems)})")
    declared = (header_charset(content_type),)
    if media_type in TEXT_TYPES:
        return _plain_text_record(body, name=name, url=url, source=source, licence=licence, declared=declared)
    if media_type or _LOOKS_LIKE_HTML.match(body[:1024]):
        return html_record(body, name=name, locator=url, source=source, licence=licence, declared=declared, url=url)
    return quarantine("not a text document (no Content-Type, and not HTML)")
