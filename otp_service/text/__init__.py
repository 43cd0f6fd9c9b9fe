"""Pure text helpers for every stage: sanitising, addresses, locales, HTML-to-text, SMS segments."""
