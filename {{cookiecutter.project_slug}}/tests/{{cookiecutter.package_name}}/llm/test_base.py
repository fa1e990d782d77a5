"""What every provider shares: a stream's progress counts bytes as the wire carries them,
and a vendor's error text reaches the logs shortened and without secrets."""

from __future__ import annotations

from {{ cookiecutter.package_name }}.llm.base import (
    MAX_ERROR_DETAIL_CHARS,
    StreamProgress,
    safe_detail,
    vendor_error_detail,
)


def test_stream_progress_counts_utf8_bytes_even_of_a_lone_surrogate() -> None:
    progress = StreamProgress()
    progress.add_text("Hé")
    progress.add_text("\ud800")
    assert progress.text_bytes == 3 + 3
    assert progress.output_tokens is None and not progress.usage_final


def test_error_details_are_one_short_line_without_secrets() -> None:
    detail = safe_detail("bad key sk-123\n" + "x" * 1000, "sk-123", None)
    assert "sk-123" not in detail and "[redacted]" in detail
    assert "\n" not in detail and len(detail) == MAX_ERROR_DETAIL_CHARS
    assert detail.endswith("...")


def test_a_vendor_error_body_names_its_kind_and_message() -> None:
    body = {"error": {"type": "rate_limit_error", "message": "Slow down"}}
    assert "rate_limit_error" in vendor_error_detail(body)
    assert "Slow down" in vendor_error_detail(body)
