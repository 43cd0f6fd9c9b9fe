"""The capture inbox as a web page, so a developer can read codes in a browser."""

from __future__ import annotations

from collections.abc import Sequence

from jinja2 import Environment

from ..message.compose import Message

_PAGE = Environment(autoescape=True).from_string(
    """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="5">
<title>otp-service inbox ({{ messages|length }})</title>
<style>
body{font:15px/1.4 system-ui,sans-serif;margin:2rem auto;max-width:60rem;padding:0 1rem;color:#1c1c1c}
table{border-collapse:collapse;width:100%}td,th{padding:.5rem;border-bottom:1px solid #ddd;text-align:left;vertical-align:top}
.code{font:600 1.4rem ui-monospace,monospace;letter-spacing:.15em}
details pre{white-space:pre-wrap;background:#f6f6f6;padding:.5rem}
.muted{color:#666}
</style></head><body>
<h1>Captured messages</h1>
<p class="muted">Newest first; refreshes every 5 s. JSON: <code>GET /v1/messages</code>.
Empty it with <code>DELETE /v1/messages</code>.</p>
{% if not messages %}<p>No message yet. Trigger a sign-in in Logto, or run
<code>otp-service send --channel email --to you@example.com --type SignIn --code 123456</code>.</p>
{% else %}<table><thead><tr><th>When (UTC)</th><th>To</th><th>Type</th><th>Code</th><th>Message</th></tr></thead>
<tbody>{% for m in messages %}<tr>
<td>{{ m.created_at.strftime("%H:%M:%S") }}<br><span class="muted">{{ m.channel }} · {{ m.locale }}</span></td>
<td>{{ m.to }}</td><td>{{ m.type }}</td>
<td class="code">{{ m.code or "" }}{% if m.link and m.link.startswith(("https://", "http://")) %}<br><a href="{{ m.link }}">link</a>{% endif %}</td>
<td>{% if m.subject %}<strong>{{ m.subject }}</strong>{% endif %}
<details><summary>text</summary><pre>{{ m.text }}</pre></details></td>
</tr>{% endfor %}</tbody></table>{% endif %}
</body></html>
"""
)


def render_inbox(messages: Sequence[Message]) -> str:
    return _PAGE.render(messages=messages)
