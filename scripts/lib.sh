# Shell functions shared by scripts/install.sh (the development venv) and
# scripts/install-service.sh (the service's venv under /opt/pvcapid). Sourced, not run.

# Install the Debian packages named that are not installed yet (apt-get update only then).
apt_install_missing() {
  local missing=() pkg
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ "${#missing[@]}" -gt 0 ] || return 0
  echo "install: apt packages ${missing[*]}"
  local sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# Debian's librados/librbd bindings are built for CPython 3.11 and are not on PyPI: link them
# into the virtualenv $1 alone (not the rest of /usr/lib/python3/dist-packages).
link_ceph_bindings() {
  local venv=$1 site module
  site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  [ -f "$site/ceph-bindings.pth" ] && return 0
  mkdir -p "$venv/ceph-bindings"
  for module in rados rbd; do
    ln -sf /usr/lib/python3/dist-packages/$module.cpython-311-*.so "$venv/ceph-bindings/"
  done
  echo "$(cd "$venv" && pwd)/ceph-bindings" > "$site/ceph-bindings.pth"
}
