"""What the engine proxy's launch view lets the run launcher do: a container-create body check.

The daemon and webserver hold no Docker socket; they create, start, stop and remove run
containers through the engine proxy's launch listener. :class:`RunPolicy` is the filter: a
create body passes only when it asks for the configured run image, carries the run labels, is
hardened (CapDrop ALL, no-new-privileges, read-only root, non-root user) and asks for nothing that
reaches the host (privileged, added capabilities, host namespaces, host-path binds, devices,
sysctls, weakened seccomp/AppArmor, published ports, another network). HostConfig is checked
against an allowlist: an unknown key with a non-empty value is refused too.

Binds: the data volume at the data directory and, when configured, exactly one more: the
secrets source (a named volume, or an absolute host path the operator names) at the secrets
directory, read-only (``SOURCE:TARGET:ro``, no other option). Anything else is refused.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

RUN_ID_LABEL = "dagster/run_id"
"""Label dagster-docker sets on every run container."""

ROOT_USERS = frozenset({"", "0", "root"})
NO_NEW_PRIVILEGES = frozenset({"no-new-privileges", "no-new-privileges:true", "no-new-privileges=true"})
PRIVATE_NAMESPACE = frozenset({"", "private", "none", "shareable"})
LOG_DRIVERS = frozenset({"", "json-file", "local"})
HOST_CONFIG_ALLOWED = frozenset({
    "Binds", "NetworkMode", "CapDrop", "SecurityOpt", "ReadonlyRootfs", "Tmpfs", "LogConfig",
    "Memory", "MemorySwap", "MemoryReservation", "NanoCpus", "CpuShares", "PidsLimit", "ShmSize",
    "Init", "IpcMode", "CgroupnsMode", "OomKillDisable", "Ulimits", "RestartPolicy", "AutoRemove",
})
"""HostConfig keys a run container may set (the checks below look at their values)."""
NULL_ONLY = frozenset({"MaskedPaths", "ReadonlyPaths"})
"""Keys whose empty list weakens the container (unmasks /proc paths): only null passes."""


class Refused(ValueError):
    """A request the launch view refuses; the message is the short reason sent back (403)."""


def _empty(value: Any) -> bool:
    return value in (None, "", False, 0) or (isinstance(value, (list, dict)) and not value)


@dataclass(frozen=True)
class RunPolicy:
    """The run containers the launch view may create and control."""

    image: str
    network: str
    labels: Mapping[str, str] = field(default_factory=dict)
    data_volume: str = ""
    data_dir: str = "/var/lib/e2i/data"
    tmpfs: frozenset[str] = frozenset({"/tmp"})
    secrets_source: str = ""
    """Named volume or absolute host path run containers may bind read-only at ``secrets_dir``."""
    secrets_dir: str = "/run/secrets"

    def __post_init__(self) -> None:
        source = self.secrets_source
        if source and (":" in source or (source.startswith("/") and os.path.normpath(source) != source)
                       or (not source.startswith("/") and "/" in source)):
            raise ValueError(f"secrets source must be a volume name or a normalised absolute path, got {source!r}")
        if self.secrets_dir in ("", "/") or not os.path.isabs(self.secrets_dir) or self.secrets_dir == self.data_dir:
            raise ValueError(f"secrets directory must be an absolute path other than the data directory, "
                             f"got {self.secrets_dir!r}")

    # -- containers that exist -----------------------------------------------------------------
    def owns(self, labels: Mapping[str, str] | None) -> bool:
        """Whether a container with ``labels`` is a run container of this stack."""
        labels = labels or {}
        return bool(labels.get(RUN_ID_LABEL)) and all(labels.get(k) == v for k, v in self.labels.items())

    # -- create bodies ---------------------------------------------------------------------------
    def check_create(self, body: Any) -> None:
        """Raise :class:`Refused` naming the first thing ``body`` (a parsed create JSON) may not ask."""
        if not isinstance(body, dict):
            raise Refused("container create body must be a JSON object")
        if body.get("Image") != self.image:
            raise Refused(f"Image must be the run image {self.image}")
        if not self.owns(body.get("Labels") if isinstance(body.get("Labels"), dict) else None):
            wanted = ", ".join([RUN_ID_LABEL, *(f"{k}={v}" for k, v in self.labels.items())])
            raise Refused(f"Labels must carry the run labels ({wanted})")
        user = str(body.get("User") or "")
        if user.partition(":")[0] in ROOT_USERS:
            raise Refused("User must be a non-root user")
        if not _empty(body.get("Entrypoint")):
            raise Refused("Entrypoint may not be overridden")
        host = body.get("HostConfig")
        if not isinstance(host, dict):
            raise Refused("HostConfig must be a JSON object")
        self.check_host_config(host)
        volumes = body.get("Volumes") or {}
        targets = {self.data_dir, self.secrets_dir} if self.secrets_source else {self.data_dir}
        if not isinstance(volumes, dict) or set(volumes) - targets:
            raise Refused(f"Volumes may only name {' and '.join(sorted(targets))}")
        self._check_networking(body.get("NetworkingConfig"))

    def _check_networking(self, networking: Any) -> None:
        if _empty(networking):
            return
        endpoints = networking.get("EndpointsConfig", networking) if isinstance(networking, dict) else None
        if not isinstance(endpoints, dict) or set(endpoints) - {self.network}:
            raise Refused(f"NetworkingConfig may only name the run network {self.network}")

    def check_host_config(self, host: dict[str, Any]) -> None:
        """The HostConfig part of :meth:`check_create`."""
        for key, value in host.items():
            if key not in HOST_CONFIG_ALLOWED and not (_empty(value) and (value is None or key not in NULL_ONLY)):
                raise Refused(f"HostConfig.{key} is not allowed for run containers")
        if host.get("NetworkMode") != self.network:
            raise Refused(f"HostConfig.NetworkMode must be the run network {self.network}")
        if [str(c).upper().removeprefix("CAP_") for c in host.get("CapDrop") or []] != ["ALL"]:
            raise Refused("HostConfig.CapDrop must be [ALL]")
        options = host.get("SecurityOpt") or []
        if not isinstance(options, list) or not options or set(map(str, options)) - NO_NEW_PRIVILEGES:
            raise Refused("HostConfig.SecurityOpt must be [no-new-privileges] only (no seccomp/apparmor/label)")
        if host.get("ReadonlyRootfs") is not True:
            raise Refused("HostConfig.ReadonlyRootfs must be true")
        for key in ("IpcMode", "CgroupnsMode"):
            if str(host.get(key) or "") not in PRIVATE_NAMESPACE:
                raise Refused(f"HostConfig.{key} must be private")
        self._check_binds(host.get("Binds") or [])
        tmpfs = host.get("Tmpfs") or {}
        if not isinstance(tmpfs, dict) or set(tmpfs) - self.tmpfs:
            raise Refused(f"HostConfig.Tmpfs may only mount {', '.join(sorted(self.tmpfs))}")
        log = host.get("LogConfig") or {}
        if not isinstance(log, dict) or str(log.get("Type") or "") not in LOG_DRIVERS:
            raise Refused("HostConfig.LogConfig.Type must be json-file or local")

    def _check_binds(self, binds: Any) -> None:
        if not isinstance(binds, list):
            raise Refused("HostConfig.Binds must be a list")
        for bind in binds:
            source, _, rest = str(bind).partition(":")
            target, _, mode = rest.partition(":")
            if self.secrets_source and source == self.secrets_source:
                if target != self.secrets_dir or mode != "ro":
                    raise Refused(f"HostConfig.Binds may mount the secrets source only read-only at "
                                  f"{self.secrets_dir} (SOURCE:{self.secrets_dir}:ro)")
                continue
            if source.startswith("/") or "/" in source:
                raise Refused("HostConfig.Binds may not mount a host path")
            if not self.data_volume or source != self.data_volume or target != self.data_dir:
                raise Refused(f"HostConfig.Binds may only mount the data volume at {self.data_dir}")


def parse_label(value: str) -> tuple[str, str]:
    """``KEY=VALUE`` -> (key, value)."""
    key, sep, val = value.partition("=")
    if not sep or not key:
        raise ValueError(f"label wants KEY=VALUE, got {value!r}")
    return key, val
