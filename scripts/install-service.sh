#!/usr/bin/env bash
# Install pvcapid as a systemd service on Debian 12, from this checkout (README "Installing as a
# service"). As root:
#
#   scripts/install-service.sh [--plugins node,vm,...] [--wheels DIR] [--prefix DIR] [--root DIR]
#                              [--pip-args "ARGS"]
#
# What it makes (paths with the defaults):
#   /opt/pvcapid                  a virtualenv with pvc-core and the chosen plugins, installed from
#                                 wheels (built from this checkout by scripts/build-wheels.sh, or the
#                                 ones in --wheels DIR); bin/pvcapid and bin/huey_consumer are the
#                                 units' ExecStart; a re-run replaces the pvc distributions in it
#   /etc/systemd/system/pvcapid.service, pvcapid-worker.service
#                                 deploy/*.service, their /opt/pvcapid paths made --prefix's
#   user and group pvcapid        a system user without login or home of its own; in group ceph
#                                 when that group exists (a keyring readable by group ceph)
#   /etc/pvc/pvcapid.yaml         root:pvcapid 0640 (tokens, secret key, database password); when
#                                 absent, deploy/pvcapid.sample.yaml with a new random secret key
#                                 and admin token; pvc-api.yaml links to it (the v0.6 CLI reads that)
#   /var/lib/pvc                  pvc.data_dir, pvcapid's, with the SQLite files the API and the
#                                 worker share created empty as pvcapid's (the worker, root, would
#                                 otherwise make them root's and lock the API out)
#   /etc/modules-load.d/pvcapid.conf
#                                 loads rbd at boot: the worker may not load modules (the mapper
#                                 falls back to rbd-fuse without it)
# It also installs the Debian packages the service needs, and reloads systemd. It enables and
# starts nothing: edit the configuration first, then `systemctl enable --now pvcapid pvcapid-worker`.
#
# --root DIR puts everything but the virtualenv under DIR (the user goes into DIR/etc/passwd) and
# leaves the running system alone: no apt, modprobe or systemctl. A virtualenv cannot move, so
# --prefix is where it will run from. --pip-args passes options to pip (`--no-index` with --wheels
# holding every dependency's wheel: an install without the network). An existing virtualenv at
# --prefix is reused.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
. "$here/scripts/lib.sh"

PREFIX=/opt/pvcapid          # the units' ExecStart paths (deploy/*.service) are under it
ROOT=/
PLUGINS=node,vm,network,ceph,provisioner,metadata   # every shipped plugin but simnode (a simulator)
WHEELS=
PIP_ARGS=
SERVICE_USER=pvcapid
PYTHON=/usr/bin/python3      # Debian's, the one python3-rados and python3-rbd are built for
DATA_DIR=/var/lib/pvc        # pvc.data_dir's default, the API unit's StateDirectory=pvc
UNITS=(pvcapid.service pvcapid-worker.service)

while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) PREFIX=${2:?}; shift 2 ;;
    --root) ROOT=${2:?}; shift 2 ;;
    --plugins) PLUGINS=${2?}; shift 2 ;;
    --wheels) WHEELS=${2:?}; shift 2 ;;
    --pip-args) PIP_ARGS=${2?}; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "install-service: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" -eq 0 ] || { echo "install-service: run as root (it creates a user and chowns files)" >&2; exit 1; }
PREFIX=$(realpath -m "$PREFIX")
ROOT=$(realpath -m "$ROOT")
live=false; [ "$ROOT" = / ] && live=true
at() { echo "${ROOT%/}$1"; }   # a system path inside --root
IFS=, read -r -a plugins <<< "$PLUGINS"
for plugin in "${plugins[@]}"; do
  [ -f "$here/plugins/$plugin/setup.py" ] || { echo "install-service: no plugin $plugin under plugins/" >&2; exit 2; }
done

# 1. Debian packages: the interpreter, Ceph's bindings and tools, the worker's mapping and mkfs tools;
#    libvirt-python (vm, simnode) is built from source by pip.
if $live; then
  packages=(python3-venv python3-rados python3-rbd ceph-common rbd-fuse fuse3 e2fsprogs xfsprogs util-linux mount)
  [[ ",$PLUGINS," =~ ,(vm|simnode), ]] && packages+=(libvirt-dev pkg-config gcc python3-dev)
  apt_install_missing "${packages[@]}"
fi

# 2. The wheels: given, or built from this checkout (with the development venv's build tools when
#    `make install` made it, else with a throwaway venv that fetches them).
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if [ -z "$WHEELS" ]; then
  WHEELS=$work/wheels
  builder=$here/.venv/bin/python
  if ! "$builder" -c 'import build, setuptools, wheel' 2>/dev/null; then
    "$PYTHON" -m venv "$work/build-venv"
    "$work/build-venv/bin/python" -m pip install -q --disable-pip-version-check build setuptools wheel
    builder=$work/build-venv/bin/python
  fi
  PYTHON=$builder "$here/scripts/build-wheels.sh" "$WHEELS" "${plugins[@]}" > /dev/null
