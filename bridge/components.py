"""What every source and sink config shares: strict validation, a unique name, and secrets that
may come from `<field>_file` paths instead of the YAML itself."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from bridge.secrets import SecretFileError, read_secret_file, remember

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,62}$"


class StrictModel(BaseModel):
    """Unknown keys are errors: a typo in YAML must not silently become a default."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class SecretFields(BaseModel):
    """Mixin for any config model holding secrets: `<field>_file` fills a `SecretStr` field from
    a file, and every secret value is remembered so that logs redact it. Nested models (one
    API key per tenant) use it too, so a secret is handled the same way at any depth."""

    @model_validator(mode="before")
    @classmethod
    def _secret_files(cls, data: Any) -> Any:
        """`api_key_file: /run/secrets/x` fills `api_key` from that file."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for field_name, info in cls.model_fields.items():
            file_key = f"{field_name}_file"
            if file_key not in data:
                continue
            if info.annotation not in (SecretStr, SecretStr | None):
                continue
            if data.get(field_name) is not None:
                raise ValueError(f"set either {field_name} or {file_key}, not both")
            path = Path(str(data.pop(file_key)))
            try:
                data[field_name] = read_secret_file(path)
            except OSError as exc:
                raise ValueError(f"{file_key}: cannot read {path}: {exc.strerror}") from None
            except SecretFileError as exc:
                raise ValueError(f"{file_key}: {exc}") from None
        return data

    @field_validator("*", mode="after")
    @classmethod
    def _remember_secrets(cls, value: Any) -> Any:
        if isinstance(value, SecretStr):
            remember(value.get_secret_value())
        return value


class ComponentConfig(SecretFields, StrictModel):
    """Base of every source and sink config; subclasses add `type: Literal[...]`."""

    name: str = Field(pattern=NAME_PATTERN)
    # Each component narrows this to a Literal: the tag of the config union.
    type: str
    # Regular expressions for this component's credentials (a vendor's key prefix): redacted
    # everywhere even where nobody configured that key, e.g. a key pasted into an error text.
    secret_patterns: ClassVar[tuple[str, ...]] = ()
