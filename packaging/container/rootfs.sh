#!/bin/sh
# Lays out the container image's files around a static re6st binary:
#   rootfs.sh BINARY OUT
# OUT/root/ is copied to / (the binary, /etc/passwd and /etc/group with the
# user re6st, 4326, an empty /tmp); OUT/state/ to /var/lib/re6st, owned by
# 4326 (the Containerfile's COPY --chown, so no root is needed here). Used by
# the Containerfile's build stage and by scripts/build-image.
set -eu
bin=$1
out=$2
rm -rf "$out"
mkdir -p "$out/root/usr/bin" "$out/root/etc" "$out/root/tmp" \
    "$out/state/node" "$out/state/registry"
cp "$bin" "$out/root/usr/bin/re6st"
chmod 0755 "$out/root/usr/bin/re6st"
printf 'root:x:0:0:root:/:/sbin/nologin\nre6st:x:4326:4326:re6st:/var/lib/re6st:/sbin/nologin\n' \
    >"$out/root/etc/passwd"
printf 'root:x:0:\nre6st:x:4326:\n' >"$out/root/etc/group"
chmod 1777 "$out/root/tmp"
chmod 0700 "$out/state/node" "$out/state/registry"
