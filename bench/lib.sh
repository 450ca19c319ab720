# Shared by the benchmark scripts (sourced): the whole machine's CPU and load, arithmetic, cold
# caches, medians.
hz=$(getconf CLK_TCK)
busy() { awk '/^cpu /{ print $2 + $3 + $4 + $7 + $8 }' /proc/stat; }  # user nice system irq softirq, in ticks
load() { cut -d' ' -f1 /proc/loadavg; }
calc() { awk "BEGIN { print $1 }"; }
drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }
median() { sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
