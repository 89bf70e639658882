"""Web pages (main content, not every visible string) and WARC crawls."""

import io

from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from hkgai_pipelines.sources.files import read_files
from hkgai_pipelines.sources.records import QuarantineRecord, RawRecord
from hkgai_pipelines.sources.web import extract_main_content

NEWS_PAGE = """<html><head><meta charset="utf-8"><title>港聞</title></head><body>
<div class="top"><a>登入</a><a>訂閱</a></div>
<div class="menu"><a>首頁</a><a>港聞</a><a>財經</a><a>國際</a><a>娛樂</a><a>體育</a></div>
<h1>颱風過後：巴士服務逐步恢復</h1>
<p>運輸署表示，八號風球除下後，各區巴士服務會於兩小時內逐步恢復，市民出行前應留意最新消息。</p>
<p>港鐵列車服務維持正常，但部分露天路段班次會較疏，乘客應預留更多時間。</p>
<div class="share"><a>分享到 Facebook</a><a>分享到 WhatsApp</a><a>分享到 X</a></div>
<div class="foot">版權所有 © 2024 某某新聞<br>私隱政策<br>使用條款</div>
</body></html>"""


def _read(path, **kwargs):
    return list(read_files([path], source="t", licence="CC0-1.0", root=path.parent, **kwargs))


def test_news_page_keeps_headline_and_paragraphs_only():
    title, text = extract_main_content(NEWS_PAGE)
    assert title == "港聞"
    assert text == (
        "颱風過後：巴士服務逐步恢復\n"
        "運輸署表示，八號風球除下後，各區巴士服務會於兩小時內逐步恢復，市民出行前應留意最新消息。\n"
        "港鐵列車服務維持正常，但部分露天路段班次會較疏，乘客應預留更多時間。"
    )


def test_headline_inside_article_is_not_repeated():
    page = "<html><head><title>T</title></head><body><nav><a>Home</a></nav><article><h1>港鐵新線通車</h1>" \
           "<p>新線今日通車，全程約二十分鐘，票價與現有路線看齊。</p></article><footer>© 2024</footer></body></html>"
    assert extract_main_content(page) == ("T", "港鐵新線通車\n新線今日通車，全程約二十分鐘，票價與現有路線看齊。")


def test_short_notice_still_extracts_and_empty_page_is_quarantined(tmp_path):
    short = tmp_path / "short.html"
    short.write_text("<html><body><p>明日停水。</p></body></html>", encoding="utf-8")
    empty = tmp_path / "empty.html"
    empty.write_text("<html><head><title>空</title><script>x()</script></head><body><nav><a>首頁</a></nav></body></html>", encoding="utf-8")
    (record,) = _read(short)
    assert (record.text, record.title, record.encoding) == ("明日停水。", None, "utf-8")
    assert _read(empty) == [QuarantineRecord("empty.html", None, "HTML has no main content", "t")]


def _response(writer, uri, content_type, body, status="200 OK"):
    headers = StatusAndHeaders(status, [("Content-Type", content_type)], protocol="HTTP/1.1")
    return writer.create_warc_record(uri, "response", payload=io.BytesIO(body), http_headers=headers)


def _crawl(gzip: bool) -> bytes:
    buffer = io.BytesIO()
    writer = WARCWriter(buffer, gzip=gzip)
    writer.write_record(writer.create_warcinfo_record("crawl.warc", {"software": "test"}))
    request = StatusAndHeaders("GET /notice HTTP/1.1", [("Host", "example.hk")], is_http_request=True)
    writer.write_record(writer.create_warc_record("https://example.hk/notice", "request", http_headers=request))
    # Big5 declared only in the HTTP header, not in the page
    big5_page = "<html><head><title>屋苑通告</title></head><body><p>由於𨋢要維修，本週六暫停服務。</p></body></html>"
    writer.write_record(_response(writer, "https://example.hk/notice", "text/html; charset=big5", big5_page.encode("big5hkscs")))
    writer.write_record(_response(writer, "https://example.hk/logo.png", "image/png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"))
    writer.write_record(_response(writer, "https://example.hk/news", "text/html", NEWS_PAGE.encode("utf-8")))
    return buffer.getvalue()


