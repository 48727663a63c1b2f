#!/usr/bin/env bash
# Builds the container image as an OCI layout, target/image/oci, tagged with
# the version, without a container engine and without a base image: umoci
# (Debian package umoci) makes an empty image and packs one layer holding the
# release binary, exactly the shared libraries it links (as ldd lists them),
# /etc/passwd and /etc/group naming its user, /etc/hosts naming localhost,
# /tmp, and the data directory.
# Push it with skopeo: skopeo copy oci:target/image/oci:VERSION docker://HOST/registry-rubber:VERSION
# Builds the release binary if it is missing or stale (scripts/test.sh has
# built it already).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/sbin:/sbin"

command -v umoci >/dev/null || { echo "image.sh: umoci is missing (Debian package umoci)" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "image.sh: run as root (the layer's files are owned by the image's user)" >&2; exit 1; }

cargo build --release --locked --quiet
bin=target/release/registry-rubber
version=$("$bin" --version | cut -d' ' -f2)
# The image's user and group: no account of the host's.
uid=65532
data=/var/lib/registry-rubber
port=5080

out=target/image
layout=$out/oci
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
rm -rf "$layout"
mkdir -p "$out"
umoci init --layout "$layout"
umoci new --image "$layout:$version"
umoci unpack --image "$layout:$version" "$work/bundle" >/dev/null
root=$work/bundle/rootfs

install -d -m 0755 "$root/usr/bin" "$root/etc"
install -m 0755 "$bin" "$root/usr/bin/registry-rubber"
strip --strip-debug "$root/usr/bin/registry-rubber"
# The dynamic loader and every library it would load, each at the path ldd
# names (the file itself, not the symlink).
libs=$(ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }')
[ -n "$libs" ] || { echo "image.sh: ldd lists no library for $bin" >&2; exit 1; }
for lib in $libs; do
  install -D -m 0755 "$(readlink -f "$lib")" "$root$lib"
done
cat >"$root/etc/passwd" <<PASSWD
root:x:0:0:root:/root:/usr/sbin/nologin
registry-rubber:x:$uid:$uid:registry-rubber:$data:/usr/sbin/nologin
PASSWD
cat >"$root/etc/group" <<GROUP
root:x:0:
registry-rubber:x:$uid:
GROUP
printf 'passwd: files\ngroup: files\nhosts: files dns\n' >"$root/etc/nsswitch.conf"
# localhost without a resolver, for runtimes that add no /etc/hosts of their own.
printf '127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n' >"$root/etc/hosts"
chmod 0644 "$root"/etc/*
install -d -m 1777 "$root/tmp"
# The volume: the user's, and its group's (an Apache sharing the volume runs
# with that group), setgid as in the Debian package.
install -d -m 2770 -o "$uid" -g "$uid" "$root$data"

umoci repack --image "$layout:$version" "$work/bundle"

# The configuration, after the layer (repack keeps the config it unpacked).
created=$(git log -1 --format=%cI 2>/dev/null || date -u +%Y-%m-%dT%H:%M:%SZ)
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
label() { printf -- '--config.label=org.opencontainers.image.%s=%s\n' "$1" "$2"; }
mapfile -t labels < <(
  label title registry-rubber
  label description "Short-lived Docker registry credentials, minted over a JSON API and stored as htpasswd-style hashes for Apache mod_authn_dbd"
  label version "$version"
  label revision "$revision"
  label created "$created"
  label licenses MIT
  label documentation "/usr/share/doc/registry-rubber/README.md in the Debian package; README.md in the source"
)
umoci config --image "$layout:$version" \
  --os linux --architecture "$(dpkg --print-architecture)" --created "$created" \
  --config.user "$uid:$uid" \
  --config.entrypoint /usr/bin/registry-rubber --config.cmd serve \
  --config.workingdir "$data" --config.volume "$data" \
  --config.exposedports "$port/tcp" \
  --config.env "RUBBER_LISTEN=0.0.0.0:$port" \
  --config.env "RUBBER_ALLOW_GET_MUTATIONS=false" \
  --config.stopsignal SIGTERM \
  "${labels[@]}" \
  --history.created_by "scripts/image.sh"
umoci gc --layout "$layout"
echo "$layout:$version"
