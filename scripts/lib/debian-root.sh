# Sourced by the scripts that build and test in a Debian root of another release (an older or a
# newer GStreamer than the host's): the mirror, the root (made once with debootstrap under
# target/, reused afterwards) and running commands in it, in a private mount namespace with this
# checkout (/src) and the host's Rust toolchain (/opt/rustup, /opt/cargo) bound in. Runs as root;
# nothing on the host changes except target/.
#
# Set before sourcing: ROOT (the root's folder), TAG (the calling script's name, for messages),
# ROOT_ID (what the root holds: a root made for another ROOT_ID is made afresh).
#
# The roots may live outside the checkout (CI keeps them in a cache folder): each script takes
# its root's folder from an environment variable, and `--root-only` makes the root and stops.

REPO="$PWD"
RUSTUP_HOME="${RUSTUP_HOME:-$HOME/.rustup}"
CARGO_HOME="${CARGO_HOME:-$HOME/.cargo}"
[ "$(id -u)" -eq 0 ] || { echo "$TAG: needs root (debootstrap, chroot)" >&2; exit 1; }

host_mirror() { # the Debian archive the host's own apt uses (deb822 .sources or one-line .list)
  {
    grep -hE '^[[:space:]]*URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null |
      awk '{for (i = 2; i <= NF; i++) print $i}'
    grep -hE '^[[:space:]]*deb[[:space:]]' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
      awk '{for (i = 2; i <= NF; i++) if ($i ~ /^[a-z+]+:\/\//) { print $i; break }}'
  } | grep -v -- '-security' | head -n1 || true   # no such file: not an error
}
MIRROR="${DEBIAN_MIRROR:-$(host_mirror)}"
[ -n "$MIRROR" ] || { echo "$TAG: no Debian mirror in the host's apt sources; set DEBIAN_MIRROR" >&2; exit 1; }

in_root() { # run a command inside the root, with /proc, /dev, the checkout and Rust
  unshare --mount --propagation private bash -euc '
    root="$1" repo="$2" rustup="$3" cargo="$4"; shift 4
    mount -t proc proc "$root/proc"
    mount --rbind /dev "$root/dev"
    mkdir -p "$root/src" "$root/opt/rustup" "$root/opt/cargo"
    mount --bind "$repo" "$root/src"
    mount --bind "$rustup" "$root/opt/rustup"
    mount --bind "$cargo" "$root/opt/cargo"
    cp /etc/resolv.conf "$root/etc/resolv.conf"
    exec chroot "$root" env -i HOME=/root TERM=dumb LANG=C.UTF-8 \
      PATH=/opt/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
      RUSTUP_HOME=/opt/rustup CARGO_HOME=/opt/cargo DEBIAN_FRONTEND=noninteractive "$@"
  ' in_root "$ROOT" "$REPO" "$RUSTUP_HOME" "$CARGO_HOME" "$@"
}

root_ready() { [ "$(cat "$ROOT/.cachenet-ready" 2>/dev/null)" = "$ROOT_ID" ]; }
mark_root_ready() { echo "$ROOT_ID" >"$ROOT/.cachenet-ready"; }

# make_root SUITE PACKAGES...: debootstrap SUITE (minbase) into ROOT afresh and install PACKAGES.
# The caller runs it only when root_ready fails, and mark_root_ready when the root is complete.
make_root() {
  local suite=$1; shift
  command -v debootstrap >/dev/null || {
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
  }
  rm -rf "$ROOT"
  mkdir -p "$(dirname "$ROOT")"
  echo "$TAG: making a Debian $suite root in $ROOT (a few minutes, once)"
  debootstrap --variant=minbase "$suite" "$ROOT" "$MIRROR" >"$ROOT.debootstrap.log" 2>&1 \
    || { tail -20 "$ROOT.debootstrap.log" >&2; exit 1; }
  in_root apt-get install -y -qq --no-install-recommends "$@" >/dev/null
  in_root apt-get clean   # the downloaded packages: hundreds of MB a root
}