def test_warc_reads_html_responses_and_quarantines_the_rest(tmp_path):
    for name, gzip in (("crawl.warc", False), ("crawl.warc.gz", True)):
        path = tmp_path / name
        path.write_bytes(_crawl(gzip))
        notice, image, news = _read(path)
        assert isinstance(notice, RawRecord) and isinstance(news, RawRecord)
        assert (notice.locator, notice.title, notice.text, notice.encoding) == (
            "https://example.hk/notice", "屋苑通告", "由於𨋢要維修，本週六暫停服務。", "big5hkscs")
        assert image == QuarantineRecord(name, None, "https://example.hk/logo.png: not a text document (Content-Type image/png)", "t")
        assert (news.locator, news.title, news.encoding) == ("https://example.hk/news", "港聞", "utf-8")
        assert news.text.startswith("颱風過後：巴士服務逐步恢復\n運輸署表示") and "分享" not in news.text


def test_warc_error_status_is_quarantined(tmp_path):
    buffer = io.BytesIO()
    writer = WARCWriter(buffer, gzip=True)
    writer.write_record(_response(writer, "https://example.hk/gone", "text/html", b"<html><body><p>Not found</p></body></html>", "404 Not Found"))
    path = tmp_path / "c.warc.gz"
    path.write_bytes(buffer.getvalue())
    assert _read(path) == [QuarantineRecord("c.warc.gz", None, "https://example.hk/gone: HTTP status 404", "t")]


def test_corrupt_gzip_member_is_quarantined_and_the_rest_read(tmp_path):
    data = bytearray(_crawl(True))
    members = [i for i in range(len(data)) if data[i:i + 3] == b"\x1f\x8b\x08"]
    image_member = members[3]  # warcinfo, request, notice, image, news
    for i in range(image_member + 20, image_member + 40):
        data[i] ^= 0x55
    path = tmp_path / "bad.warc.gz"
    path.write_bytes(bytes(data))
    notice, corrupt, news = _read(path)
    assert notice.locator == "https://example.hk/notice"
    assert corrupt.file == "bad.warc.gz" and corrupt.error.startswith("corrupt WARC data (")
    assert corrupt.error.endswith(f"skipped bytes {image_member}-{members[4]}")
    assert news.locator == "https://example.hk/news"


def test_truncated_warc_gz_quarantines_the_cut_record(tmp_path):
    path = tmp_path / "cut.warc.gz"
    path.write_bytes(_crawl(True)[:-40])
    items = _read(path)
    assert [type(i).__name__ for i in items] == ["RawRecord", "QuarantineRecord", "QuarantineRecord"]
    assert items[2].error.startswith("https://example.hk/news: truncated record (")


def test_not_a_warc_is_quarantined(tmp_path):
    path = tmp_path / "junk.warc.gz"
    path.write_bytes(b"\x1f\x8b\x08\x00junk that is not gzip data")
    (item,) = _read(path)
    assert isinstance(item, QuarantineRecord) and item.error.startswith("corrupt WARC data (")


def test_the_same_page_in_two_crawls_is_two_records_then_an_exact_duplicate(tmp_path, curation_params):
    """A re-crawl of a page: ids are scoped to the crawl file, so the copy reaches dedup
    (exact_duplicate) instead of colliding as one id twice."""
    from hkgai_pipelines.curation.pipeline import run_curation
    from hkgai_pipelines.sources.files import read_files

    for month in ("01", "02"):
        (tmp_path / f"crawl-2026-{month}.warc.gz").write_bytes(_crawl(True))
    items = list(read_files([tmp_path], source="t", licence="x"))
    notices = [item for item in items if isinstance(item, RawRecord) and item.locator == "https://example.hk/notice"]
    assert len(notices) == 2 and notices[0].id != notices[1].id
    result, _ = run_curation(items, curation_params, tmp_path / "out")
    assert "repair:duplicate_id" not in result.stats.by_reason
    assert result.stats.by_reason["dedup:exact_duplicate"] == 2
