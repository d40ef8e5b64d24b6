#!/usr/bin/env bash
# A real Docker engine for this project's container tests, on machines where none runs and no registry is reachable
# (CI, the development VMs). Steps as in ../shared/container-engine.md, carried by the project itself:
#
#   docker/engine.sh up     install docker.io + debootstrap if missing, start dockerd on a private socket, wait
#   docker/engine.sh base   make the local Debian base image (debootstrap -> docker import): a stand-in for pulling
#   docker/engine.sh base trixie   the same for another Debian suite (local/debian:trixie; the newcomer tests)
#   docker/engine.sh snapshot   start the stand-in for snapshot.debian.org (tests/container/standin/snapshot_server.py:
#                           today's mirror under snapshot URLs) on this host's address, and print its URL
#   docker/engine.sh env    print `export DOCKER_HOST=...` for the private socket
#   docker/engine.sh down   stop the dockerd and the snapshot stand-in this script started
#
# State lives in $FINETUNE_ENGINE_DIR (default /tmp/finetune-engine). BuildKit is used through Debian's client
# (/usr/bin/docker, DOCKER_BUILDKIT=1): the newer client on PATH may lack the buildx plugin.
set -euo pipefail

STATE=${FINETUNE_ENGINE_DIR:-/tmp/finetune-engine}
SOCK="$STATE/docker.sock"
SUITE=${2:-bookworm}
BASE_IMAGE=${FINETUNE_BASE_IMAGE:-local/debian:$SUITE}

say() { printf '[engine] %s\n' "$*" >&2; }

mirror() {  # the Debian mirror this machine's apt uses (the only package source reachable here)
  local m
  m=$(grep -hoE '^(URIs:|deb) +https?://[^ ]+' /etc/apt/sources.list /etc/apt/sources.list.d/* 2>/dev/null \
      | head -1 | awk '{print $2}')
  echo "${m:-http://deb.debian.org/debian}"
}

install() {
  if command -v dockerd >/dev/null && command -v debootstrap >/dev/null && [ -x /usr/bin/docker ]; then return; fi
  say "installing docker.io and debootstrap (Debian packages)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io debootstrap >/dev/null
}

client() { DOCKER_HOST="unix://$SOCK" DOCKER_BUILDKIT=1 /usr/bin/docker "$@"; }

up() {
  install
  mkdir -p "$STATE"
  if client info >/dev/null 2>&1; then say "engine already up on $SOCK"; return; fi
  say "starting dockerd (data root $STATE/data, socket $SOCK, log $STATE/dockerd.log)"
  setsid dockerd --data-root "$STATE/data" --exec-root "$STATE/exec" --pidfile "$STATE/dockerd.pid" \
    --host "unix://$SOCK" >"$STATE/dockerd.log" 2>&1 < /dev/null &
  for _ in $(seq 1 60); do
    if client info >/dev/null 2>&1; then say "engine up: $(client version --format '{{.Server.Version}}')"; return; fi
    sleep 0.5
  done
  say "dockerd did not answer within 30 s; last lines of its log:"; tail -20 "$STATE/dockerd.log" >&2; exit 1
}

base() {
  up
  if client image inspect "$BASE_IMAGE" >/dev/null 2>&1; then say "$BASE_IMAGE exists"; return; fi
  local rootfs="$STATE/rootfs-$SUITE"
  rm -rf "$rootfs"
  say "debootstrap --variant=minbase $SUITE from $(mirror) (stand-in for pulling debian:$SUITE from a registry)"
  debootstrap --variant=minbase "$SUITE" "$rootfs" "$(mirror)" >"$STATE/debootstrap.log" 2>&1 \
    || { tail -20 "$STATE/debootstrap.log" >&2; exit 1; }
  # Trim it towards debian:*-slim (which drops docs, man pages and locales, and ships no package cache or lists),
  # so image sizes measured on top of it are close to what the real base gives.
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/doc/* \
    "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/locale/*
  tar -C "$rootfs" -c . | client import --change 'CMD ["bash"]' - "$BASE_IMAGE" >/dev/null
  rm -rf "$rootfs"
  say "made $BASE_IMAGE ($(client image inspect -f '{{.Size}}' "$BASE_IMAGE") bytes)"
}

snapshot() {  # one per engine, on a fixed port: every test build passes the same APT_SNAPSHOT_DEBIAN (one layer cache)
  local port=${FINETUNE_SNAPSHOT_PORT:-3148} host url
  host=$(hostname -I | awk '{print $1}')  # not 127.0.0.1: builds run in their own network namespace
  url="http://$host:$port/archive"
  answers() { curl -fsS -o /dev/null "$url/debian/20000101T000000Z/dists/$SUITE/Release" 2>/dev/null; }
  mkdir -p "$STATE"
  if ! answers; then
    say "starting the snapshot.debian.org stand-in on $url (log $STATE/snapshot.log)"
    setsid python3 "$(dirname "$0")/../tests/container/standin/snapshot_server.py" --port "$port" \
      --upstream "$(mirror | sed -E 's#/debian/?$##')" --log "$STATE/snapshot.log" >>"$STATE/snapshot.log" 2>&1 \
      </dev/null &
    echo $! >"$STATE/snapshot.pid"
    for _ in $(seq 1 40); do
      answers && break
      sleep 0.5
    done
  fi
  answers || { say "the snapshot stand-in does not answer on $url; its log:"; tail -5 "$STATE/snapshot.log" >&2; exit 1; }
  echo "$url"
}

down() {
  if [ -f "$STATE/snapshot.pid" ] && kill "$(cat "$STATE/snapshot.pid")" 2>/dev/null; then
    say "stopped the snapshot stand-in $(cat "$STATE/snapshot.pid")"
    rm -f "$STATE/snapshot.pid"
  fi
  if [ -f "$STATE/dockerd.pid" ] && kill "$(cat "$STATE/dockerd.pid")" 2>/dev/null; then
    say "stopped dockerd $(cat "$STATE/dockerd.pid")"
  else
    say "no dockerd of ours is running"
  fi
}

case "${1:-}" in
  up) up ;;
  base) base ;;
  snapshot) snapshot ;;
  env) echo "export DOCKER_HOST=unix://$SOCK DOCKER_BUILDKIT=1" ;;
  down) down ;;
  *) sed -n '2,14p' "$0"; exit 2 ;;
esac
