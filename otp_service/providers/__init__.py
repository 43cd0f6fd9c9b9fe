"""Providers: one interface (:class:`~otp_service.providers.base.Provider`), one module each."""
