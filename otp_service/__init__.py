"""otp-service: delivers Logto's one-time passcodes by email and SMS."""

__version__ = "0.1.0"
