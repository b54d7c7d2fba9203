#!/usr/bin/env bash
# Install everything pvcapid needs on Debian 12: system packages (only the missing
# ones), a virtualenv in .venv with pvc-core and every plugin under plugins/ in
# editable mode, and the test tools. Safe to run any number of times.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

APT_PACKAGES=(zookeeper default-jre-headless postgresql redis-server libvirt-dev pkg-config wrk
              python3-venv gcc python3-dev openssl
              ceph-mon ceph-mgr ceph-osd ceph-common python3-rados python3-rbd
              rbd-fuse fuse3 e2fsprogs xfsprogs util-linux mount
              systemd qemu-utils)  # systemd-analyze: tests/test_service.py checks the units with it
apt_install_missing "${APT_PACKAGES[@]}"

PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv

# Re-run pip only when a setup.py or the requirements changed.
stamp=.venv/.pvc-installed
shopt -s nullglob
want=$(cat setup.py plugins/*/setup.py requirements-dev.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  args=(-e .)
  for plugin in plugins/*/setup.py; do
    args+=(-e "$(dirname "$plugin")")
  done
  .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip setuptools wheel
  .venv/bin/python -m pip install -q --disable-pip-version-check "${args[@]}" -r requirements-dev.txt
  echo "$want" > "$stamp"
fi

link_ceph_bindings .venv
