#!/usr/bin/env bash
# A throwaway root for the README's recipes, started by tests/e2e/recipes.rs
# inside `unshare --mount --net --pid --fork --kill-child --mount-proc`:
# /etc, /var, /run, /usr/local and /root are overlays whose changes land in
# SCRATCH/upper (so the recipes' users, /etc/hosts entries, files and
# certificates stay out of the host's), the network is a loopback of its own
# (so the recipes' default ports are free), and every process started here
# dies with this one.
#
# usage: root.sh SCRATCH
# Then reads commands, one per write, from the FIFO SCRATCH/commands:
#   run FILE   source FILE in this shell (variables carry to later commands)
#   bg FILE    source FILE in a background subshell (a foreground server)
#   wait PORT  wait until 127.0.0.1:PORT accepts connections (30 s)
# and appends "N ok" to SCRATCH/results after the Nth. A command that fails
# ends this shell (set -e), and with it the namespace; its output is in the
# log the test gave this shell's standard output.
set -euo pipefail
scratch=$1

for dir in /etc /var /run /usr/local /root; do
  name=${dir//\//_}
  mkdir -p "$scratch/upper/$name" "$scratch/work/$name"
  # What an installed package of this project keeps on the host (the
  # package test installs one) is not on a fresh host: whiteouts hide it.
  for own in registry-rubber lib/registry-rubber; do
    if [ -e "$dir/$own" ]; then
      mkdir -p "$(dirname "$scratch/upper/$name/$own")"
      mknod "$scratch/upper/$name/$own" c 0 0
    fi
  done
  mount -t overlay overlay \
    -o "lowerdir=$dir,upperdir=$scratch/upper/$name,workdir=$scratch/work/$name" "$dir"
done
# skopeo's blob cache (a bolt database) of its own: a copy-up of the host's
# while another process writes it could be torn.
mkdir -p /var/lib/containers
mount -t tmpfs tmpfs /var/lib/containers
ip link set lo up
echo "pid $BASHPID: root ready"

n=0
while true; do
  # An end of file with no line: a process of the test forked while the
  # test held the FIFO open kept a copy of it for a moment. Wait again.
  read -r command argument <"$scratch/commands" || continue
  n=$((n + 1))
  echo "== $n: $command $argument"
  case $command in
    run) source "$argument" ;;
    bg) (source "$argument") & ;;
    wait)
      for i in $(seq 1 300); do
        (exec 3<>"/dev/tcp/127.0.0.1/$argument") 2>/dev/null && break
        [ "$i" != 300 ] || { echo "nothing listens on $argument after 30 s" >&2; exit 1; }
        sleep 0.1
      done
      ;;
    *) echo "unknown command $command" >&2; exit 2 ;;
  esac
  echo "$n ok" >>"$scratch/results"
done
