#!/bin/bash
# Copies the Debian headers and libraries p2dpo builds against into .gpudeps/usr (ignored by git),
# keeping their /usr layout so their CMake package files stay relocatable. The GPU image has
# PyTorch, CUDA, CMake and a compiler but none of these -dev packages, and it cannot fetch them;
# the device tool carries this folder there (bench/gpu/README.md). Static libraries are taken where
# Debian ships them, so nothing has to be found at run time except libfmt.
set -euo pipefail
cd "$(dirname "$0")/../.."
dest=.gpudeps
rm -rf "$dest" && mkdir -p "$dest"
arch=/usr/lib/x86_64-linux-gnu
files=(
  /usr/include/nlohmann /usr/share/cmake/nlohmann_json /usr/share/pkgconfig/nlohmann_json.pc
  /usr/include/CLI /usr/share/cmake/CLI11
  /usr/include/fmt $arch/cmake/fmt $arch/libfmt.so $arch/libfmt.so.9 $arch/libfmt.so.9.1.0
  /usr/include/png.h /usr/include/pngconf.h /usr/include/pnglibconf.h /usr/include/libpng16 $arch/libpng16.a $arch/libpng.a
  /usr/include/jpeglib.h /usr/include/jerror.h /usr/include/jmorecfg.h /usr/include/x86_64-linux-gnu/jconfig.h $arch/libjpeg.a
  /usr/include/pcre2.h $arch/libpcre2-8.a
  /usr/include/zlib.h /usr/include/zconf.h $arch/libz.a
  /usr/include/gloo
  /usr/include/gtest /usr/include/gmock $arch/cmake/GTest $arch/libgtest.a $arch/libgtest_main.a $arch/libgmock.a $arch/libgmock_main.a
)
for f in "${files[@]}"; do
  [ -e "$f" ] || { echo "pack_deps: missing $f (run scripts/install-deps.sh)" >&2; exit 1; }
  mkdir -p "$dest$(dirname "$f")"
  cp -a "$f" "$dest$(dirname "$f")/"
done
# jpeglib.h includes "jconfig.h" from the multiarch folder; put it beside jpeglib.h too.
cp -a /usr/include/x86_64-linux-gnu/jconfig.h "$dest/usr/include/"
du -sh "$dest"
