"""Object stores (S3 and S3-compatible, Google Cloud Storage, Azure Blob) through obstore.

obstore (Python bindings of the Rust `object_store` crate, used by Apache Arrow, Delta and
DataFusion) gives the same three guarantees on all three: a put is atomic (no reader ever sees
part of an object), `mode="create"` is a conditional write (`If-None-Match: *` on S3 and Azure,
`ifGenerationMatch=0` on GCS) that fails with AlreadyExistsError instead of replacing, and 5xx,
dropped connections and timeouts are retried inside a bounded budget. It is one self-contained
wheel with no async stack to pin (s3fs/gcsfs/adlfs each need their own aiohttp-based SDK and
offer create-only writes unevenly).

Credentials come only from the environment, as every AWS/GCP/Azure tool reads them:
`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`,
`AWS_DEFAULT_REGION` (or `AWS_REGION`), `AWS_PROFILE` (through boto3, when installed);
`GOOGLE_APPLICATION_CREDENTIALS`, `GOOGLE_SERVICE_ACCOUNT`, `GOOGLE_SERVICE_ACCOUNT_KEY`,
`STORAGE_EMULATOR_HOST` (a GCS emulator, as Google's own clients read it);
`AZURE_STORAGE_CONNECTION_STRING`, or `AZURE_STORAGE_ACCOUNT_NAME` with
`AZURE_STORAGE_ACCOUNT_KEY` / `AZURE_STORAGE_SAS_TOKEN` / a service principal, and
`AZURE_STORAGE_ENDPOINT` (Azurite, sovereign clouds). They are never passed around by this
project, so they cannot appear in task arguments, results, logs or files; error messages are
cut to the store's own words (method, address, status, code), which hold no credential.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from datetime import timedelta
from typing import TYPE_CHECKING, Any, cast

from shared.errors import ConfigError, OutputExistsError, StorageError, StorageUnavailableError
from shared.storage.location import Location, check_key
from shared.storage.store import Store

if TYPE_CHECKING:  # obstore's option types exist only in its stubs
    from obstore.store import AzureConfig, ClientConfig, GCSConfig, RetryConfig, S3Config

# A write (or a read) that gets no answer is tried this long inside one call, then handed back as
# StorageUnavailableError: the caller retries later, the prediction is never made again for it.
RETRY_BUDGET = timedelta(seconds=20)
REQUEST_TIMEOUT = timedelta(seconds=30)
CONNECT_TIMEOUT = timedelta(seconds=5)
_AWS_VARIABLES = (
    ("AWS_ACCESS_KEY_ID", "access_key_id"),
    ("AWS_SECRET_ACCESS_KEY", "secret_access_key"),
    ("AWS_SESSION_TOKEN", "session_token"),
    ("AWS_REGION", "region"),
    ("AWS_DEFAULT_REGION", "region"),
)
# The variables obstore's Azure and GCS configs know (their own names are accepted as keys), read
# from the mapping given like the AWS ones; any other AZURE_*/GOOGLE_* variable is left alone.
_AZURE_VARIABLES = (
    "AZURE_STORAGE_ACCOUNT_NAME",
    "AZURE_STORAGE_ACCOUNT_KEY",
    "AZURE_STORAGE_ACCESS_KEY",
    "AZURE_STORAGE_MASTER_KEY",
    "AZURE_STORAGE_SAS_KEY",
    "AZURE_STORAGE_SAS_TOKEN",
    "AZURE_STORAGE_TOKEN",
    "AZURE_STORAGE_CLIENT_ID",
    "AZURE_STORAGE_CLIENT_SECRET",
    "AZURE_STORAGE_TENANT_ID",
    "AZURE_CLIENT_ID",
    "AZURE_CLIENT_SECRET",
    "AZURE_TENANT_ID",
    "AZURE_AUTHORITY_HOST",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_STORAGE_ENDPOINT",
    "AZURE_STORAGE_USE_EMULATOR",
    "AZURE_USE_AZURE_CLI",
)
_GOOGLE_VARIABLES = (
    "GOOGLE_APPLICATION_CREDENTIALS",
    "GOOGLE_SERVICE_ACCOUNT",
    "GOOGLE_SERVICE_ACCOUNT_PATH",
    "GOOGLE_SERVICE_ACCOUNT_KEY",
)
_STATUS = re.compile(r"status code: (\d{3})")
_CODE = re.compile(r"<Code>([A-Za-z]+)</Code>")


class CloudStore(Store):
    def __init__(
        self,
        location: Location,
        *,
        environ: dict[str, str] | None = None,
        timeout: timedelta = REQUEST_TIMEOUT,
    ):
        self.location = location
        self._store = _open(location, dict(os.environ if environ is None else environ), timeout)

    def put(self, key: str, data: bytes, *, overwrite: bool, content_type: str | None = None) -> None:
        import obstore

        key = check_key(key)
        attributes: dict[str, Any] = {"Content-Type": content_type} if content_type else {}
        try:
            # "create" is one conditional PUT of the whole object; "overwrite" lets obstore use a
            # multipart upload for large objects, completed (made visible) only at the end.
            obstore.put(
                self._store,
                key,
                data,
                mode="overwrite" if overwrite else "create",
                attributes=attributes or None,
            )
        except Exception as exc:  # noqa: BLE001 - every store error is classified below
            # A PUT creates its object: "not found" can only be the bucket (or container).
            raise _classify(exc, f"cannot write {self.url(key)}", writing=True) from None

    def get(self, key: str) -> bytes:
        import obstore

        key = check_key(key)
        try:
            return bytes(obstore.get(self._store, key).bytes())
        except Exception as exc:  # noqa: BLE001
            raise _classify(exc, f"cannot read {self.url(key)}") from None

    def size(self, key: str) -> int | None:
        import obstore

        key = check_key(key)
        try:
            return int(obstore.head(self._store, key)["size"])
        except FileNotFoundError:
            return None
        except Exception as exc:  # noqa: BLE001
            error = _classify(exc, f"cannot look at {self.url(key)}")
            if "no such object" in str(error):
                return None
            raise error from None

    def delete(self, key: str) -> None:
        import obstore

        key = check_key(key)
        try:
            obstore.delete(self._store, key)
        except FileNotFoundError:
            return
        except Exception as exc:  # noqa: BLE001
            raise _classify(exc, f"cannot delete {self.url(key)}") from None

    def list(self, prefix: str = "") -> Iterator[tuple[str, int]]:
        import obstore

        try:
            for page in obstore.list(self._store, prefix=prefix or None, chunk_size=1000):
                for meta in page:
                    yield str(meta["path"]), int(meta["size"])
        except Exception as exc:  # noqa: BLE001
            raise _classify(exc, f"cannot list {self.url(prefix)}") from None


def _open(location: Location, environ: dict[str, str], timeout: timedelta):
    try:
        from obstore.store import AzureStore, GCSStore, S3Store
    except ImportError:
        extra = {"s3": "s3", "gs": "gcs", "az": "azure"}[location.scheme]
        raise ConfigError(
            f"OUTPUT_DIR {location.url()} needs the object-store extra: "
            f"pip install 'replicate-fleet[{extra}]'"
        ) from None
    client: ClientConfig = {"timeout": timeout, "connect_timeout": CONNECT_TIMEOUT}
    retry: RetryConfig = {"max_retries": 4, "retry_timeout": RETRY_BUDGET}
    prefix = location.prefix or None
    try:
        if location.scheme == "s3":
            endpoint = environ.get("AWS_ENDPOINT_URL_S3") or environ.get("AWS_ENDPOINT_URL") or ""
            if endpoint.startswith("http://"):
                client["allow_http"] = True  # a local MinIO / moto: plain HTTP was asked for
            # The standard variables, read from the mapping given (the process's environment by
            # default); anything else (instance roles, web identity) obstore finds by itself.
            # (_AWS_VARIABLES names S3Config's keys; a TypedDict is not built from names in a loop)
            s3_config = cast(
                "S3Config", {name: environ[var] for var, name in _AWS_VARIABLES if environ.get(var)}
            )
            if endpoint:
                s3_config["endpoint"] = endpoint
            return S3Store(
                location.bucket,
                prefix=prefix,
                config=s3_config or None,
                client_options=client,
                retry_config=retry,
                credential_provider=_aws_profile(environ),
            )
        if location.scheme == "gs":
            emulator = _gcs_emulator(environ)
            if emulator.startswith("http://"):
                client["allow_http"] = True  # an emulator on plain HTTP was asked for
            gcs_config = _gcs_config(environ, emulator)
            return GCSStore(
                location.bucket,
                prefix=prefix,
                config=cast("GCSConfig | None", gcs_config or None),  # (its keys are GCSConfig's)
                client_options=client,
                retry_config=retry,
            )
        azure_config = _azure_config(environ)
        if azure_config.get("AZURE_STORAGE_ENDPOINT", "").startswith("http://"):
            client["allow_http"] = True  # Azurite: its endpoint is plain HTTP
        return AzureStore(
            location.bucket,
            prefix=prefix,
            config=cast("AzureConfig | None", azure_config or None),  # (its keys are AzureConfig's)
            client_options=client,
            retry_config=retry,
        )
    except Exception as exc:  # noqa: BLE001 - obstore raises its own config errors
        raise ConfigError(f"OUTPUT_DIR {location.url()}: {_first_line(exc)}") from None


def _azure_config(environ: dict[str, str]) -> dict[str, Any]:
    """AZURE_STORAGE_CONNECTION_STRING (what the Azure CLI and SDKs read) or the separate variables."""
    config: dict[str, Any] = {name: environ[name] for name in _AZURE_VARIABLES if environ.get(name)}
    text = environ.get("AZURE_STORAGE_CONNECTION_STRING", "").strip()
    if not text:
        return config
    parts = dict(
        (name.strip(), value.strip())
        for name, _eq, value in (p.partition("=") for p in text.split(";") if p.strip())
    )
    if parts.get("UseDevelopmentStorage", "").lower() == "true":
        config["AZURE_STORAGE_USE_EMULATOR"] = "true"
    for key, name in (
        ("AccountName", "AZURE_STORAGE_ACCOUNT_NAME"),
        ("AccountKey", "AZURE_STORAGE_ACCOUNT_KEY"),
        ("SharedAccessSignature", "AZURE_STORAGE_SAS_TOKEN"),
        ("BlobEndpoint", "AZURE_STORAGE_ENDPOINT"),
    ):
        if parts.get(key):
            config.setdefault(name, parts[key])  # a variable set on its own wins over the string
    if "AZURE_STORAGE_ENDPOINT" not in config and parts.get("EndpointSuffix") and parts.get("AccountName"):
        protocol = parts.get("DefaultEndpointsProtocol", "https")
        config["AZURE_STORAGE_ENDPOINT"] = (
            f"{protocol}://{parts['AccountName']}.blob.{parts['EndpointSuffix']}"
        )
    return config


def _gcs_emulator(environ: dict[str, str]) -> str:
    """STORAGE_EMULATOR_HOST (what Google's own clients read) as a URL, or ''."""
    host = environ.get("STORAGE_EMULATOR_HOST", "").strip().rstrip("/")
    return host if not host or "://" in host else f"http://{host}"


def _gcs_config(environ: dict[str, str], emulator: str) -> dict[str, Any]:
    """The GOOGLE_* credentials; or, for an emulator, a service account that sends requests to it
    without OAuth (`gcs_base_url`, `disable_oauth`: how object_store's own tests reach one)."""
    if emulator:
        account = {"gcs_base_url": emulator, "disable_oauth": True, "client_email": "", "private_key": ""}
        return {"service_account_key": json.dumps({**account, "private_key_id": ""})}
    return {name: environ[name] for name in _GOOGLE_VARIABLES if environ.get(name)}


def _aws_profile(environ: dict[str, str]):
    """AWS_PROFILE (shared config and credentials files) through boto3, when no keys are set."""
    if not environ.get("AWS_PROFILE") or environ.get("AWS_ACCESS_KEY_ID"):
        return None
    try:
        import boto3
        from obstore.auth.boto3 import Boto3CredentialProvider
    except ImportError:
        raise ConfigError("AWS_PROFILE needs boto3: pip install 'replicate-fleet[s3]' boto3") from None
    return Boto3CredentialProvider(boto3.Session(profile_name=environ["AWS_PROFILE"]))


def _classify(exc: Exception, what: str, *, writing: bool = False) -> StorageError | StorageUnavailableError:
    """Refusals for good (the item fails, no paid fallback) apart from no answer (retry later)."""
    from obstore import exceptions as e

    reason = _reason(exc)
    if isinstance(exc, e.AlreadyExistsError):
        return OutputExistsError(f"{what}: it exists already")
    if isinstance(exc, (e.PermissionDeniedError, e.UnauthenticatedError)):
        return StorageError(f"{what}: access denied ({reason})")
    if isinstance(exc, (FileNotFoundError, e.NotFoundError)):
        if (
            writing
            or "NoSuchBucket" in str(exc)
            or "ContainerNotFound" in str(exc)
            or "bucket does not exist" in str(exc)
        ):
            return StorageError(f"{what}: no such bucket ({reason})")
        return StorageError(f"{what}: no such object")
    status = _STATUS.search(str(exc))
    code = int(status.group(1)) if status else None
    if code is not None and 400 <= code < 500 and code not in (408, 429):
        return StorageError(f"{what}: refused ({reason})")
    if isinstance(exc, (e.InvalidPathError, e.NotSupportedError, e.UnknownConfigurationKeyError)):
        return StorageError(f"{what}: {reason}")
    return StorageUnavailableError(f"{what}: the store did not answer ({reason})")


def _reason(exc: Exception) -> str:
    text = str(exc)
    status = _STATUS.search(text)
    code = _CODE.search(text)
    if status:
        return f"HTTP {status.group(1)}" + (f" {code.group(1)}" if code else "")
    return _first_line(exc)


def _first_line(exc: Exception) -> str:
    line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return line[:300]
