# Sourced by the perf scripts: 2 MiB hugepages for one benchmark run, given back after.
#   huge_reserve PAGES MIN DIR  adds PAGES to the pool (fails below MIN added) and mounts a
#                               private hugetlbfs at DIR (pass it to EAL as --huge-dir)
#   huge_release                unmounts it and restores the pool size, unless someone else
#                               changed the pool meanwhile; safe to call when nothing was
#                               reserved (call it from the script's EXIT trap)
HUGE_MNT=""
HUGE_OLD=""
HUGE_SET=""

huge_reserve() {
  local pages=$1 min=$2 dir=$3
  HUGE_OLD=$(cat /proc/sys/vm/nr_hugepages)
  echo $((HUGE_OLD + pages)) > /proc/sys/vm/nr_hugepages
  HUGE_SET=$(cat /proc/sys/vm/nr_hugepages)
  if [ "$HUGE_SET" -lt $((HUGE_OLD + min)) ]; then
    echo "hugepages: only $HUGE_SET in the pool (wanted $((HUGE_OLD + pages)))" >&2
    return 1
  fi
  HUGE_MNT=$dir
  mkdir -p "$HUGE_MNT"
  mount -t hugetlbfs -o pagesize=2M nodev "$HUGE_MNT"
}

huge_release() {
  if [ -n "$HUGE_MNT" ]; then
    rm -f "$HUGE_MNT"/* 2>/dev/null || true
    umount "$HUGE_MNT" 2>/dev/null || true
    HUGE_MNT=""
  fi
  if [ -n "$HUGE_OLD" ] && [ "$(cat /proc/sys/vm/nr_hugepages)" = "$HUGE_SET" ]; then
    echo "$HUGE_OLD" > /proc/sys/vm/nr_hugepages 2>/dev/null || true
  fi
  HUGE_OLD=""
}
