"""Logto's Management API: the per-language email templates an admin keeps inside Logto."""
