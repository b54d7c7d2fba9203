#!/usr/bin/env bash
# Install everything pvcapid needs on Debian 12: system packages (only the missing
# ones), a virtualenv in .venv with pvc-core and every plugin under plugins/ in
# editable mode, and the test tools. Safe to run any number of times.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(zookeeper default-jre-headless postgresql redis-server libvirt-dev pkg-config wrk
              python3-venv gcc python3-dev openssl
              ceph-mon ceph-mgr ceph-osd ceph-common python3-rados python3-rbd
              rbd-fuse fuse3 e2fsprogs xfsprogs util-linux mount qemu-utils)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "install: apt packages ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

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

# Debian's librados/librbd bindings are built for CPython 3.11: link them into the venv
# alone (not the rest of /usr/lib/python3/dist-packages).
site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
if [ ! -f "$site/ceph-bindings.pth" ]; then
  mkdir -p .venv/ceph-bindings
  for module in rados rbd; do
    ln -sf /usr/lib/python3/dist-packages/$module.cpython-311-*.so .venv/ceph-bindings/
  done
  echo "$(pwd)/.venv/ceph-bindings" > "$site/ceph-bindings.pth"
fi
