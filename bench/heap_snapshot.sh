#!/usr/bin/env bash
# Snapshot a running worker's memory without stopping it (diagnosis of soak growth).
#
#   bench/heap_snapshot.sh PID OUTDIR TAG
#
# Writes OUTDIR/TAG.status (VmRSS and the RSS of the main malloc heap), OUTDIR/TAG.malloc.xml
# (glibc malloc_info: per arena, the memory the system gave and how much of it is free)
# and OUTDIR/TAG.objects.txt (gc-tracked Python objects by type: count and shallow bytes).
# Two snapshots minutes apart tell live growth (objects, heap "used") from retained free
# memory (fragmentation). Needs gdb. The worker stops while gdb
# attaches and walks its objects: up to about 15 s of latency in a soak, no loss.
set -euo pipefail
pid=${1:?worker pid}; out=${2:?output folder}; tag=${3:?tag}
mkdir -p "$out"; out=$(cd "$out" && pwd)
{
  date -u +%FT%TZ
  grep VmRSS "/proc/$pid/status"
  awk '/\[heap\]/{f=1} f&&/^Rss/{print "heap_rss_kb", $2; f=0}' "/proc/$pid/smaps"
} > "$out/$tag.status"
cat > "$out/$tag.objects.py" <<PY
import collections, gc, sys
counts, sizes = collections.Counter(), collections.Counter()
for obj in gc.get_objects():
    counts[type(obj).__name__] += 1
    try:
        sizes[type(obj).__name__] += sys.getsizeof(obj)
    except Exception:
        pass
with open("$out/$tag.objects.txt", "w") as f:
    f.write(f"pymalloc_blocks {sys.getallocatedblocks()}\n")
    f.writelines(f"{name} {counts[name]} {size}\n" for name, size in sizes.most_common(60))
del counts, sizes, f
PY
# Convenience variables, not history numbers: the GIL must be released with what
# Ensure returned, or the worker keeps it and stalls. unwindonsignal: a signal during
# a call (the worker being stopped) abandons the call instead of leaving it half done.
gdb -p "$pid" -batch -ex 'set unwindonsignal on' \
  -ex "set \$f = (void*)fopen(\"$out/$tag.malloc.xml\", \"w\")" \
  -ex 'call (int)malloc_info(0, $f)' -ex 'call (int)fclose($f)' \
  -ex 'set $g = (int)PyGILState_Ensure()' \
  -ex "call (int)PyRun_SimpleString(\"exec(open('$out/$tag.objects.py').read())\")" \
  -ex 'call (void)PyGILState_Release($g)' > "$out/$tag.gdb.log" 2>&1
echo "wrote $out/$tag.{status,malloc.xml,objects.txt}"
