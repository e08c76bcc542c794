"""Simple formatting of email written in the CRM."""

from engagements.richtext import to_html


def test_marks_become_html():
    html = to_html(
        "Hi **Ada**,\n\nsee [the plan](https://example.com/p?a=1&b=2).\n- one *item*\n- two"
    )

    assert "<strong>Ada</strong>" in html
    assert (
        '<a href="https://example.com/p?a=1&amp;b=2" rel="noopener noreferrer">the plan</a>' in html
    )
    assert "<ul><li>one <em>item</em></li><li>two</li></ul>" in html
    assert html.startswith("<p>Hi <strong>Ada</strong>,</p>")


def test_typed_markup_and_unsafe_links_stay_text():
    html = to_html("<img src=x onerror=alert(1)> [click](javascript:alert(1)) snake_case 2*3*4")

    assert "<img" not in html and "&lt;img" in html
    assert "javascript:" not in html.split("[click]")[0]
    assert "<a " not in html
    assert "snake_case 2*3*4" in html


def test_bare_links_are_linked_without_trailing_punctuation():
    assert to_html("Go to https://example.com/x.") == (
        '<p>Go to <a href="https://example.com/x" rel="noopener noreferrer">'
        "https://example.com/x</a>.</p>"
    )
