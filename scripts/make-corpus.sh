#!/usr/bin/env bash
# Builds the benchmark corpus from Debian packages (idempotent): scripts/make-corpus.sh [DIR]
#   DIR/text/  C sources and docs of the Linux kernel (linux-source-6.1's tarball, unpacked)
#   DIR/bin/   shared libraries from /usr/lib/x86_64-linux-gnu (binaries)
#   DIR/sam/   reads simulated with ART (art-nextgen-simulation-tools) from the lambda phage
#              genome shipped by bowtie2-examples: reads.fq (FASTQ) and reads.sam (SAM)
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-corpus}
need=()
[ -f /usr/src/linux-source-6.1.tar.xz ] || need+=(linux-source-6.1)
command -v art_illumina >/dev/null || need+=(art-nextgen-simulation-tools)
[ -f /usr/share/doc/bowtie2/examples/reference/lambda_virus.fa.gz ] || need+=(bowtie2-examples)
command -v xz >/dev/null || need+=(xz-utils)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  echo "corpus: installing ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
mkdir -p "$dir"
if [ ! -f "$dir/text/.done" ]; then
  echo "corpus: unpacking kernel sources (text)"
  rm -rf "$dir/text" && mkdir -p "$dir/text"
  tar -xJf /usr/src/linux-source-6.1.tar.xz -C "$dir/text" --strip-components=1 \
    linux-source-6.1/kernel linux-source-6.1/fs linux-source-6.1/mm linux-source-6.1/Documentation \
    linux-source-6.1/net/ipv4 linux-source-6.1/include
  touch "$dir/text/.done"
fi
if [ ! -f "$dir/bin/.done" ]; then
  echo "corpus: copying shared libraries (binaries)"
  rm -rf "$dir/bin" && mkdir -p "$dir/bin"
  # The largest regular .so files first, up to ~96 MiB: a stable, varied sample.
  find /usr/lib/x86_64-linux-gnu -maxdepth 1 -type f -name '*.so*' -printf '%s %p\n' | sort -k2 |
    awk '{ if (t + $1 <= 96*1024*1024) { t += $1; print $2 } }' | xargs -r cp -t "$dir/bin"
  touch "$dir/bin/.done"
fi
if [ ! -f "$dir/sam/.done" ]; then
  echo "corpus: simulating reads (SAM + FASTQ)"
  rm -rf "$dir/sam" && mkdir -p "$dir/sam"
  zcat /usr/share/doc/bowtie2/examples/reference/lambda_virus.fa.gz > "$dir/sam/lambda_virus.fa"
  # HiSeq 2500 profile, 150 bp reads, 600x coverage, fixed seed: ~100 MB each of SAM and FASTQ.
  art_illumina -ss HS25 -sam -i "$dir/sam/lambda_virus.fa" -l 150 -f 600 -rs 42 -o "$dir/sam/reads" >/dev/null
  rm -f "$dir/sam/reads.aln" "$dir/sam/lambda_virus.fa"
  touch "$dir/sam/.done"
fi
du -sh "$dir"/text "$dir"/bin "$dir"/sam
