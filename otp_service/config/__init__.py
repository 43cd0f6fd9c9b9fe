"""Configuration: the config file, Logto's SMTP / Vonage / Aliyun connector JSON, field reading."""

from .capture import CaptureConfig, CaptureSmtpConfig
from .settings import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    EMAIL_PROVIDERS,
    AuthConfig,
    Config,
    DeliveryConfig,
    EmailConfig,
    Limit,
    LimitsConfig,
    PoolConfig,
    ServerConfig,
    TemplatesConfig,
    expand_env,
    is_loopback,
    load_config,
    parse_config,
)
from .store import StoreConfig, default_store_path, redact_url

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "EMAIL_PROVIDERS",
    "AuthConfig",
    "CaptureConfig",
    "CaptureSmtpConfig",
    "Config",
    "DeliveryConfig",
    "EmailConfig",
    "Limit",
    "LimitsConfig",
    "PoolConfig",
    "ServerConfig",
    "StoreConfig",
    "TemplatesConfig",
    "default_store_path",
    "expand_env",
    "is_loopback",
    "load_config",
    "parse_config",
    "redact_url",
]
