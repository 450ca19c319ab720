# Shared by the benchmark scripts (sourced): the whole machine's CPU and load, arithmetic, cold
# caches, medians.
hz=$(getconf CLK_TCK)
busy() { awk '/^cpu /{ print $2 + $3 + $4 + $7 + $8 }' /proc/stat; }  # user nice system irq softirq, in ticks
load() { cut -d' ' -f1 /proc/loadavg; }
calc() { awk "BEGIN { print $1 }"; }
drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }
median() { sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
# mend_sam SRC HEADER BODY: ART's SAM as samtools reads it (its @SQ name carries the FASTA
# description: cut at the first space; a few reads at the genome's ends have a CIGAR longer than
# their sequence: left out): the header lines into HEADER, the reads into BODY.
mend_sam() {
  grep '^@' "$1" | awk -F'\t' -v OFS='\t' '$1 == "@SQ" { sub(/ .*/, "", $2) } { print }' > "$2"
  grep -v '^@' "$1" | awk -F'\t' '
    { n = 0; c = $6; q = 0
      while (match(c, /^[0-9]+[MIDNSHP=X]/)) { op = substr(c, RLENGTH, 1); len = substr(c, 1, RLENGTH - 1) + 0
        if (op ~ /[MIS=X]/) q += len; c = substr(c, RLENGTH + 1) }
      if ($6 == "*" || q == length($10)) print }' > "$3"
}
