"""How the emulators read a multipart part's file name: as the hosts' servers do."""

from __future__ import annotations

from imgsync.fakehosts.common import sent_filename


def _cd(value: str) -> dict[str, str]:
    return {"Content-Disposition": value}


def test_a_backslash_is_kept_unless_it_escapes_a_quote_or_a_backslash() -> None:
    assert sent_filename(_cd(r'form-data; name="f"; filename="a\b.png"'), "ab.png") == r"a\b.png"
    assert sent_filename(_cd(r'form-data; name="f"; filename="a\\b.png"'), None) == r"a\b.png"
    assert sent_filename(_cd(r'form-data; name="f"; filename="a\"b.png"'), None) == 'a"b.png'


def test_names_are_not_decoded_and_plain_tokens_work() -> None:
    assert sent_filename(_cd('form-data; name="f"; filename="a%22b.png"'), None) == "a%22b.png"
    assert sent_filename(_cd("form-data; name=f; filename=plain.png"), None) == "plain.png"
    assert sent_filename(_cd('form-data; name="x; filename=no.png"'), None) is None
    assert sent_filename({}, "parsed.png") == "parsed.png"
