#!/usr/bin/env bash
# CI aid: make a stand-in for the Dockerfile's base image `python:3.11-slim` from Debian
# packages, for machines that run a Docker engine but cannot pull from Docker Hub. Not for
# production images: build those on the real base image.
#
#   sudo scripts/base-image.sh            # tags python:3.11-slim unless it exists already
#   sudo scripts/base-image.sh --force    # rebuild the stand-in even if the tag exists
#
# What it makes: Debian bookworm (minbase) with python3 (3.11), python3-venv and
# ca-certificates, `python`/`python3` linked into /usr/local/bin as in the official image, and
# this host's CA bundle copied in so pip inside `docker build` trusts what the host trusts
# (e.g. a proxy's CA). Then `docker build --network host .` works unchanged. Needs root,
# debootstrap, docker and Debian's package mirror. Output: the image id on stdout.
set -euo pipefail
tag="python:3.11-slim"
suite="bookworm"
force=0
[ "${1:-}" = "--force" ] && force=1
if [ "$force" = 0 ] && docker image inspect "$tag" >/dev/null 2>&1; then
  echo "$tag exists already (use --force to replace it)" >&2
  docker image inspect --format '{{.Id}}' "$tag"
  exit 0
fi
[ "$(id -u)" = 0 ] || { echo "error: debootstrap needs root" >&2; exit 1; }
command -v debootstrap >/dev/null || { echo "error: debootstrap is missing (apt-get install debootstrap)" >&2; exit 1; }
root="$(mktemp -d "${TMPDIR:-/tmp}/otp-base-image.XXXXXX")"
trap 'rm -rf --one-file-system "$root"' EXIT
echo "debootstrap $suite into $root (minbase, python3, python3-venv, ca-certificates)" >&2
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
  "$suite" "$root" >"$root.log" 2>&1 || { tail -20 "$root.log" >&2; rm -f "$root.log"; exit 1; }
rm -f "$root.log"
ln -sf /usr/bin/python3 "$root/usr/local/bin/python3"
ln -sf /usr/bin/python3 "$root/usr/local/bin/python"
# The host's CA bundle, so pip (which reads it through SSL_CERT_FILE/PIP_CERT or the system
# store) trusts the same authorities as the host.
host_bundle=/etc/ssl/certs/ca-certificates.crt
if [ -r "$host_bundle" ]; then
  cp "$host_bundle" "$root/etc/ssl/certs/ca-certificates.crt"
fi
# Keep the image small: no package lists or caches.
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
tar -C "$root" -c . | docker import \
  --change 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["python3"]' \
  - "$tag"
