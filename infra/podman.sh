#!/usr/bin/env bash
# Podman set-up for building and running vqvp's containers on a machine with no Docker engine
# (see infra/README.md, "Containers without a Docker engine"). Used by tests/infra and by hand:
#
#   infra/podman.sh setup                  install podman/runc/debootstrap if missing (apt, as root),
#                                          write /etc/containers/containers.conf, build the base image
#   infra/podman.sh conf                   only write /etc/containers/containers.conf (runc, cgroupfs,
#                                          file events, ulimits the sandbox allows; old file -> .orig)
#   infra/podman.sh base-image             build localhost/debian-base:bookworm with debootstrap
#                                          (skipped when `podman image exists` says it is there)
#   infra/podman.sh service-start SOCK PIDFILE
#                                          start the Docker-compatible API on unix://SOCK
#                                          (DOCKER_HOST=unix://SOCK), its PID written to PIDFILE
#   infra/podman.sh service-stop PIDFILE   stop that service (by its PID, nothing else)
#   infra/podman.sh check                  exit 0 when `podman info` works
#
# Environment: BASE_IMAGE_TAG (default localhost/debian-base:bookworm), SUITE (bookworm),
# MIRROR (default: the first URIs: line of /etc/apt/sources.list.d/debian.sources, else
# http://deb.debian.org/debian).
set -euo pipefail

BASE_IMAGE_TAG=${BASE_IMAGE_TAG:-localhost/debian-base:bookworm}
SUITE=${SUITE:-bookworm}
CONF=/etc/containers/containers.conf

log() { printf 'podman.sh: %s\n' "$*" >&2; }

mirror() {
    if [[ -n "${MIRROR:-}" ]]; then echo "$MIRROR"; return; fi
    local uri=""
    if [[ -r /etc/apt/sources.list.d/debian.sources ]]; then
        uri=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
    fi
    echo "${uri:-http://deb.debian.org/debian}"
}

install_packages() {
    local missing=()
    command -v podman >/dev/null || missing+=(podman)
    command -v runc >/dev/null || missing+=(runc)
    command -v debootstrap >/dev/null || missing+=(debootstrap)
    ((${#missing[@]} == 0)) && return 0
    if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
        log "missing ${missing[*]} and cannot install them (needs root and apt-get)"
        return 1
    fi
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
}

# Podman's defaults fail on these machines: crun on a hybrid cgroup layout, journald events, and
# ulimits above what the sandbox allows (`podman info` still works; `podman run` does not).
# Written unless it is already ours; an existing file is kept as containers.conf.orig.
MARKER="# written by vqvp infra/podman.sh"
write_conf() {
    if [[ -f $CONF ]] && grep -qF "$MARKER" "$CONF"; then return 0; fi
    [[ $(id -u) -eq 0 ]] || { log "$CONF needs root to write"; return 1; }
    mkdir -p "$(dirname "$CONF")"
    if [[ -f $CONF && ! -f $CONF.orig ]]; then cp "$CONF" "$CONF.orig"; fi
    cat >"$CONF" <<EOF
$MARKER: settings that work as root on cgroups v1/hybrid hosts
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
    podman info >/dev/null 2>&1 || { podman info 2>&1 | tail -5 >&2; return 1; }
}

base_image() {
    if podman image exists "$BASE_IMAGE_TAG"; then
        log "$BASE_IMAGE_TAG exists"
        return 0
    fi
    local rootfs
    rootfs=$(mktemp -d /var/tmp/vqvp-rootfs.XXXXXX)
    # shellcheck disable=SC2064
    trap "rm -rf '$rootfs'" RETURN
    log "debootstrap $SUITE from $(mirror) (about 25 s)"
    debootstrap --variant=minbase "$SUITE" "$rootfs" "$(mirror)" >"$rootfs.log" 2>&1 \
        || { tail -20 "$rootfs.log" >&2; rm -f "$rootfs.log"; return 1; }
    rm -f "$rootfs.log"
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -c . | podman import --change 'CMD ["/bin/bash"]' - "$BASE_IMAGE_TAG" >/dev/null
    log "built $BASE_IMAGE_TAG"
}

service_start() {
    local sock=${1:?socket path} pidfile=${2:?pid file}
    rm -f "$sock"
    mkdir -p "$(dirname "$sock")"
    podman system service --time=0 "unix://$sock" >"$pidfile.log" 2>&1 &
    echo $! >"$pidfile"
    for _ in $(seq 1 100); do
        [[ -S $sock ]] && { log "Docker API on unix://$sock (pid $(cat "$pidfile"))"; return 0; }
        kill -0 "$(cat "$pidfile")" 2>/dev/null || break
        sleep 0.1
    done
    log "podman system service did not start:"; cat "$pidfile.log" >&2
    return 1
}

service_stop() {
    local pidfile=${1:?pid file} pid
    [[ -f $pidfile ]] || return 0
    pid=$(cat "$pidfile")
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid"
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    fi
    rm -f "$pidfile" "$pidfile.log"
}

case "${1:-}" in
    setup) install_packages && write_conf && base_image ;;
    conf) write_conf ;;
    base-image) base_image ;;
    service-start) shift; service_start "$@" ;;
    service-stop) shift; service_stop "$@" ;;
    check) podman info >/dev/null 2>&1 ;;
    *) sed -n '2,19p' "$0" >&2; exit 2 ;;
esac
