"""Configuration: settings declared once, the config file, the providers' connector JSON."""

from .capture import CaptureConfig, CaptureSmtpConfig
from .settings import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    SCOPES,
    ApiToken,
    AuthConfig,
    Config,
    DeliveryConfig,
    EmailConfig,
    Limit,
    LimitsConfig,
    ServerConfig,
    TemplatesConfig,
    expand_env,
    is_loopback,
    load_config,
    parse_config,
)
from .smtp import PoolConfig
from .store import StoreConfig, default_store_path, redact_url

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "SCOPES",
    "ApiToken",
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
