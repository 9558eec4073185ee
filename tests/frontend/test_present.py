"""How trace data is shown: escaping, redaction markers, message parts, numbers."""

from frontend import present


def test_it_escapes_text_and_shows_redaction_placeholders_as_markers():
    html = present.with_redactions("<script>alert(1)</script> mail [EMAIL:3f9a] & [CARD:0b1c]")
    assert "<script>" not in html and "&lt;script&gt;" in html and "&amp;" in html
    assert html.count('class="redacted"') == 2
    assert (
        'title="EMAIL redacted before storage">EMAIL<span class="redacted-tag">3f9a</span>' in html
    )
    # Look-alikes are left as text.
    assert 'class="redacted"' not in present.with_redactions("[note: 12] [Email:3f9a]")


def test_it_turns_semconv_messages_into_conversation_parts():
    view = present.message_view(
        {
            "role": "assistant",
            "parts": [
                {"type": "text", "content": "Looking it up."},
                {"type": "tool_call", "id": "c1", "name": "lookup", "arguments": {"order": 7}},
                {"type": "tool_call_response", "id": "c1", "response": "x" * 2000},
                {"type": "reasoning", "content": "hm"},
            ],
        }
    )
    kinds = [p["kind"] for p in view["parts"]]
    assert view["role"] == "assistant" and kinds == ["text", "tool_call", "tool_result", "other"]
    assert (
        view["parts"][1]["name"] == "lookup" and "&quot;order&quot;: 7" in view["parts"][1]["html"]
    )
    assert view["parts"][2]["long"] is True
    system = present.system_view([{"type": "text", "content": "Be brief."}])
    assert system["role"] == "system" and "Be brief." in system["parts"][0]["html"]
    assert present.system_view("Plain string")["parts"][0]["html"] == "Plain string"
    # Older shapes with a content string still show.
    assert present.message_view({"role": "user", "content": "hi"})["parts"][0]["html"] == "hi"


def test_it_formats_durations_and_counts_for_people():
    assert present.duration(0.25) == "0.25 ms"
    assert present.duration(12.4) == "12 ms"
    assert present.duration(4200) == "4.20 s"
    assert present.duration(20000) == "20.0 s"
    assert present.duration(123_000) == "2m 03s"
    assert [present.count(n) for n in (999, 1000, 15300, 2_000_000)] == ["999", "1k", "15.3k", "2M"]
