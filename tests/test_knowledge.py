import pytest

from hkgai_pipelines.rag.knowledge import KnowledgeError, documents_from_records
from hkgai_pipelines.sources.records import RawRecord


def _record(locator, text, title="T"):
    return RawRecord(text=f"{title}\n\n{text}" if title else text, source="kb", licence="x", locator=locator, title=title)


def test_documents_carry_title_body_and_language():
    (doc,) = documents_from_records([_record("a.md", "佢哋聽日去旺角。")], max_chars=1000)
    assert (doc.doc_id, doc.title, doc.body, doc.lang) == ("kb/a", "T", "佢哋聽日去旺角。", "yue")


@pytest.mark.parametrize(
    "records, message",
    [
        ([_record("a.md", "")], "kb/a: empty document"),
        ([_record("a.md", "字" * 1001)], "kb/a: 1001 characters exceeds the 1000-character limit"),
        ([_record("a.md", "一"), _record("a.md", "二")], "duplicate document id kb/a"),
    ],
)
def test_bad_documents_fail_the_refresh_with_a_clear_error(records, message):
    with pytest.raises(KnowledgeError, match=message):
        documents_from_records(records, max_chars=1000)
