#!/usr/bin/env bash
# Fashion-MNIST from Debian's package dataset-fashion-mnist (no download from the internet needed).
set -u
target=/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
[ -f "$target" ] && exit 0
if [ "$(id -u)" = 0 ]; then sudo=""; elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo="sudo -n"; else sudo=none; fi
if [ "$sudo" != none ] && command -v apt-get >/dev/null; then
    echo "installing Fashion-MNIST (Debian package dataset-fashion-mnist)..."
    $sudo apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 \
        || { $sudo apt-get update -q >/dev/null 2>&1 && $sudo apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1; }
fi
if [ ! -f "$target" ]; then
    echo "error: Fashion-MNIST is not installed and could not be installed here." >&2
    echo "       Run as root: apt-get install -y dataset-fashion-mnist (Debian/Ubuntu)," >&2
    echo "       or use genaug with another source (--data fashion-mnist downloads it via torchvision when online)." >&2
    exit 1
fi
