#!/usr/bin/env bash
# Build a local Python 3.11 base image from Debian bookworm (no registry needed):
#   debootstrap --variant=minbase ... bookworm ROOT && tar -C ROOT -c . | docker import - IMAGE
# Idempotent: does nothing when IMAGE already exists (set E2I_REBUILD_BASE=1 to force).
# Usage: docker/build_base_image.sh [IMAGE]   (default: e2i-base:bookworm)
#        docker/build_base_image.sh --print-mirror   (print the Debian mirror it would use, exit)
# The mirror is the host's own: the first enabled `deb` source for bookworm in the host's apt
# sources ($E2I_APT_DIR, default /etc/apt: sources.list, then sources.list.d/*.list and deb822
# *.sources in apt's order). E2I_DEBIAN_MIRROR overrides it.
set -euo pipefail
SUITE=bookworm
APT_DIR=${E2I_APT_DIR:-/etc/apt}

# One-line format: `deb [options] URI SUITE COMPONENT...`; print the first URI serving $SUITE.
list_mirror() {
  awk -v suite="$SUITE" '
    $1 == "deb" {
      i = 2
      if ($2 ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
      if ($(i + 1) == suite && $i ~ /^(https?|file):/) { print $i; exit }
    }' "$1"
}

# deb822 format: stanzas of Types/URIs/Suites/Enabled fields (values may continue on indented lines).
sources_mirror() {
  awk -v suite="$SUITE" '
    BEGIN { RS = ""; FS = "\n" }
    {
      types = ""; uris = ""; suites = ""; enabled = "yes"; field = ""
      for (i = 1; i <= NF; i++) {
        line = $i
        if (line ~ /^#/) continue
        if (line ~ /^[ \t]/) value = line
        else { n = index(line, ":"); if (!n) continue; field = tolower(substr(line, 1, n - 1)); value = substr(line, n + 1) }
        if (field == "types") types = types " " value
        else if (field == "uris") uris = uris " " value
        else if (field == "suites") suites = suites " " value
        else if (field == "enabled") enabled = value
      }
      gsub(/[ \t]/, "", enabled)
      if (tolower(enabled) == "no" || (types " ") !~ /[ \t]deb[ \t]/ || (suites " ") !~ ("[ \t]" suite "[ \t]")) next
      n = split(uris, list, /[ \t]+/)
      for (k = 1; k <= n; k++) if (list[k] ~ /^(https?|file):/) { print list[k]; exit }
    }' "$1"
}

host_mirror() {
  local file found
  for file in "$APT_DIR/sources.list" "$APT_DIR"/sources.list.d/*.list "$APT_DIR"/sources.list.d/*.sources; do
    [ -f "$file" ] || continue
    case "$file" in
      *.sources) found=$(sources_mirror "$file") ;;
      *) found=$(list_mirror "$file") ;;
    esac
    if [ -n "$found" ]; then echo "${found%/}"; return 0; fi
  done
  return 1
}

debian_mirror() {
  local mirror=${E2I_DEBIAN_MIRROR:-$(host_mirror || true)}
  if [ -z "$mirror" ]; then
    echo "no Debian $SUITE mirror in the apt sources under $APT_DIR; set E2I_DEBIAN_MIRROR" >&2
    return 1
  fi
  echo "$mirror"
}

if [ "${1:-}" = --print-mirror ]; then debian_mirror; exit; fi
IMAGE=${1:-${E2I_BASE_IMAGE:-e2i-base:bookworm}}
# python3-venv brings ensurepip (pip wheel); libgomp1 is LightGBM's OpenMP runtime.
PACKAGES=python3,python3-venv,ca-certificates,libgomp1

if [ "${E2I_REBUILD_BASE:-0}" != 1 ] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
  echo "base image $IMAGE exists; skipping (E2I_REBUILD_BASE=1 rebuilds)"
  exit 0
fi
command -v debootstrap >/dev/null || {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
}

MIRROR=$(debian_mirror)
root=$(mktemp -d /tmp/e2i-base.XXXXXX)
trap 'rm -rf "$root"' EXIT
echo "debootstrap $SUITE from $MIRROR into $root ..."
debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$root" "$MIRROR" >"$root.log" 2>&1 || {
  tail -30 "$root.log" >&2; exit 1; }
rm -f "$root.log"
# Trim what a container never needs: apt lists and caches, docs, man pages, locales.
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
  "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/locale/*
# Same apt sources as the host's Debian, so `apt-get install` works in derived images.
printf 'deb %s %s main\ndeb %s %s-updates main\n' "$MIRROR" "$SUITE" "$MIRROR" "$SUITE" \
  >"$root/etc/apt/sources.list"

tar -C "$root" -c . | docker import \
  --change 'ENV LANG=C.UTF-8' \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["python3"]' \
  - "$IMAGE" >/dev/null
echo "built $IMAGE ($(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1/1e6}'))"