fi
newest() {  # the newest wheel of distribution $1 (its file name's form) in $WHEELS
  local found
  found=$(find "$WHEELS" -maxdepth 1 -name "$1-*-py3-none-any.whl" | sort -V | tail -n 1)
  [ -n "$found" ] || { echo "install-service: no $1 wheel in $WHEELS" >&2; exit 1; }
  echo "$found"
}
wheels=("$(newest pvc_core)")
for plugin in "${plugins[@]}"; do wheels+=("$(newest "pvc_plugin_$plugin")"); done

# 3. The virtualenv. Ours go in by file (never by name from an index, where another project could
#    own the name); the pvc distributions already there are removed first, so a plugin left out of
#    --plugins this time is not loaded any more.
[ -x "$PREFIX/bin/python" ] || "$PYTHON" -m venv "$PREFIX"
link_ceph_bindings "$PREFIX"
pip=("$PREFIX/bin/python" -m pip --disable-pip-version-check)
# shellcheck disable=SC2207
old=($("${pip[@]}" list --format=freeze | sed -n 's/^\(pvc-[^=]*\)==.*/\1/p'))
[ "${#old[@]}" -eq 0 ] || "${pip[@]}" uninstall -q -y "${old[@]}"
# shellcheck disable=SC2086
"${pip[@]}" install -q --find-links "$WHEELS" $PIP_ARGS "${wheels[@]}"

# 4. The user, and the ceph group when there is one.
if ! grep -q "^$SERVICE_USER:" "$(at /etc/passwd)"; then
  prefix_args=(); $live || prefix_args=(--prefix "$ROOT")
  useradd "${prefix_args[@]}" --system --user-group --home-dir "$DATA_DIR" --no-create-home \
    --shell /usr/sbin/nologin --comment "PVC API daemon" "$SERVICE_USER"
fi
if grep -q "^ceph:" "$(at /etc/group)"; then
  prefix_args=(); $live || prefix_args=(--prefix "$ROOT")
  usermod "${prefix_args[@]}" --append --groups ceph "$SERVICE_USER"
fi
uid=$(awk -F: -v user="$SERVICE_USER" '$1 == user { print $3 }' "$(at /etc/passwd)")
gid=$(awk -F: -v user="$SERVICE_USER" '$1 == user { print $4 }' "$(at /etc/passwd)")

# 5. The configuration: read by pvcapid through its group, never by others.
install -d -o 0 -g "$gid" -m 0750 "$(at /etc/pvc)"
config=$(at /etc/pvc/pvcapid.yaml)
if [ ! -e "$config" ]; then
  secret=$("$PYTHON" -c 'import secrets; print(secrets.token_urlsafe(32))')
  token=$("$PYTHON" -c 'import uuid; print(uuid.uuid4())')
  (umask 077 && sed -e "s/@SECRET_KEY@/$secret/" -e "s/@TOKEN@/$token/" "$here/deploy/pvcapid.sample.yaml" > "$config")
  echo "install-service: wrote $config with a new secret key and admin token (tokens[0]); set its coordinators"
fi
chown 0:"$gid" "$config"
chmod 0640 "$config"
[ -e "$(at /etc/pvc/pvc-api.yaml)" ] || ln -s pvcapid.yaml "$(at /etc/pvc/pvc-api.yaml)"

# 6. The data directory and the SQLite files both processes open (an empty file is an empty database).
install -d -o "$uid" -g "$gid" -m 0750 "$(at "$DATA_DIR")"
for file in pvc.db huey.db; do
  [ -e "$(at "$DATA_DIR/$file")" ] || install -o "$uid" -g "$gid" -m 0640 /dev/null "$(at "$DATA_DIR/$file")"
done

# 7. The units, started from this prefix.
install -d "$(at /etc/systemd/system)"
for unit in "${UNITS[@]}"; do
  sed "s#/opt/pvcapid/#$PREFIX/#g" "$here/deploy/$unit" > "$work/$unit"
  install -m 0644 "$work/$unit" "$(at "/etc/systemd/system/$unit")"
done

# 8. rbd at boot, for the worker's kernel mappings.
install -d "$(at /etc/modules-load.d)"
printf '# pvcapid-worker maps volumes with kernel rbd and may not load modules itself\nrbd\n' \
  > "$(at /etc/modules-load.d/pvcapid.conf)"

if $live; then
  modprobe rbd 2>/dev/null || echo "install-service: rbd module not loaded (volumes will be mapped with rbd-fuse)"
  [ -d /run/systemd/system ] && systemctl daemon-reload
  keyring=/etc/ceph/ceph.client.admin.keyring
  if [[ ",$PLUGINS," == *,ceph,* ]] && [ -e "$keyring" ] && ! runuser -u "$SERVICE_USER" -- test -r "$keyring"; then
    echo "install-service: $SERVICE_USER cannot read $keyring: see the README (Installing as a service, Ceph)"
  fi
fi
echo "install-service: pvcapid $("$PREFIX/bin/pvcapid" --version | cut -d' ' -f2) in $PREFIX with plugins $PLUGINS;" \
     "units in $(at /etc/systemd/system)"
