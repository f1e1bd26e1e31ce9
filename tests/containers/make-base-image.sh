#!/usr/bin/env bash
# make-base-image.sh: make a local `debian:bookworm-slim` image when the
# Docker engine has none and cannot pull one (no registry here).
#
# It does what Debian's own slim images do (debuerreotype): debootstrap
# --variant=minbase from the Debian mirror this machine's apt already uses,
# the Docker-friendly apt/dpkg settings, and the "slim" trimming of docs,
# man pages and locales, kept trimmed for later installs by a dpkg
# path-exclude file. The result is imported with `docker import`.
#
# An existing `debian:bookworm-slim` image is reused as it is. No mirror or
# registry host is written here: the mirror comes from the apt sources.
#
# Usage: tests/containers/make-base-image.sh [IMAGE]   (default debian:bookworm-slim)
# Needs: docker, debootstrap, debian-archive-keyring; root (or sudo).
set -euo pipefail

IMAGE=${1:-debian:bookworm-slim}
SUITE=bookworm

log() { printf 'make-base-image: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

if docker image inspect "$IMAGE" >/dev/null 2>&1; then
    log "$IMAGE already exists; reusing it"
    exit 0
fi

# ---- mirror: from the apt sources of this machine ----------------------
# deb822 files (URIs: lines) first, then one-line sources.list (deb lines).
# Comments are ignored. The first URI without "security" in it is the main
# mirror; one with "security" in it, if any, serves bookworm-security.
apt_uris() {
    local f
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -r "$f" ] || continue
        sed -n 's/^[[:space:]]*URIs:[[:space:]]*//p' "$f" | tr ' \t' '\n\n'
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -r "$f" ] || continue
        # deb [options] URI suite components...
        sed -n 's/^[[:space:]]*deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\?\([^[:space:]]\+\).*/\2/p' "$f"
    done
}
uris=$(apt_uris | sed '/^$/d' | awk '!seen[$0]++')
MIRROR=$(printf '%s\n' "$uris" | grep -v security | grep -E '^https?://' | head -n1 || true)
SECURITY=$(printf '%s\n' "$uris" | grep security | grep -E '^https?://' | head -n1 || true)
[ -n "$MIRROR" ] || die "no http(s) Debian mirror found in /etc/apt/sources.list{,.d/*}"
log "mirror: $MIRROR${SECURITY:+ (security: $SECURITY)}"

command -v debootstrap >/dev/null 2>&1 \
    || die "debootstrap is not installed (apt-get install debootstrap)"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo

work=$(mktemp -d "${TMPDIR:-/var/tmp}/ferry-base.XXXXXX")
cleanup() { $SUDO rm -rf --one-file-system "$work"; }
trap cleanup EXIT
root=$work/rootfs

# ---- bootstrap -----------------------------------------------------------
log "debootstrap --variant=minbase $SUITE (this takes a minute or two)"
if ! $SUDO debootstrap --variant=minbase --components=main \
        "$SUITE" "$root" "$MIRROR" >"$work/debootstrap.log" 2>&1; then
    tail -n 30 "$work/debootstrap.log" >&2
    [ -f "$root/debootstrap/debootstrap.log" ] && tail -n 30 "$root/debootstrap/debootstrap.log" >&2
    die "debootstrap failed"
fi

# ---- apt sources, as in Debian's images (deb822) -------------------------
{
    printf 'Types: deb\nURIs: %s\nSuites: %s %s-updates\nComponents: main\n' \
        "$MIRROR" "$SUITE" "$SUITE"
    printf 'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n'
    if [ -n "$SECURITY" ]; then
        printf '\nTypes: deb\nURIs: %s\nSuites: %s-security\nComponents: main\n' \
            "$SECURITY" "$SUITE"
        printf 'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n'
    fi
} | $SUDO tee "$root/etc/apt/sources.list.d/debian.sources" >/dev/null
$SUDO rm -f "$root/etc/apt/sources.list"

# ---- Docker-friendly apt and dpkg settings (debuerreotype's) -------------
$SUDO tee "$root/usr/sbin/policy-rc.d" >/dev/null <<'EOF'
#!/bin/sh
# Services must not start during image builds.
exit 101
EOF
$SUDO chmod 0755 "$root/usr/sbin/policy-rc.d"
printf 'force-unsafe-io\n' | $SUDO tee "$root/etc/dpkg/dpkg.cfg.d/docker-apt-speedup" >/dev/null
printf 'Apt::AutoRemove::SuggestsImportant "false";\n' \
    | $SUDO tee "$root/etc/apt/apt.conf.d/docker-autoremove-suggests" >/dev/null
$SUDO tee "$root/etc/apt/apt.conf.d/docker-clean" >/dev/null <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
printf 'Acquire::GzipIndexes "true";\n' \
    | $SUDO tee "$root/etc/apt/apt.conf.d/docker-gzip-indexes" >/dev/null
printf 'Acquire::Languages "none";\n' \
    | $SUDO tee "$root/etc/apt/apt.conf.d/docker-no-languages" >/dev/null

# ---- slim: drop docs, man pages, info and locales, and keep them out -----
excludes=(/usr/share/doc /usr/share/groff /usr/share/info /usr/share/linda
          /usr/share/lintian/overrides /usr/share/locale /usr/share/man)
includes=('/usr/share/doc/*/copyright' /usr/share/locale/locale.alias
          /usr/share/locale/all_languages /usr/share/locale/languages
          '/usr/share/locale/currency/*' '/usr/share/locale/l10n/*')
{
    echo '# This is the "slim" variant of the Debian base image.'
    echo '# Docs, man pages and locales are excluded, and stay so for later installs.'
    for d in "${excludes[@]}"; do echo "path-exclude $d/*"; done
    for p in "${includes[@]}"; do echo "path-include $p"; done
} | $SUDO tee "$root/etc/dpkg/dpkg.cfg.d/docker" >/dev/null
keep=()
for p in "${includes[@]}"; do
    [ ${#keep[@]} -eq 0 ] || keep+=(-o)
    keep+=(-path "$root$p")
done
for d in "${excludes[@]}"; do
    [ -d "$root$d" ] || continue
    $SUDO find "$root$d" -mindepth 1 -depth -not \( "${keep[@]}" \) \
        -not -type d -exec rm -f {} +
    $SUDO find "$root$d" -mindepth 1 -depth -type d -empty -delete
done

# ---- leave no host or build traces ---------------------------------------
$SUDO rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin \
    "$root"/var/cache/apt/archives/*.deb "$root"/var/cache/ldconfig/aux-cache \
    "$root"/var/log/*.log "$root"/var/log/apt/* "$root"/debootstrap \
    "$root"/tmp/* "$root"/var/tmp/*
$SUDO truncate -s 0 "$root/etc/machine-id" 2>/dev/null || true
$SUDO rm -f "$root/etc/hostname" "$root/etc/resolv.conf"

# ---- import ----------------------------------------------------------------
log "importing as $IMAGE"
$SUDO tar --numeric-owner --xattrs -C "$root" -c . \
    | docker import --change 'CMD ["bash"]' \
        --message "debootstrap --variant=minbase $SUITE, slim" - "$IMAGE" >/dev/null
log "done: $(docker image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' "$IMAGE")"
