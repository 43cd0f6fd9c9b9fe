"""Commands for operators that do not serve: check-config (with --online) and migrate."""
